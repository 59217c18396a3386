/* CPU AdamW over one tensor (formula in reference/model/adamw.h): decoupled weight decay,
 * bias-corrected moments, the clip coefficient applied to the gradient on the fly. */
// Exact square roots in Eigen's packets too (its fast-math float sqrt is an approximation
// that the scalar elements peeled off before an aligned packet do not use): the step's
// result then does not depend on where a buffer starts (a sharded or offloaded master is
// stepped bitwise as the plain one). Before any Eigen include.
#define EIGEN_FAST_MATH 0
#include <cstring>
#include <vector>

#include "optimized/kernels/cpu/cpu_kernels.h"

namespace pb::cpu {

namespace {
// One AdamW update of the weights W (1, n) in place.
void update(MatMap w, const Tensor& g, Tensor& m, Tensor& v, const ops::AdamHyper& h) {
  auto W = w.array();
  auto M = as_row(m).array();
  auto Vv = as_row(v).array();
  const auto G = h.grad_scale * as_row(g).array();
  if (h.weight_decay != 0.0f) W -= h.lr * h.weight_decay * W;
  M = h.beta1 * M + (1.0f - h.beta1) * G;
  Vv = h.beta2 * Vv + (1.0f - h.beta2) * G.square();
  W -= h.lr * (M / h.bias_corr1) / ((Vv / h.bias_corr2).sqrt() + h.eps);
}
}  // namespace

void adamw(Tensor& w, const Tensor& g, Tensor& m, Tensor& v, const ops::AdamHyper& h, const Stream&) {
  update(as_row(w), g, m, v, h);
}

// The fp32 weights rebuilt from their halves (bits = (hi << 16 | lo) - 0x8000), the same
// AdamW as above on them, and split again (u = bits + 0x8000: hi = u >> 16, lo = u & 0xffff).
void adamw_reuse(Tensor& hi, Tensor& lo, const Tensor& g, Tensor& m, Tensor& v, const ops::AdamHyper& h,
                 const Stream&) {
  const int64_t n = hi.numel();
  uint16_t* H = hi.bf16_bits();
  uint16_t* L = lo.bf16_bits();
  std::vector<float> w(static_cast<size_t>(n));  // the kernel's own copy (not a tracked buffer)
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t bits = ((uint32_t(H[i]) << 16) | uint32_t(L[i])) - 0x8000u;
    std::memcpy(&w[size_t(i)], &bits, 4);
  }
  update(MatMap(w.data(), 1, n), g, m, v, h);
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, &w[size_t(i)], 4);
    u += 0x8000u;
    H[i] = uint16_t(u >> 16);
    L[i] = uint16_t(u & 0xffffu);
  }
}

}  // namespace pb::cpu
