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
    case MemCategory::Host: return "host";
  }
  return "?";
}

namespace {

#ifdef PB_WITH_CUDA
// cudaEvent_t's without timing, reused: a free records one per stream that used the block.
class EventPool {
 public:
  static EventPool& get() {
    static EventPool* pool = new EventPool;  // never destroyed: frees may run at exit
    return *pool;
  }
  // An event recorded on stream s, or nullptr if CUDA refused (the runtime shutting down).
  void* record(const Stream& s) {
    cudaEvent_t e = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_.empty()) {
        e = static_cast<cudaEvent_t>(free_.back());
        free_.pop_back();
      }
    }
    if (!e && cudaEventCreateWithFlags(&e, cudaEventDisableTiming) != cudaSuccess) {
      cudaGetLastError();
      return nullptr;
    }
    if (cudaEventRecord(e, static_cast<cudaStream_t>(s.cuda_stream())) != cudaSuccess) {
      cudaGetLastError();
      put(e);
      return nullptr;
    }
    return e;
  }
  void put(void* e) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(e);
  }
  static bool done(void* e) {
    const cudaError_t r = cudaEventQuery(static_cast<cudaEvent_t>(e));
    if (r == cudaErrorNotReady) {
      cudaGetLastError();
      return false;
    }
    CUDA_CHECK(r);
    return true;
  }

 private:
  std::mutex mu_;
  std::vector<void*> free_;
};
#endif

// The events of a free: one on the allocation stream, one on each other stream that used
// the block. False if an event could not be recorded (the block must not be reused then).
bool record_free_events(const Stream& stream, const std::vector<Stream>& used,
                        std::vector<BlockCache::StreamEvent>& events) {
#ifdef PB_WITH_CUDA
  auto add = [&](const Stream& s) {
    for (const auto& e : events)
      if (e.stream == s.id()) return true;
    void* ev = EventPool::get().record(s);
    if (ev) events.push_back({s.id(), ev});
    return ev != nullptr;
  };
  bool ok = add(stream.resolve(Device::CUDA));
  for (const auto& u : used) ok = add(u.resolve(Device::CUDA)) && ok;
  return ok;
#else
  (void)stream;
  (void)used;
  (void)events;
  return true;
#endif
}

}  // namespace

TrackingAllocator::TrackingAllocator(bool device) : device_(device) {
#ifdef PB_WITH_CUDA
  cache_ = std::make_unique<BlockCache>(EventPool::done, [](void* e) { EventPool::get().put(e); }, true);
#else
  cache_ = std::make_unique<BlockCache>([](void*) { return true; }, [](void*) {}, true);
#endif
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

// A cached block safe for `stream`, or a new one from the driver (called under the lock).
void* TrackingAllocator::device_block(size_t r, const Stream& stream) {
#ifdef PB_WITH_CUDA
  if (void* p = cache_->take(r, stream.resolve(Device::CUDA).id())) return p;
  void* p = nullptr;
  if (cudaMalloc(&p, r) != cudaSuccess) {  // out of memory: drop the cache once and retry
    cudaGetLastError();
    empty_cache_locked();
    CUDA_CHECK(cudaMalloc(&p, r));
  }
  reserved_ += int64_t(r);
  return p;
#else
  (void)r;
  (void)stream;
  throw Error("device allocation: this build has no CUDA backend");
#endif
}

// The host category (swap, offload) is page-locked where a GPU is visible, so that its
// copies to and from the device are asynchronous.
static bool pinned(MemCategory c) {
#ifdef PB_WITH_CUDA
  static const bool gpu = [] {
    int n = 0;
    const bool ok = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
    cudaGetLastError();
    return ok;
  }();
  return c == MemCategory::Host && gpu;
#else
  (void)c;
  return false;
#endif
}

void* TrackingAllocator::allocate(size_t bytes, MemCategory c, const Stream& stream) {
  void* p = nullptr;
  if (!device_ && bytes && pinned(c)) {
#ifdef PB_WITH_CUDA
    CUDA_CHECK(cudaHostAlloc(&p, bytes, cudaHostAllocDefault));
#endif
  } else if (!device_) {
    p = bytes ? std::aligned_alloc(64, (bytes + 63) / 64 * 64) : nullptr;
    if (bytes && !p) throw std::bad_alloc();
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (device_ && bytes) p = device_block(rounded(bytes), stream);
  count(c, int64_t(bytes));
  return p;
}

void TrackingAllocator::release(void* p, size_t bytes, MemCategory c, const Stream& stream,
                                const std::vector<Stream>& used) {
  if (!device_ && p && pinned(c)) {
#ifdef PB_WITH_CUDA
    cudaFreeHost(p);  // not checked: frees may run while the runtime shuts down
#endif
  } else if (!device_) {
    std::free(p);
  }
  std::vector<BlockCache::StreamEvent> events;
  const bool reusable = !device_ || !p || record_free_events(stream, used, events);
  std::lock_guard<std::mutex> lock(mu_);
  if (device_ && p && reusable) cache_->put(p, rounded(bytes), std::move(events));
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
  std::lock_guard<std::mutex> lock(mu_);
  empty_cache_locked();
}

void TrackingAllocator::empty_cache_locked() {
#ifdef PB_WITH_CUDA
  const auto blocks = cache_->drain([](void* e) { CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(e))); });
  for (const auto& [p, size] : blocks) {
    CUDA_CHECK(cudaFree(p));
    reserved_ -= int64_t(size);
  }
#else
  cache_->drain([](void*) {});
#endif
}

// ---- pinned host blocks ----

// Events of the pool are heap pb::Events (CPU worker streams or CUDA streams alike).
PinnedPool::PinnedPool()
    : cache_(std::make_unique<BlockCache>([](void* e) { return static_cast<Event*>(e)->query(); },
                                          [](void* e) { delete static_cast<Event*>(e); }, false)) {}

PinnedPool& PinnedPool::get() {
  static PinnedPool* pool = new PinnedPool;  // never destroyed (no cudaFreeHost after the runtime's exit)
  return *pool;
}

static size_t page_rounded(size_t bytes) { return (std::max<size_t>(bytes, 1) + 4095) / 4096 * 4096; }

void* PinnedPool::acquire(size_t bytes) {
  const size_t r = page_rounded(bytes);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (void* p = cache_->take(r, 0)) return p;
  }
  void* p = nullptr;
#ifdef PB_WITH_CUDA
  static const bool gpu = [] {  // a CUDA build on a machine without a GPU: plain host memory
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) cudaGetLastError();
    return n > 0;
  }();
  if (gpu) {
    CUDA_CHECK(cudaHostAlloc(&p, r, cudaHostAllocDefault));
    return p;
  }
#endif
  p = std::malloc(r);
  if (!p) throw std::bad_alloc();
  return p;
}

void PinnedPool::release(void* p, size_t bytes, const Stream& stream) {
  PB_REQUIRE(stream.defined(), "pinned pool: release needs the stream of the copies");
  std::vector<BlockCache::StreamEvent> events;
  if (!stream.runs_inline()) {  // the copies queued on stream read p until this point
    auto* e = new Event(stream.device());
    e->record(stream);
    events.push_back({stream.id(), e});
  }
  std::lock_guard<std::mutex> lock(mu_);
  cache_->put(p, page_rounded(bytes), std::move(events));
}

}  // namespace pb
