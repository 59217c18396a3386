/* Stream-aware block cache (see block_cache.h). */
#include "optimized/core/block_cache.h"

namespace pb {

void BlockCache::put(void* p, size_t size, std::vector<StreamEvent> events) {
  free_[size].push_back(Block{p, std::move(events)});
}

// Events that completed are released as they are found; the block is ready when no event
// that matters for `stream` is left pending.
bool BlockCache::ready_for(Block& b, uint64_t stream) {
  for (auto it = b.events.begin(); it != b.events.end();) {
    if (same_stream_ && it->stream == stream) {
      ++it;  // ordered before `stream`'s later work by the stream itself
      continue;
    }
    if (!done_(it->event)) return false;
    release_(it->event);
    it = b.events.erase(it);
  }
  return true;
}

void* BlockCache::take(size_t size, uint64_t stream) {
  const auto bucket = free_.find(size);
  if (bucket == free_.end()) return nullptr;
  auto& blocks = bucket->second;
  for (auto it = blocks.begin(); it != blocks.end(); ++it) {
    if (!ready_for(*it, stream)) continue;
    for (const auto& e : it->events) release_(e.event);  // same-stream events: not needed any more
    void* p = it->p;
    blocks.erase(it);
    if (blocks.empty()) free_.erase(bucket);
    return p;
  }
  return nullptr;
}

std::vector<std::pair<void*, size_t>> BlockCache::drain(const std::function<void(void*)>& wait) {
  std::vector<std::pair<void*, size_t>> out;
  for (auto& [size, blocks] : free_)
    for (auto& b : blocks) {
      for (const auto& e : b.events) {
        wait(e.event);
        release_(e.event);
      }
      out.emplace_back(b.p, size);
    }
  free_.clear();
  return out;
}

size_t BlockCache::blocks() const {
  size_t n = 0;
  for (const auto& [size, blocks] : free_) n += blocks.size();
  return n;
}

}  // namespace pb
