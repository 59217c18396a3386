/* CUDA AdamW on one tensor (formula in reference/model/adamw.h), element-wise. */
#include "optimized/kernels/cuda/common.cuh"
#include "optimized/kernels/cuda/cuda_kernels.h"
#include "optimized/kernels/shape_checks.h"

namespace pb::cuda {

namespace {

__global__ void adamw_kernel(float* w, const float* g, float* m, float* v, ops::AdamHyper h, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float gi = h.grad_scale * g[i];
    float wi = w[i];
    if (h.weight_decay != 0.0f) wi -= h.lr * h.weight_decay * wi;
    const float mi = h.beta1 * m[i] + (1.0f - h.beta1) * gi;
    const float vi = h.beta2 * v[i] + (1.0f - h.beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    w[i] = wi - h.lr * (mi / h.bias_corr1) / (sqrtf(vi / h.bias_corr2) + h.eps);
  }
}

// The same update on weights kept as a bf16 half and a 16-bit residual (reuse-fp32-param).
__global__ void adamw_reuse_kernel(uint16_t* hi, uint16_t* lo, const float* g, float* m, float* v, ops::AdamHyper h,
                                   int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const uint32_t bits = ((uint32_t(hi[i]) << 16) | uint32_t(lo[i])) - 0x8000u;
    const float gi = h.grad_scale * g[i];
    float wi = __uint_as_float(bits);
    if (h.weight_decay != 0.0f) wi -= h.lr * h.weight_decay * wi;
    const float mi = h.beta1 * m[i] + (1.0f - h.beta1) * gi;
    const float vi = h.beta2 * v[i] + (1.0f - h.beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const uint32_t u = __float_as_uint(wi - h.lr * (mi / h.bias_corr1) / (sqrtf(vi / h.bias_corr2) + h.eps)) + 0x8000u;
    hi[i] = uint16_t(u >> 16);
    lo[i] = uint16_t(u & 0xffffu);
  }
}

}  // namespace

void adamw_reuse(Tensor& hi, Tensor& lo, const Tensor& g, Tensor& m, Tensor& v, const ops::AdamHyper& h,
                 const Stream& stream) {
  checks::adamw_operands("adamw_reuse (cuda)", hi, g, m, v);
  PB_REQUIRE(lo.numel() == hi.numel(), "adamw_reuse (cuda): hi ", hi.shape_str(), ", lo ", lo.shape_str());
  if (!hi.numel()) return;
  adamw_reuse_kernel<<<blocks_for(hi.numel()), kThreads, 0, cu(stream)>>>(hi.bf16_bits(), lo.bf16_bits(), g.f32(),
                                                                            m.f32(), v.f32(), h, hi.numel());
  CUDA_CHECK_LAUNCH();
}

void adamw(Tensor& w, const Tensor& g, Tensor& m, Tensor& v, const ops::AdamHyper& h, const Stream& stream) {
  checks::adamw_operands("adamw (cuda)", w, g, m, v);
  if (!w.numel()) return;
  adamw_kernel<<<blocks_for(w.numel()), kThreads, 0, cu(stream)>>>(w.f32(), g.f32(), m.f32(), v.f32(), h, w.numel());
  CUDA_CHECK_LAUNCH();
}

}  // namespace pb::cuda
