/* CUDA AdamW on one tensor (formula in reference/model/adamw.h), element-wise. */
#include "optimized/kernels/cuda/common.cuh"
#include "optimized/kernels/cuda/cuda_kernels.h"

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

}  // namespace

void adamw(Tensor& w, const Tensor& g, Tensor& m, Tensor& v, const ops::AdamHyper& h, const Stream& stream) {
  if (!w.numel()) return;
  adamw_kernel<<<blocks_for(w.numel()), kThreads, 0, cu(stream)>>>(w.f32(), g.f32(), m.f32(), v.f32(), h, w.numel());
  CUDA_CHECK_LAUNCH();
}

}  // namespace pb::cuda
