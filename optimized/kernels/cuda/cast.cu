/* CUDA fp32 <-> bf16 conversion, round to nearest even (__float2bfloat16_rn). Both tensors on
 * the GPU (the dispatch routes a same-dtype copy between devices through ops::transfer and
 * refuses a conversion across devices, checks::copy_route). */
#include <cuda_bf16.h>

#include "optimized/kernels/cuda/common.cuh"
#include "optimized/kernels/cuda/cuda_kernels.h"
#include "optimized/kernels/shape_checks.h"
#include "reference/common/error.h"

namespace pb::cuda {

namespace {

__global__ void to_bf16_kernel(__nv_bfloat16* y, const float* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = __float2bfloat16_rn(x[i]);
}

__global__ void to_f32_kernel(float* y, const __nv_bfloat16* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = __bfloat162float(x[i]);
}

}  // namespace

void cast(Tensor& dst, const Tensor& src, const Stream& stream) {
  PB_REQUIRE(dst.numel() == src.numel(), "cast: ", src.shape_str(), " into ", dst.shape_str());
  if (src.dtype() == dst.dtype()) return copy(dst, src, stream);  // (a cudaMemcpy, either device)
  checks::same_device("cast (cuda)", Device::CUDA, {&dst, &src});
  const int64_t n = src.numel();
  if (!n) return;
  const cudaStream_t s = cu(stream);
  if (src.dtype() == DType::F32)
    to_bf16_kernel<<<blocks_for(n), kThreads, 0, s>>>(static_cast<__nv_bfloat16*>(dst.raw()), src.f32(), n);
  else
    to_f32_kernel<<<blocks_for(n), kThreads, 0, s>>>(dst.f32(), static_cast<const __nv_bfloat16*>(src.raw()), n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace pb::cuda
