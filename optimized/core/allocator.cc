/* Host tracking allocator and the CUDA caching allocator (see allocator.h). */
#include "optimized/core/allocator.h"

#include <algorithm>
#include <cstdlib>
#include <new>

#include "reference/common/error.h"
#ifdef PB_WITH_CUDA
#include <cuda_runtime_api.h>

#include "optimized/core/cuda_check.h"
#endif

namespace pb {

const char* category_name(MemCategory c) {
  switch (c) {
    case MemCategory::Params: return "params";
    case MemCategory::Grads: return "grads";
    case MemCategory::Optimizer: return "optimizer";
    case MemCategory::Activations: return "activations";
    case MemCategory::CommBuffers: return "comm_buffers";
    case MemCategory::Workspace: return "workspace";
  }
  return "?";
}

TrackingAllocator& TrackingAllocator::host() {
  static TrackingAllocator a(false);
  return a;
}

TrackingAllocator& TrackingAllocator::device() {
  static TrackingAllocator a(true);
  return a;
}

void TrackingAllocator::count(MemCategory c, int64_t bytes) {
  const size_t i = size_t(int(c));
  stats_.current[i] += bytes;
  stats_.peak[i] = std::max(stats_.peak[i], stats_.current[i]);
  stats_.total_current += bytes;
  stats_.total_peak = std::max(stats_.total_peak, stats_.total_current);
}

// Device blocks are rounded to 512 bytes (cudaMalloc's own alignment is 256).
static size_t rounded(size_t bytes) { return (bytes + 511) / 512 * 512; }

void* TrackingAllocator::allocate(size_t bytes, MemCategory c) {
  void* p = nullptr;
  if (!device_) {
    p = bytes ? std::aligned_alloc(64, (bytes + 63) / 64 * 64) : nullptr;
    if (bytes && !p) throw std::bad_alloc();
  } else if (bytes) {
#ifdef PB_WITH_CUDA
    const size_t r = rounded(bytes);
    const auto it = cache_.find(r);
    if (it != cache_.end()) {
      p = it->second;
      cache_.erase(it);
    } else {
      if (cudaMalloc(&p, r) != cudaSuccess) {  // out of memory: drop the cache once and retry
        cudaGetLastError();
        empty_cache();
        CUDA_CHECK(cudaMalloc(&p, r));
      }
      reserved_ += int64_t(r);
    }
#else
    throw Error("device allocation: this build has no CUDA backend");
#endif
  }
  count(c, int64_t(bytes));
  return p;
}

void TrackingAllocator::release(void* p, size_t bytes, MemCategory c) {
  if (!device_)
    std::free(p);
  else if (p)
    cache_.emplace(rounded(bytes), p);
  count(c, -int64_t(bytes));
}

void TrackingAllocator::reset_peaks() {
  stats_.peak = stats_.current;
  stats_.total_peak = stats_.total_current;
}

int64_t TrackingAllocator::driver_used_bytes() const {
  if (!device_) return 0;
#ifdef PB_WITH_CUDA
  size_t free_bytes = 0, total_bytes = 0;
  if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) {  // no device: nothing to compare
    cudaGetLastError();
    return 0;
  }
  return int64_t(total_bytes - free_bytes);
#else
  return 0;
#endif
}

void TrackingAllocator::empty_cache() {
#ifdef PB_WITH_CUDA
  for (auto& [size, p] : cache_) {
    CUDA_CHECK(cudaFree(p));
    reserved_ -= int64_t(size);
  }
#endif
  cache_.clear();
}

}  // namespace pb
