/* CUDA SwiGLU (formulas in reference/ops/swiglu.h): element-wise, one pass. */
#include "optimized/kernels/cuda/common.cuh"
#include "optimized/kernels/cuda/cuda_kernels.h"
#include "reference/common/error.h"

namespace pb::cuda {

namespace {

__global__ void swiglu_fwd_kernel(float* y, const float* a, const float* u, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float s = 1.0f / (1.0f + expf(-a[i]));
    y[i] = a[i] * s * u[i];
  }
}

__global__ void swiglu_bwd_kernel(float* da, float* du, const float* dy, const float* a, const float* u, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float s = 1.0f / (1.0f + expf(-a[i]));
    da[i] = dy[i] * u[i] * s * (1.0f + a[i] * (1.0f - s));
    du[i] = dy[i] * a[i] * s;
  }
}

}  // namespace

void swiglu_forward(Tensor& y, const Tensor& gate, const Tensor& up) {
  PB_REQUIRE(gate.numel() == up.numel() && y.numel() == gate.numel(), "swiglu_forward: ", gate.shape_str());
  if (!y.numel()) return;
  swiglu_fwd_kernel<<<blocks_for(y.numel()), kThreads>>>(y.f32(), gate.f32(), up.f32(), y.numel());
  CUDA_CHECK_LAUNCH();
}

void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dy, const Tensor& gate, const Tensor& up) {
  if (!dy.numel()) return;
  swiglu_bwd_kernel<<<blocks_for(dy.numel()), kThreads>>>(dgate.f32(), dup.f32(), dy.f32(), gate.f32(), up.f32(),
                                                          dy.numel());
  CUDA_CHECK_LAUNCH();
}

}  // namespace pb::cuda
