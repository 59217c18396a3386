/* Helpers shared by the CUDA kernels: launch sizes, warp and block reductions, host
 * index vectors uploaded to device scratch memory, and the cuBLAS handle. */
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "optimized/core/allocator.h"
#include "optimized/core/cuda_check.h"
#include "optimized/core/tensor.h"

namespace pb::cuda {

constexpr int kThreads = 256;

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

cublasHandle_t cublas();  // one per process and device, fp32 math without TF32

}  // namespace pb::cuda
