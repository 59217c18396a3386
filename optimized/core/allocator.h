/* Tracking allocator: every buffer of the optimized path is allocated here with a
 * category, so that current and peak bytes per category (and in total) are measured per
 * rank (each MPI rank is a process). host() serves CPU memory (64-byte aligned);
 * device() is a caching CUDA allocator: freed blocks are kept by size and reused, so
 * steady-state steps make no cudaMalloc; the categories count bytes in use, reserved()
 * what is held from the driver (cross-checked against cudaMemGetInfo).
 *
 * Streams: a device block is allocated for a stream (the current one) and freed with that
 * stream and every other stream that used it (Tensor::record_stream); an event recorded
 * on each at the free keeps the block from another stream until that stream's work is
 * done (core/block_cache.h). The same stream reuses it at once. Both allocators are
 * thread-safe (CPU worker streams free tensors on their own threads).
 * PinnedPool: page-locked host blocks for asynchronous uploads, reused only once the
 * copies that read them completed.
 */
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "optimized/core/block_cache.h"
#include "optimized/core/stream.h"

namespace pb {

// Host: bytes moved off the device into host memory (swap attention's pool, offloaded
// state); on the CPU backend "device" and "host" are these categories of one allocator.
enum class MemCategory { Params, Grads, Optimizer, Activations, CommBuffers, Workspace, Host };
constexpr int kMemCategories = 7;
const char* category_name(MemCategory c);

struct MemStats {
  std::array<int64_t, kMemCategories> current{}, peak{};
  int64_t total_current = 0, total_peak = 0;
};

class TrackingAllocator {
 public:
  static TrackingAllocator& host();    // the process's CPU allocator
  static TrackingAllocator& device();  // the current GPU's caching allocator (CUDA builds)
  // stream: where the block is used first (the placeholder: the current CUDA stream).
  void* allocate(size_t bytes, MemCategory c, const Stream& stream = {});
  // stream: the block's allocation stream; used: other streams that used it.
  void release(void* p, size_t bytes, MemCategory c, const Stream& stream = {}, const std::vector<Stream>& used = {});
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
  explicit TrackingAllocator(bool device);
  void count(MemCategory c, int64_t bytes);
  void* device_block(size_t rounded, const Stream& stream);
  void empty_cache_locked();
  bool device_;
  mutable std::mutex mu_;
  MemStats stats_;
  std::unique_ptr<BlockCache> cache_;  // device: free blocks by rounded size
  int64_t reserved_ = 0;
};

// Page-locked host memory for asynchronous host-to-device copies (plain host memory in a
// build without CUDA or on a machine without a GPU). release(p, stream) after queuing the copies that read p on stream:
// the block is handed out again only once they completed.
class PinnedPool {
 public:
  static PinnedPool& get();
  void* acquire(size_t bytes);
  void release(void* p, size_t bytes, const Stream& stream);

 private:
  PinnedPool();
  std::mutex mu_;
  std::unique_ptr<BlockCache> cache_;
};

}  // namespace pb
