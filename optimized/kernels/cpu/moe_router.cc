/* CPU MoE router (top-K softmax gating; Shazeer et al., arXiv 1701.06538; Fedus et al.,
 * "Switch Transformers", arXiv 2101.03961; as Megatron-LM's MoE TopKRouter), fp32:
 *
 *   forward   probs (T, E) = softmax(logits (T, E))   (the row max subtracted)
 *             idx (T*K)    = the top-K experts of each row, best first, ties to the lower id
 *             w (T, K)     = probs at idx, divided by their sum when renormalizing
 *             prob_sums (E) = sum_t probs_te, in double, rows in ascending order
 *   backward  dp_t,idx_tk = (dw_tk - sum_j dw_tj w_tj) / sum_j p_t,idx_tj   (renormalized)
 *                         = dw_tk                                           (otherwise)
 *             dp_te += aux_grad_e   (the load-balancing loss: d aux / d p_te, a constant per
 *                                    expert; the reference's daux * coef * E * f_e / N)
 *             dlogits_t = p_t * (dp_t - p_t . dp_t)
 *
 * The math is the reference's (reference/ops/moe_router.h), which the CPU backend may reuse
 * (DESIGN.md): the forward calls ref::router_forward; the backward repeats ref::router_backward's
 * expressions on the reference's matrix type (so that its Eigen reductions run in the same
 * order), with the per-expert aux constant passed in instead of derived from the counts. Both
 * are bit-for-bit the reference's results for the same fp32 inputs. */
#include "optimized/kernels/cpu/cpu_kernels.h"
#include "reference/common/error.h"
#include "reference/ops/moe_router.h"

namespace pb::cpu {

void moe_router_forward(Tensor& probs, Tensor& weights, std::vector<int64_t>& idx, std::vector<double>& prob_sums,
                        const Tensor& logits, int64_t K, bool renormalize, const Stream&) {
  const int64_t T = logits.rows(), E = logits.dim(1);  // (T, E), 2-D (checked by the dispatch)
  prob_sums.assign(size_t(E), 0.0);                    // (E), rows in ascending order
  idx.clear();
  if (!T) return;
  ref::RouterOut<float> r;
  ref::router_forward(r, to_ref(logits), int(K), renormalize, 0.0f);  // aux_coef 0: no loss, counts only
  from_ref(probs, r.probs);    // (T, E)
  from_ref(weights, r.weights);  // (T, K)
  idx.assign(r.idx.begin(), r.idx.end());  // (T*K)
  for (int64_t t = 0; t < T; ++t)
    for (int64_t e = 0; e < E; ++e) prob_sums[size_t(e)] += double(r.probs(t, e));
}

void moe_router_backward(Tensor& dlogits, const Tensor& dweights, const Tensor& probs, const Tensor& weights,
                         const IndexTensor& idx, const std::vector<double>& aux_grad, int64_t K, bool renormalize,
                         const Stream&) {
  const int64_t T = probs.rows(), E = probs.cols();
  if (!T) return;
  const ref::Mat<float> p = to_ref(probs);     // (T, E)
  const ref::Mat<float> w = to_ref(weights);   // (T, K)
  const ref::Mat<float> dw = to_ref(dweights);  // (T, K)
  const std::vector<int64_t>& ix = idx.host();  // (T*K)
  ref::Mat<float> dp = ref::Mat<float>::Zero(T, E);  // (T, E) gradient w.r.t. the probabilities
  for (int64_t t = 0; t < T; ++t) {
    float sel = 0, dot = 0;
    for (int64_t k = 0; k < K; ++k) {
      sel += p(t, ix[size_t(t * K + k)]);
      dot += dw(t, k) * w(t, k);
    }
    for (int64_t k = 0; k < K; ++k)
      dp(t, ix[size_t(t * K + k)]) += renormalize ? (dw(t, k) - dot) / sel : dw(t, k);
  }
  bool aux = false;
  for (double a : aux_grad) aux = aux || a != 0.0;
  if (aux)  // as the reference, which skips the term when the loss is off
    for (int64_t e = 0; e < E; ++e) dp.col(e).array() += float(aux_grad[size_t(e)]);
  ref::Mat<float> dl(T, E);  // (T, E)
  for (int64_t t = 0; t < T; ++t) {
    const float pdp = p.row(t).dot(dp.row(t));
    dl.row(t) = p.row(t).cwiseProduct((dp.row(t).array() - pdp).matrix());
  }
  from_ref(dlogits, dl);
}

}  // namespace pb::cpu
