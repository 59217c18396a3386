/* Helpers shared by the CUDA kernels: launch sizes, warp and block reductions, host
 * index vectors uploaded to device scratch memory, the cuBLAS handles, and the element
 * types of the kernels (fp32 or bf16: bf16 loads widen to fp32, the math is fp32, stores
 * round to bf16 to nearest even, as the promote-and-round emulation of ops.h does). */
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "optimized/core/allocator.h"
#include "optimized/core/cuda_check.h"
#include "optimized/core/tensor.h"
#include "reference/common/error.h"

namespace pb::cuda {

constexpr int kThreads = 256;

using bf16 = __nv_bfloat16;

// Element type <-> fp32 in device code: widening is exact; narrowing to bf16 rounds to
// nearest, ties to even (the rounding of ops::cast and of float_to_bf16 on the host).
__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(bf16 x) { return __bfloat162float(x); }
template <class T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ bf16 from_float<bf16>(float x) {
  return __float2bfloat16_rn(x);
}

// The element pointer of a tensor whose dtype must be T's (float: F32, bf16: BF16).
template <class T>
constexpr DType dtype_of() {
  return std::is_same_v<T, float> ? DType::F32 : DType::BF16;
}
template <class T>
T* ptr(Tensor& t) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, bf16>, "fp32 or bf16 elements");
  PB_REQUIRE(t.dtype() == dtype_of<T>(), "cuda kernel: a ", dtype_name(t.dtype()), " tensor ", t.shape_str(),
             " where ", dtype_name(dtype_of<T>()), " is expected (the operands of one op share a dtype)");
  return static_cast<T*>(t.raw());
}
template <class T>
const T* ptr(const Tensor& t) {
  return ptr<T>(const_cast<Tensor&>(t));
}

// Blocks for a grid-stride loop over n elements.
inline int blocks_for(int64_t n, int threads = kThreads) {
  return int(std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, 4096)));
}

template <class T>
__device__ inline T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ inline float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
template <class T>
__device__ inline T block_sum(T v) {
  __shared__ T partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_sum(v);
  __syncthreads();  // partial may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  T t = lane < warps ? partial[lane] : T(0);
  return warp_sum(t);
}

__device__ inline float block_max(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  float t = lane < warps ? partial[lane] : -INFINITY;
  return warp_max(t);
}

// A host vector of int64 copied into tracked device scratch memory for one launch.
class DeviceIndex {
 public:
  explicit DeviceIndex(const std::vector<int64_t>& v) : bytes_(v.size() * sizeof(int64_t)) {
    ptr_ = static_cast<int64_t*>(TrackingAllocator::device().allocate(bytes_, MemCategory::Workspace));
    if (bytes_) CUDA_CHECK(cudaMemcpy(ptr_, v.data(), bytes_, cudaMemcpyHostToDevice));
  }
  ~DeviceIndex() { TrackingAllocator::device().release(ptr_, bytes_, MemCategory::Workspace); }
  DeviceIndex(const DeviceIndex&) = delete;
  DeviceIndex& operator=(const DeviceIndex&) = delete;
  const int64_t* get() const { return ptr_; }

 private:
  size_t bytes_;
  int64_t* ptr_ = nullptr;
};

// Device scratch of n doubles (deterministic two-pass reductions).
class DeviceScratch {
 public:
  explicit DeviceScratch(size_t n) : bytes_(n * sizeof(double)) {
    ptr_ = static_cast<double*>(TrackingAllocator::device().allocate(bytes_, MemCategory::Workspace));
  }
  ~DeviceScratch() { TrackingAllocator::device().release(ptr_, bytes_, MemCategory::Workspace); }
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  double* get() const { return ptr_; }

 private:
  size_t bytes_;
  double* ptr_ = nullptr;
};

// Sum of `parts` doubles on the device, returned to the host (fixed order: deterministic).
double sum_partials(const double* parts, int n);

cublasHandle_t cublas();       // one per process and device, fp32 math without TF32 (pedantic)
cublasHandle_t cublas_bf16();  // bf16 GEMMs (fp32 accumulation): default math, tensor cores

}  // namespace pb::cuda
