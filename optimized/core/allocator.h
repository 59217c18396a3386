/* Tracking allocator: every buffer of the optimized path is allocated here with a
 * category, so that current and peak bytes per category (and in total) are measured per
 * rank (each MPI rank is a process). host() serves CPU memory (64-byte aligned);
 * device() is a caching CUDA allocator: freed blocks are kept by size and reused, so
 * steady-state steps make no cudaMalloc; the categories count bytes in use, reserved()
 * what is held from the driver (cross-checked against cudaMemGetInfo).
 */
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
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
  static TrackingAllocator& host();    // the process's CPU allocator
  static TrackingAllocator& device();  // the current GPU's caching allocator (CUDA builds)
  void* allocate(size_t bytes, MemCategory c);
  void release(void* p, size_t bytes, MemCategory c);
  const MemStats& stats() const { return stats_; }
  void reset_peaks();        // peak := current, to measure one phase
  int64_t reserved() const { return reserved_; }  // device: bytes held from the driver
  // The driver's view of the current GPU: total - free from cudaMemGetInfo (0 for the host
  // allocator, in a CPU-only build, or where no device is visible). The cross-check is
  // reserved() <= driver_used_bytes(): every cached or live block is device memory, while
  // the driver also counts what this allocator does not see (the CUDA context, cuBLAS
  // workspaces, NCCL buffers, other processes on the same GPU), so the gap is not a leak;
  // reserved() above it would be an accounting bug.
  int64_t driver_used_bytes() const;
  void empty_cache();        // device: return cached blocks to the driver

 private:
  explicit TrackingAllocator(bool device) : device_(device) {}
  void count(MemCategory c, int64_t bytes);
  bool device_;
  MemStats stats_;
  std::multimap<size_t, void*> cache_;  // device: free blocks by rounded size
  int64_t reserved_ = 0;
};

}  // namespace pb
