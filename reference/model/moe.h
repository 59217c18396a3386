/* Mixture-of-experts block: top-K router and E SwiGLU experts (Mixtral's
 * block_sparse_moe; Jiang et al., arXiv 2401.04088).
 *
 *   logits = x Wr^T (N, E);  (p, idx, w, aux) = router(logits)       see ops/moe_router.h
 *   y_t    = sum_k w_tk * Expert_{idx_tk}(x_t),   Expert_e = mlp with (w1, w3, w2)
 * backward:
 *   for each (t, k) routed to e:  dy_e[row] = w_tk dy_t   ->  expert backward gives dx_e
 *   dx_t  += dx_e[row];   dw_tk = dy_t . Expert_e(x_t)
 *   dlogits from router_backward(dw, daux);  dx += dlogits Wr,  dWr += dlogits^T x
 * This is the single-device oracle sum_k p_k Expert_k(x) that expert parallelism must
 * reproduce (FEATURES.md, EP).
 *
 * With a capacity factor cf (ModelConfig::moe_expert_capacity_factor) the router's copies
 * beyond each expert's capacity in each routing group are dropped (apply_capacity in
 * ops/moe_router.h): the sums above run over the kept copies only, so a dropped copy adds
 * nothing to y_t, its expert never sees x_t, and its dw_tk is 0.
 */
#pragma once

#include <optional>
#include <vector>

#include "reference/model/mlp.h"
#include "reference/model/params.h"
#include "reference/ops/moe_router.h"

namespace pb::ref {

template <class T>
struct MoeCache {
  Mat<T> x, logits;                       // (N, H), (N, E)
  RouterOut<T> r;
  std::vector<std::vector<Index>> rows;   // per expert: the kept (t*K + k) slots it serves
  std::vector<MlpCache<T>> expert;        // per expert: its MLP cache over its tokens
  std::vector<Mat<T>> out;                // per expert: Expert_e(x) of its tokens (n_e, H)
};

// capacity_factor: absent for dropless routing; groups (N): routing group of each row,
// empty: one group (used only with a capacity factor).
template <class T>
void moe_forward(Mat<T>& y, MoeCache<T>& c, const Mat<T>& x, const LayerParams<T>& p, int K, bool renormalize,
                 T aux_coef, std::optional<double> capacity_factor = std::nullopt,
                 const std::vector<int64_t>& groups = {}) {
  const Index N = x.rows(), E = p.router.rows();
  c.x = x;
  linear_forward(c.logits, x, p.router);
  router_forward(c.r, c.logits, K, renormalize, aux_coef);
  if (capacity_factor) apply_capacity(c.r, groups, *capacity_factor, int64_t(E), K);
  c.rows.assign(size_t(E), {});
  for (Index slot = 0; slot < N * K; ++slot)
    if (c.r.kept[size_t(slot)]) c.rows[size_t(c.r.idx[size_t(slot)])].push_back(slot);
  c.expert.resize(size_t(E));
  c.out.resize(size_t(E));
  y = Mat<T>::Zero(N, x.cols());  // (N, H)
  for (Index e = 0; e < E; ++e) {
    const auto& rows = c.rows[size_t(e)];
    Mat<T> xe(Index(rows.size()), x.cols());  // (n_e, H) tokens of expert e
    for (size_t i = 0; i < rows.size(); ++i) xe.row(Index(i)) = x.row(rows[i] / K);
    const auto& ex = p.experts[size_t(e)];
    mlp_forward(c.out[size_t(e)], c.expert[size_t(e)], xe, ex.w1, ex.w3, ex.w2);
    for (size_t i = 0; i < rows.size(); ++i)
      y.row(rows[i] / K) += c.r.weights(rows[i] / K, rows[i] % K) * c.out[size_t(e)].row(Index(i));
  }
}

// dx overwritten; parameter grads in g accumulate. daux: gradient into the aux loss.
template <class T>
void moe_backward(Mat<T>& dx, LayerParams<T>& g, const Mat<T>& dy, T daux, const MoeCache<T>& c,
                  const LayerParams<T>& p, int K, bool renormalize, T aux_coef) {
  const Index N = c.x.rows(), E = p.router.rows();
  dx = Mat<T>::Zero(N, c.x.cols());  // (N, H)
  Mat<T> dw = Mat<T>::Zero(N, K);    // (N, K) gradient of the combine weights; stays 0 where dropped
  for (Index e = 0; e < E; ++e) {
    const auto& rows = c.rows[size_t(e)];
    Mat<T> dye(Index(rows.size()), c.x.cols());  // (n_e, H)
    for (size_t i = 0; i < rows.size(); ++i) {
      const Index t = rows[i] / K, k = rows[i] % K;
      dye.row(Index(i)) = c.r.weights(t, k) * dy.row(t);
      dw(t, k) = dy.row(t).dot(c.out[size_t(e)].row(Index(i)));
    }
    Mat<T> dxe;
    const auto& ex = p.experts[size_t(e)];
    auto& gx = g.experts[size_t(e)];
    mlp_backward(dxe, gx.w1, gx.w3, gx.w2, dye, c.expert[size_t(e)], ex.w1, ex.w3, ex.w2);
    for (size_t i = 0; i < rows.size(); ++i) dx.row(rows[i] / K) += dxe.row(Index(i));
  }
  Mat<T> dlogits, dx_router;
  router_backward(dlogits, dw, daux, c.r, K, renormalize, aux_coef);
  linear_backward(dx_router, g.router, dlogits, c.x, p.router);
  dx += dx_router;
}

}  // namespace pb::ref
