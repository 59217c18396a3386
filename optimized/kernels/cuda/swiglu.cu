/* CUDA SwiGLU (Shazeer, "GLU Variants Improve Transformer", arXiv 2002.05202; formulas in
 * reference/ops/swiglu.h): element-wise, one pass. gate, up, y, dy, dgate, dup are fp32
 * or bf16 (one dtype per call; bf16 read as fp32, the math in fp32, outputs rounded to
 * bf16). */
#include "optimized/kernels/cuda/common.cuh"
#include "optimized/kernels/cuda/cuda_kernels.h"
#include "reference/common/error.h"

namespace pb::cuda {

namespace {

template <class T>
__global__ void swiglu_fwd_kernel(T* y, const T* gate, const T* up, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float a = to_float(gate[i]), u = to_float(up[i]);
    const float s = 1.0f / (1.0f + expf(-a));
    y[i] = from_float<T>(a * s * u);
  }
}

template <class T>
__global__ void swiglu_bwd_kernel(T* dgate, T* dup, const T* dy, const T* gate, const T* up, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float a = to_float(gate[i]), u = to_float(up[i]), g = to_float(dy[i]);
    const float s = 1.0f / (1.0f + expf(-a));
    dgate[i] = from_float<T>(g * u * s * (1.0f + a * (1.0f - s)));
    dup[i] = from_float<T>(g * a * s);
  }
}

template <class T>
void forward_t(Tensor& y, const Tensor& gate, const Tensor& up, cudaStream_t s) {
  swiglu_fwd_kernel<T><<<blocks_for(y.numel()), kThreads, 0, s>>>(ptr<T>(y), ptr<T>(gate), ptr<T>(up), y.numel());
  CUDA_CHECK_LAUNCH();
}

template <class T>
void backward_t(Tensor& dgate, Tensor& dup, const Tensor& dy, const Tensor& gate, const Tensor& up, cudaStream_t s) {
  swiglu_bwd_kernel<T><<<blocks_for(dy.numel()), kThreads, 0, s>>>(ptr<T>(dgate), ptr<T>(dup), ptr<T>(dy), ptr<T>(gate),
                                                             ptr<T>(up), dy.numel());
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void swiglu_forward(Tensor& y, const Tensor& gate, const Tensor& up, const Stream& stream) {
  PB_REQUIRE(gate.numel() == up.numel() && y.numel() == gate.numel(), "swiglu_forward: ", gate.shape_str());
  if (!y.numel()) return;
  if (gate.dtype() == DType::BF16)
    forward_t<bf16>(y, gate, up, cu(stream));
  else
    forward_t<float>(y, gate, up, cu(stream));
}

void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dy, const Tensor& gate, const Tensor& up, const Stream& stream) {
  PB_REQUIRE(gate.numel() == up.numel() && dy.numel() == gate.numel() && dgate.numel() == gate.numel() &&
                 dup.numel() == gate.numel(),
             "swiglu_backward: ", gate.shape_str());
  if (!dy.numel()) return;
  if (gate.dtype() == DType::BF16)
    backward_t<bf16>(dgate, dup, dy, gate, up, cu(stream));
  else
    backward_t<float>(dgate, dup, dy, gate, up, cu(stream));
}

}  // namespace pb::cuda
