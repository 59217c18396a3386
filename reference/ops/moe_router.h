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
 *
 * Expert capacity with token dropping (apply_capacity; Fedus et al., Switch Transformers,
 * arXiv 2101.03961, section 2.2; Megatron-LM moe_utils get_capacity and
 * topk_softmax_with_capacity with drop_policy "probs"): the N rows are split into routing
 * groups (the tokens one rank routes: Megatron drops locally). For a group g of n_g rows
 *   cap_g = ceil(n_g * K / E * cf)          in double, then std::ceil
 * and for each expert e, of the copies (t, k) with t in g and idx_tk = e, the cap_g of
 * largest w_tk are kept (ties: lower t, then lower k); the others are dropped: they add
 * nothing to the output and their dw_tk is 0. The weights are not renormalized after the
 * drop (a kept copy keeps its w_tk), and count_e, hence the aux loss, is the count before
 * the drop, as in Megatron. The backward above needs no change: with dw_tk = 0 for a
 * dropped copy, its p still receives -(sum_j dw_tj w_tj) / sum_j p_t,idx_tj through the
 * renormalization, which it did take part in.
 */
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <numeric>
#include <vector>

#include "reference/common/error.h"
#include "reference/common/tensor.h"

namespace pb::ref {

template <class T>
struct RouterOut {
  Mat<T> probs;                  // (N, E) softmax of the router logits
  std::vector<int> idx;          // (N*K) selected experts, best first
  Mat<T> weights;                // (N, K) combine weights
  std::vector<int64_t> count;    // (E) tokens routed to each expert (before any capacity drop)
  T aux = 0;                     // load-balancing loss, coefficient included
  std::vector<char> kept;        // (N*K) 1: copy (t, k) goes to its expert; 0: dropped by capacity
  std::vector<int64_t> dropped_count;  // (E) copies routed to each expert but dropped
};

template <class T>
void router_forward(RouterOut<T>& r, const Mat<T>& logits, int K, bool renormalize, T aux_coef) {
  const Index n = logits.rows(), E = logits.cols();
  r.probs.resize(n, E);
  r.idx.assign(size_t(n * K), 0);
  r.weights.resize(n, K);
  r.count.assign(size_t(E), 0);
  r.kept.assign(size_t(n * K), 1);  // dropless until apply_capacity
  r.dropped_count.assign(size_t(E), 0);
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

// Megatron-LM's get_capacity: ceil(num_tokens * topk / num_experts * capacity_factor), the
// most copies one expert takes from a routing group of n rows.
inline int64_t expert_capacity(int64_t n, int K, int64_t E, double capacity_factor) {
  return int64_t(std::ceil(double(n * K) / double(E) * capacity_factor));
}

// Drops, after router_forward, the copies beyond each expert's capacity in each routing
// group (see the top of this file): fills r.kept (N*K) and r.dropped_count (E); idx,
// weights, count and aux are left as they are. groups (N): routing group id of each row,
// empty: one group of all N rows.
template <class T>
void apply_capacity(RouterOut<T>& r, const std::vector<int64_t>& groups, double capacity_factor, int64_t E, int K) {
  const Index n = r.weights.rows();
  PB_REQUIRE(groups.empty() || Index(groups.size()) == n, "apply_capacity: ", groups.size(), " group ids for ", n,
             " token rows");
  PB_REQUIRE(r.weights.cols() == K && Index(r.idx.size()) == n * K && r.probs.cols() == E,
             "apply_capacity: router output does not have K = ", K, ", E = ", E);
  r.kept.assign(size_t(n * K), 1);
  r.dropped_count.assign(size_t(E), 0);
  std::map<int64_t, std::vector<Index>> rows_of;  // group id -> its rows, ascending
  for (Index t = 0; t < n; ++t) rows_of[groups.empty() ? 0 : groups[size_t(t)]].push_back(t);
  for (const auto& [group, rows] : rows_of) {  // each group on its own, as on its own rank
    const int64_t cap = expert_capacity(int64_t(rows.size()), K, E, capacity_factor);
    std::vector<std::vector<Index>> slots(static_cast<size_t>(E));  // per expert: its slots t*K + k, (t, k) ascending
    for (Index t : rows)
      for (int k = 0; k < K; ++k) slots[size_t(r.idx[size_t(t * K + k)])].push_back(t * K + k);
    for (int64_t e = 0; e < E; ++e) {
      auto& s = slots[size_t(e)];
      if (int64_t(s.size()) <= cap) continue;
      // Largest weight first; stable, so equal weights keep the (t, k) order: ties to the lower row.
      std::stable_sort(s.begin(), s.end(),
                       [&](Index a, Index b) { return r.weights(a / K, a % K) > r.weights(b / K, b % K); });
      for (size_t i = size_t(cap); i < s.size(); ++i) r.kept[size_t(s[i])] = 0;
      r.dropped_count[size_t(e)] += int64_t(s.size()) - cap;
    }
  }
}

// dlogits (N, E) is overwritten. daux is the gradient flowing into the aux loss (1 when it is
// added to the training loss). Dropped copies need nothing here: their dweights are 0.
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
