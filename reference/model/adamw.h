/* AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", arXiv 1711.05101)
 * on fp32 (or fp64) master weights, with global-norm gradient clipping
 * (Pascanu et al., arXiv 1211.5063), as torch.optim.AdamW and Megatron-LM apply them.
 *
 *   norm  = sqrt(sum over every parameter element of g^2)       each tensor counted once
 *   (a non-finite norm skips the step: nothing changes, t included; Megatron skips an
 *   iteration whose gradients hold a NaN or Inf the same way)
 *   g    *= min(1, clip / (norm + 1e-6))                          when clip > 0
 *   t    += 1
 *   w    -= lr * wd * w                                           matrices only, not norms
 *   m     = b1 m + (1 - b1) g
 *   v     = b2 v + (1 - b2) g^2
 *   w    -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 */
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "reference/model/config.h"
#include "reference/model/params.h"

namespace pb::ref {

template <class T>
struct AdamState {
  ModelParams<T> m, v;  // first and second moments, shaped like the parameters
  int64_t t = 0;        // steps taken
};

template <class T>
AdamState<T> adam_init(const ModelConfig& c) {
  return AdamState<T>{zero_params<T>(c), zero_params<T>(c), 0};
}

// The global L2 norm of all gradients (accumulated in double).
template <class T>
double global_grad_norm(const ModelParams<T>& g) {
  double sq = 0;
  for_each_param(g, [&](const std::string&, const Mat<T>& m, bool) { sq += m.template cast<double>().squaredNorm(); });
  return std::sqrt(sq);
}

// One AdamW step. Returns the gradient norm before clipping. grads are left as they are
// (the clip coefficient is applied on the fly), so a caller can still read the raw gradient.
template <class T>
double adamw_step(ModelParams<T>& params, const ModelParams<T>& grads, AdamState<T>& st, const TrainConfig& tc) {
  const double norm = global_grad_norm(grads);
  if (!std::isfinite(norm)) return norm;  // a NaN or Inf gradient: the step is skipped (t too)
  const T clip = T(tc.clip_grad > 0 ? std::min(1.0, tc.clip_grad / (norm + 1e-6)) : 1.0);
  st.t += 1;
  const T lr = T(tc.lr), b1 = T(tc.beta1), b2 = T(tc.beta2), eps = T(tc.adam_eps), wd = T(tc.weight_decay);
  const T bc1 = T(1) - T(std::pow(tc.beta1, double(st.t)));
  const T bc2 = T(1) - T(std::pow(tc.beta2, double(st.t)));
  // Walk the four structures in lockstep: collect pointers in the common order first.
  std::vector<Mat<T>*> w, m, v;
  std::vector<const Mat<T>*> g;
  std::vector<bool> is_norm;
  for_each_param(params, [&](const std::string&, Mat<T>& x, bool vec) { w.push_back(&x); is_norm.push_back(vec); });
  for_each_param(grads, [&](const std::string&, const Mat<T>& x, bool) { g.push_back(&x); });
  for_each_param(st.m, [&](const std::string&, Mat<T>& x, bool) { m.push_back(&x); });
  for_each_param(st.v, [&](const std::string&, Mat<T>& x, bool) { v.push_back(&x); });
  for (size_t i = 0; i < w.size(); ++i) {
    auto W = w[i]->array();
    const auto Gr = clip * g[i]->array();
    auto M = m[i]->array();
    auto Vv = v[i]->array();
    if (!is_norm[i]) W -= lr * wd * W;
    M = b1 * M + (T(1) - b1) * Gr;
    Vv = b2 * Vv + (T(1) - b2) * Gr.square();
    W -= lr * (M / bc1) / ((Vv / bc2).sqrt() + eps);
  }
  return norm;
}

}  // namespace pb::ref
