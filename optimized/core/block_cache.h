/* The stream-aware cache of freed memory blocks behind the CUDA caching allocator and the
 * pinned host pool (DESIGN.md, "Streams": the allocator never hands out a block that
 * another stream may still use).
 *
 * A block is freed with the stream it belonged to and, for every stream that used it
 * (its own and those of Tensor::record_stream), an event recorded at the free. take(size,
 * stream) hands out the oldest cached block of exactly that size that is safe for
 * `stream`:
 *   - with same_stream_reuse (device memory): events recorded on `stream` itself need not
 *     have completed (work queued later on the same stream runs after them), events of
 *     every other stream must have;
 *   - without it (host memory, written by the host at once): every event must have
 *     completed.
 * Whether an event completed is a query injected at construction (cudaEventQuery on the
 * GPU; a test's flag without one), so the logic is tested on a machine without a GPU.
 * Not thread-safe: the owner locks.
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <utility>
#include <vector>

namespace pb {

class BlockCache {
 public:
  struct StreamEvent {
    uint64_t stream;  // Stream::id() of the stream the event was recorded on
    void* event;
  };
  using Done = std::function<bool(void* event)>;     // has the event's work completed?
  using Release = std::function<void(void* event)>;  // the cache is done with the event

  BlockCache(Done done, Release release, bool same_stream_reuse)
      : done_(std::move(done)), release_(std::move(release)), same_stream_(same_stream_reuse) {}
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  void put(void* p, size_t size, std::vector<StreamEvent> events);
  // A cached block of `size` bytes that `stream` may use now, or nullptr.
  void* take(size_t size, uint64_t stream);
  // Removes every block, after `wait` on each of its events (returning them to the driver).
  std::vector<std::pair<void*, size_t>> drain(const std::function<void(void*)>& wait);
  size_t blocks() const;

 private:
  struct Block {
    void* p;
    std::vector<StreamEvent> events;  // still pending as far as the cache knows
  };
  bool ready_for(Block& b, uint64_t stream);

  Done done_;
  Release release_;
  bool same_stream_;
  std::map<size_t, std::list<Block>> free_;  // by size, oldest first
};

}  // namespace pb
