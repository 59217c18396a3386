/* Tracking allocator: every buffer of the optimized path is allocated here with a
 * category, so that current and peak bytes per category (and in total) are measured per
 * rank (each MPI rank is a process). The CUDA backend adds a caching device allocator
 * behind the same interface.
 */
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace pb {

enum class MemCategory { Params, Grads, Optimizer, Activations, CommBuffers, Workspace };
constexpr int kMemCategories = 6;
const char* category_name(MemCategory c);

struct MemStats {
  std::array<int64_t, kMemCategories> current{}, peak{};
  int64_t total_current = 0, total_peak = 0;
};

class TrackingAllocator {
 public:
  static TrackingAllocator& host();  // the process's CPU allocator
  void* allocate(size_t bytes, MemCategory c);
  void release(void* p, size_t bytes, MemCategory c);
  const MemStats& stats() const { return stats_; }
  void reset_peaks();  // peak := current, to measure one phase

 private:
  MemStats stats_;
};

}  // namespace pb
