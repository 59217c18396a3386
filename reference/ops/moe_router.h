/* Top-K softmax router with the switch load-balancing auxiliary loss.
 *
 * Shazeer et al., "Outrageously Large Neural Networks" (arXiv 1701.06538); Fedus et al.,
 * "Switch Transformers" (arXiv 2101.03961); Mixtral (arXiv 2401.04088).
 *
 *   logits = x Wr^T                  x (N, H), Wr (E, H), logits (N, E)
 *   p      = softmax(logits)         (N, E), fp of the scalar type
 *   idx    = top-K of p per row      (N, K), ties to the lower expert id
 *   w_tk   = p_t,idx_tk              (N, K); with renormalization w_tk /= sum_k p_t,idx_tk
 *   aux    = coef * E * sum_e f_e P_e,  f_e = count_e / (N K),  P_e = (1/N) sum_t p_te
 *            (count_e = tokens whose top-K holds e; f is a constant, only P carries the
 *             gradient: d aux / d p_te = coef * E * f_e / N.) This is Megatron-LM's
 *             switch_load_balancing_loss_func per layer; Hugging Face's Mixtral instead
 *             averages f and P over all layers at once and does not divide by K.
 * backward, from dw (N, K) and the aux coefficient:
 *   renormalized: dp_t,idx_tk += (dw_tk - sum_j dw_tj w_tj) / sum_j p_t,idx_tj
 *   otherwise   : dp_t,idx_tk += dw_tk
 *   dp_te += coef * E * f_e / N;   dlogits_t = p_t * (dp_t - p_t . dp_t)
 */
#pragma once

#include <algorithm>
#include <numeric>
#include <vector>

#include "reference/common/tensor.h"

namespace pb::ref {

template <class T>
struct RouterOut {
  Mat<T> probs;                  // (N, E) softmax of the router logits
  std::vector<int> idx;          // (N*K) selected experts, best first
  Mat<T> weights;                // (N, K) combine weights
  std::vector<int64_t> count;    // (E) tokens routed to each expert
  T aux = 0;                     // load-balancing loss, coefficient included
};

template <class T>
void router_forward(RouterOut<T>& r, const Mat<T>& logits, int K, bool renormalize, T aux_coef) {
  const Index n = logits.rows(), E = logits.cols();
  r.probs.resize(n, E);
  r.idx.assign(size_t(n * K), 0);
  r.weights.resize(n, K);
  r.count.assign(size_t(E), 0);
  std::vector<int> order(static_cast<size_t>(E));
  for (Index t = 0; t < n; ++t) {
    const T m = logits.row(t).maxCoeff();
    r.probs.row(t) = (logits.row(t).array() - m).exp().matrix();
    r.probs.row(t) /= r.probs.row(t).sum();
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return r.probs(t, x) > r.probs(t, y); });
    T sel = 0;
    for (int k = 0; k < K; ++k) {
      r.idx[size_t(t * K + k)] = order[size_t(k)];
      r.weights(t, k) = r.probs(t, order[size_t(k)]);
      sel += r.weights(t, k);
      ++r.count[size_t(order[size_t(k)])];
    }
    if (renormalize) r.weights.row(t) /= sel;
  }
  r.aux = 0;
  if (aux_coef != T(0))
    for (Index e = 0; e < E; ++e) {
      const T f = T(r.count[size_t(e)]) / T(n * K);
      const T P = r.probs.col(e).sum() / T(n);
      r.aux += aux_coef * T(E) * f * P;
    }
}

// dlogits (N, E) is overwritten. daux is the gradient flowing into the aux loss (1 when it is
// added to the training loss).
template <class T>
void router_backward(Mat<T>& dlogits, const Mat<T>& dweights, T daux, const RouterOut<T>& r, int K,
                     bool renormalize, T aux_coef) {
  const Index n = r.probs.rows(), E = r.probs.cols();
  Mat<T> dp = Mat<T>::Zero(n, E);  // (N, E) gradient w.r.t. the probabilities
  for (Index t = 0; t < n; ++t) {
    T sel = 0, dot = 0;
    for (int k = 0; k < K; ++k) {
      sel += r.probs(t, r.idx[size_t(t * K + k)]);
      dot += dweights(t, k) * r.weights(t, k);
    }
    for (int k = 0; k < K; ++k) {
      const int e = r.idx[size_t(t * K + k)];
      dp(t, e) += renormalize ? (dweights(t, k) - dot) / sel : dweights(t, k);
    }
  }
  if (aux_coef != T(0))
    for (Index e = 0; e < E; ++e)
      dp.col(e).array() += daux * aux_coef * T(E) * (T(r.count[size_t(e)]) / T(n * K)) / T(n);
  dlogits.resize(n, E);
  for (Index t = 0; t < n; ++t) {
    const T pdp = r.probs.row(t).dot(dp.row(t));
    dlogits.row(t) = r.probs.row(t).cwiseProduct((dp.row(t).array() - pdp).matrix());
  }
}

}  // namespace pb::ref
