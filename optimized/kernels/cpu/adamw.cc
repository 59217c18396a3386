/* CPU AdamW over one tensor (Loshchilov & Hutter, arXiv 1711.05101; formula in
 * reference/model/adamw.h): decoupled weight decay, bias-corrected moments, the clip
 * coefficient applied to the gradient on the fly. One pass over w, g, m, v (7 floats of
 * traffic per weight), in fixed blocks on the kernel threads.
 *   w, g, m, v (n) */
// Exact square roots in Eigen's packets too (its fast-math float sqrt is an approximation
// that the scalar elements peeled off before an aligned packet do not use): the step's
// result then does not depend on where a buffer starts (a sharded or offloaded master is
// stepped bitwise as the plain one). Before any Eigen include.
#define EIGEN_FAST_MATH 0
#include <cmath>
#include <cstring>
#include <vector>

#include "optimized/kernels/cpu/cpu_kernels.h"
#include "optimized/kernels/cpu/parallel.h"
#include "reference/common/error.h"

namespace pb::cpu {

namespace {

constexpr int64_t kGrain = 32768;  // elements per block

// One AdamW update of n weights in place, one pass: per element, the expression
//   g' = gs g;  w -= (lr wd) w;  m = b1 m + (1 - b1) g';  v = b2 v + (1 - b2) g'^2
//   w -= lr (m / c1) / (sqrt(v / c2) + eps)
// in exactly this operation order (the file is compiled without FMA contraction), so the
// result is bitwise the former Eigen array expression's, and the same in any block.
template <bool Decay>
void update_range(float* __restrict w, const float* __restrict g, float* __restrict m, float* __restrict v, int64_t n,
                  const ops::AdamHyper& h) {
  // The hyper-parameters in locals: stores through w, m, v cannot change them, so the loop
  // vectorizes without reloading them.
  const float gs = h.grad_scale, lr = h.lr, lrwd = h.lr * h.weight_decay, b1 = h.beta1, b2 = h.beta2;
  const float one_b1 = 1.0f - h.beta1, one_b2 = 1.0f - h.beta2, c1 = h.bias_corr1, c2 = h.bias_corr2, eps = h.eps;
  for (int64_t i = 0; i < n; ++i) {
    const float gi = gs * g[i];
    float wi = w[i];
    if constexpr (Decay) wi -= lrwd * wi;
    const float mi = b1 * m[i] + one_b1 * gi;
    const float vi = b2 * v[i] + one_b2 * (gi * gi);
    m[i] = mi;
    v[i] = vi;
    w[i] = wi - lr * (mi / c1) / (std::sqrt(vi / c2) + eps);
  }
}

void update(float* w, const Tensor& g, Tensor& m, Tensor& v, const ops::AdamHyper& h) {
  const int64_t n = g.numel();
  PB_REQUIRE(m.numel() == n && v.numel() == n, "adamw: ", n, " gradients, moments ", m.shape_str(), " and ",
             v.shape_str());
  parallel_blocks(n, kGrain, [&](int64_t b, int64_t e) {
    if (h.weight_decay != 0.0f)
      update_range<true>(w + b, g.f32() + b, m.f32() + b, v.f32() + b, e - b, h);
    else
      update_range<false>(w + b, g.f32() + b, m.f32() + b, v.f32() + b, e - b, h);
  });
}

}  // namespace

void adamw(Tensor& w, const Tensor& g, Tensor& m, Tensor& v, const ops::AdamHyper& h, const Stream&) {
  PB_REQUIRE(w.numel() == g.numel(), "adamw: weights ", w.shape_str(), ", gradients ", g.shape_str());
  update(w.f32(), g, m, v, h);
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
  update(w.data(), g, m, v, h);
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, &w[size_t(i)], 4);
    u += 0x8000u;
    H[i] = uint16_t(u >> 16);
    L[i] = uint16_t(u & 0xffffu);
  }
}

}  // namespace pb::cpu
