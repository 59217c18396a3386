/* Helpers shared by the CUDA kernels: the op's cudaStream_t, launch sizes, warp and block
 * reductions, index lists on the device (IndexTensor, uploaded asynchronously on the op's
 * stream), device scratch, the cuBLAS handles bound to a stream, and the element types of
 * the kernels (fp32 or bf16: bf16 loads widen to fp32, the math is fp32, stores round to
 * bf16 to nearest even, as the promote-and-round emulation of ops.h does).
 * Every launch, copy and cuBLAS call goes to the op's stream; nothing here synchronizes
 * the host except the reductions that return a value (sum_partials). */
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
#include "optimized/core/index_tensor.h"
#include "optimized/core/stream.h"
#include "optimized/core/tensor.h"
#include "optimized/kernels/shape_checks.h"
#include "reference/common/error.h"

namespace pb::cuda {

constexpr int kThreads = 256;

// The cudaStream_t of an op's stream (the placeholder: the current CUDA stream).
inline cudaStream_t cu(const Stream& s) { return static_cast<cudaStream_t>(s.resolve(Device::CUDA).cuda_stream()); }

using bf16 = __nv_bfloat16;

// Whether a GEMM (m, n, k) into c (`bytes` bytes) calls cuBLAS: false when there is nothing
// to compute, after zeroing c for an overwriting GEMM with k = 0 (C = 0 * C; cuBLAS refuses
// k = 0 with its minimal leading dimensions). checks::gemm_plan decides.
inline bool gemm_runs(int64_t m, int64_t n, int64_t k, float beta, void* c, size_t bytes, cudaStream_t s) {
  switch (checks::gemm_plan(m, n, k, beta)) {
    case checks::GemmPlan::Run: return true;
    case checks::GemmPlan::ZeroC: CUDA_CHECK(cudaMemsetAsync(c, 0, bytes, s)); return false;
    case checks::GemmPlan::Nothing: return false;
  }
  return false;
}

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

// An index list on the device for work on `stream`: the IndexTensor's own device copy, or
// for a host-only one (a CPU IndexTensor, or a host vector) a copy uploaded asynchronously
// on the stream from pinned memory. Keep the returned handle alive until the launches
// that read the pointer are queued (the allocator orders later reuse after them).
inline IndexTensor on_device(const IndexTensor& idx, const Stream& stream) {
  return idx.device() == Device::CUDA ? idx : IndexTensor(idx.host(), Device::CUDA, stream);
}
inline IndexTensor on_device(const std::vector<int64_t>& v, const Stream& stream) {
  return IndexTensor(v, Device::CUDA, stream);
}

// Device scratch of n doubles (deterministic two-pass reductions), allocated for `stream`.
class DeviceScratch {
 public:
  DeviceScratch(size_t n, const Stream& stream) : bytes_(n * sizeof(double)), stream_(stream.resolve(Device::CUDA)) {
    ptr_ = static_cast<double*>(TrackingAllocator::device().allocate(bytes_, MemCategory::Workspace, stream_));
  }
  ~DeviceScratch() { TrackingAllocator::device().release(ptr_, bytes_, MemCategory::Workspace, stream_); }
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  double* get() const { return ptr_; }

 private:
  size_t bytes_;
  Stream stream_;
  double* ptr_ = nullptr;
};

// Sum of `parts` doubles on the device, returned to the host (fixed order: deterministic):
// one launch on `stream`, then the host waits for that stream only.
double sum_partials(const double* parts, int n, const Stream& stream);

// One handle per process and device, bound to `stream` for the calls that follow.
cublasHandle_t cublas(cudaStream_t stream);       // fp32 math without TF32 (pedantic)
cublasHandle_t cublas_bf16(cudaStream_t stream);  // bf16 GEMMs (fp32 accumulation): default math, tensor cores

}  // namespace pb::cuda
