/* Host tracking allocator: 64-byte aligned blocks, counted per category. */
#include "optimized/core/allocator.h"

#include <algorithm>
#include <cstdlib>
#include <new>

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
  static TrackingAllocator a;
  return a;
}

void* TrackingAllocator::allocate(size_t bytes, MemCategory c) {
  void* p = bytes ? std::aligned_alloc(64, (bytes + 63) / 64 * 64) : nullptr;
  if (bytes && !p) throw std::bad_alloc();
  const int i = int(c);
  stats_.current[size_t(i)] += int64_t(bytes);
  stats_.peak[size_t(i)] = std::max(stats_.peak[size_t(i)], stats_.current[size_t(i)]);
  stats_.total_current += int64_t(bytes);
  stats_.total_peak = std::max(stats_.total_peak, stats_.total_current);
  return p;
}

void TrackingAllocator::release(void* p, size_t bytes, MemCategory c) {
  std::free(p);
  stats_.current[size_t(int(c))] -= int64_t(bytes);
  stats_.total_current -= int64_t(bytes);
}

void TrackingAllocator::reset_peaks() {
  stats_.peak = stats_.current;
  stats_.total_peak = stats_.total_current;
}

}  // namespace pb
