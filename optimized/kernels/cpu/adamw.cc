/* CPU AdamW over one tensor (formula in reference/model/adamw.h): decoupled weight decay,
 * bias-corrected moments, the clip coefficient applied to the gradient on the fly. */
#include "optimized/kernels/cpu/cpu_kernels.h"

namespace pb::cpu {

void adamw(Tensor& w, const Tensor& g, Tensor& m, Tensor& v, const ops::AdamHyper& h, const Stream&) {
  auto W = as_row(w).array();
  auto M = as_row(m).array();
  auto Vv = as_row(v).array();
  const auto G = h.grad_scale * as_row(g).array();
  if (h.weight_decay != 0.0f) W -= h.lr * h.weight_decay * W;
  M = h.beta1 * M + (1.0f - h.beta1) * G;
  Vv = h.beta2 * Vv + (1.0f - h.beta2) * G.square();
  W -= h.lr * (M / h.bias_corr1) / ((Vv / h.bias_corr2).sqrt() + h.eps);
}

}  // namespace pb::cpu
