/* CUDA reuse-fp32-param conversions (formulas in kernels/cpu/reuse_fp32_param.cc): the
 * buffer is copied to a device workspace, then one thread per element writes its two
 * 16-bit halves ([residuals | bf16]) or reassembles the fp32 bits. */
#include "optimized/kernels/cuda/common.cuh"
#include "optimized/kernels/cuda/cuda_kernels.h"
#include "reference/common/error.h"

namespace pb::cuda {

namespace {

__global__ void split_kernel(uint16_t* half, const uint32_t* bits, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const uint32_t u = bits[i] + 0x8000u;
    half[i] = uint16_t(u & 0xffffu);
    half[n + i] = uint16_t(u >> 16);
  }
}

__global__ void join_kernel(uint32_t* bits, const uint16_t* half, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    bits[i] = ((uint32_t(half[n + i]) << 16) | uint32_t(half[i])) - 0x8000u;
}

}  // namespace

void fp32_to_bf16_residual(Tensor& master, const Stream& stream) {
  PB_REQUIRE(master.dtype() == DType::F32, "fp32_to_bf16_residual: master must be fp32");
  const int64_t n = master.numel();
  if (!n) return;
  const StreamScope on(stream, Device::CUDA);  // the workspace belongs to the op's stream
  Tensor tmp = Tensor::empty(master.shape(), MemCategory::Workspace, DType::F32, Device::CUDA);
  copy(tmp, master, stream);
  split_kernel<<<blocks_for(n), kThreads, 0, cu(stream)>>>(static_cast<uint16_t*>(master.raw()),
                                            static_cast<const uint32_t*>(tmp.raw()), n);
  CUDA_CHECK_LAUNCH();
}

void bf16_residual_to_fp32(Tensor& master, const Stream& stream) {
  PB_REQUIRE(master.dtype() == DType::F32, "bf16_residual_to_fp32: master must be fp32");
  const int64_t n = master.numel();
  if (!n) return;
  const StreamScope on(stream, Device::CUDA);  // the workspace belongs to the op's stream
  Tensor tmp = Tensor::empty(master.shape(), MemCategory::Workspace, DType::F32, Device::CUDA);
  copy(tmp, master, stream);
  join_kernel<<<blocks_for(n), kThreads, 0, cu(stream)>>>(static_cast<uint32_t*>(master.raw()),
                                           static_cast<const uint16_t*>(tmp.raw()), n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace pb::cuda
