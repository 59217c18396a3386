/* The stream-aware caching of freed blocks (optimized/core/block_cache.h) with injected
 * events, so that it runs without a GPU: a block freed on stream A is not handed to
 * stream B before A's event completed and is after; the same stream reuses it at once;
 * a stream that only used the block (record_stream) holds it from everyone until its
 * event completed; host (pinned) blocks wait for every event. And on the CPU: a tensor
 * whose last handle is dropped while a worker-stream task still uses it stays allocated
 * until the task ends; the pinned pool reuses a block only after the copies queued on its
 * stream have run. */
#include <gtest/gtest.h>

#include <future>
#include <map>
#include <vector>

#include "optimized/core/allocator.h"
#include "optimized/core/device.h"
#include "optimized/kernels/ops.h"

namespace pb::test {

namespace {

// Fake events: flags the test sets; the cache sees them through the injected query.
struct FakeEvents {
  std::map<void*, bool> done;
  std::map<void*, int> released;
  bool flags[8] = {};
  void* ev(int i) { return &flags[i]; }
  BlockCache cache(bool same_stream_reuse) {
    return BlockCache([](void* e) { return *static_cast<bool*>(e); },
                      [this](void* e) { ++released[e]; }, same_stream_reuse);
  }
};

constexpr uint64_t A = 11, B = 22, C = 33;
char blocks[4][1];
void* const P = &blocks[0], *const Q = &blocks[1];

}  // namespace

TEST(BlockCache, FreedOnANotHandedToBBeforeAsEventCompleted) {
  FakeEvents f;
  BlockCache cache = f.cache(true);
  cache.put(P, 512, {{A, f.ev(0)}});
  EXPECT_EQ(cache.take(512, B), nullptr) << "A's work on the block may still be running";
  EXPECT_EQ(cache.blocks(), 1u);
  f.flags[0] = true;  // A reached the free
  EXPECT_EQ(cache.take(512, B), P);
  EXPECT_EQ(cache.blocks(), 0u);
  EXPECT_EQ(f.released[f.ev(0)], 1) << "the completed event goes back once";
}

TEST(BlockCache, SameStreamReusesAtOnce) {
  FakeEvents f;
  BlockCache cache = f.cache(true);
  cache.put(P, 512, {{A, f.ev(0)}});
  EXPECT_EQ(cache.take(512, A), P) << "later work of A runs after A's uses of the block";
  EXPECT_EQ(f.released[f.ev(0)], 1) << "the event is not needed any more";
  EXPECT_EQ(cache.take(512, A), nullptr);
}

TEST(BlockCache, ARecordedStreamHoldsTheBlockEvenFromItsOwner) {
  FakeEvents f;
  BlockCache cache = f.cache(true);
  cache.put(P, 512, {{A, f.ev(0)}, {C, f.ev(1)}});  // allocated on A, also used by C (a comm stream)
  EXPECT_EQ(cache.take(512, A), nullptr) << "C may still read or write it";
  EXPECT_EQ(cache.take(512, B), nullptr);
  f.flags[1] = true;
  EXPECT_EQ(cache.take(512, B), nullptr) << "A's event is still pending for B";
  EXPECT_EQ(cache.take(512, A), P);
  EXPECT_EQ(f.released[f.ev(0)], 1);
  EXPECT_EQ(f.released[f.ev(1)], 1);
}

TEST(BlockCache, ExactSizesOldestReadyFirst) {
  FakeEvents f;
  BlockCache cache = f.cache(true);
  cache.put(P, 512, {{A, f.ev(0)}});
  cache.put(Q, 512, {{B, f.ev(1)}});
  EXPECT_EQ(cache.take(1024, A), nullptr) << "another size";
  EXPECT_EQ(cache.take(512, B), Q) << "P is not safe for B yet; Q is B's own";
  EXPECT_EQ(cache.take(512, B), nullptr);
  cache.put(Q, 512, {{B, f.ev(2)}});
  f.flags[0] = true;
  EXPECT_EQ(cache.take(512, B), P) << "the oldest block that is ready";
}

TEST(BlockCache, HostBlocksWaitForEveryEvent) {
  FakeEvents f;
  BlockCache cache = f.cache(false);  // the host writes a pinned block at once
  cache.put(P, 4096, {{A, f.ev(0)}});
  EXPECT_EQ(cache.take(4096, A), nullptr) << "a copy queued on A may still read it";
  f.flags[0] = true;
  EXPECT_EQ(cache.take(4096, A), P);
}

TEST(BlockCache, DrainWaitsForTheEvents) {
  FakeEvents f;
  BlockCache cache = f.cache(true);
  cache.put(P, 512, {{A, f.ev(0)}, {C, f.ev(1)}});
  cache.put(Q, 2048, {});
  std::vector<void*> waited;
  const auto out = cache.drain([&](void* e) { waited.push_back(e); });
  EXPECT_EQ(out.size(), 2u);
  EXPECT_EQ(waited.size(), 2u);
  EXPECT_EQ(cache.blocks(), 0u);
}

// A worker-stream closure holds Tensor copies: the storage of a tensor whose last handle
// the caller dropped stays allocated (and intact) until the task has run.
TEST(CpuStreams, StorageLivesUntilTheTaskEnds) {
  const Stream w = Stream::create(Device::CPU);
  TrackingAllocator& host = TrackingAllocator::host();
  const int64_t before = host.stats().current[size_t(MemCategory::Activations)];
  std::promise<void> go;
  std::shared_future<void> opened = go.get_future().share();
  Tensor y = Tensor::empty({1000}, MemCategory::Workspace);
  w.enqueue([opened] { opened.wait(); });
  {
    Tensor x = Tensor::empty({1000}, MemCategory::Activations), z = Tensor::empty({1000}, MemCategory::Activations);
    for (int64_t i = 0; i < 1000; ++i) x.f32()[i] = z.f32()[i] = float(i);
    ops::add(y, x, z, w);
  }  // the caller's last handles of x and z
  EXPECT_EQ(host.stats().current[size_t(MemCategory::Activations)], before + 2 * 4000)
      << "x and z were freed while the queued add still needs them";
  go.set_value();
  w.synchronize();
  EXPECT_EQ(host.stats().current[size_t(MemCategory::Activations)], before) << "freed once the task ran";
  for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(y.f32()[i], float(2 * i));
  y.record_stream(w);  // nothing to do on the CPU
}

// The pinned pool hands a block out again only after the copies queued on its stream ran.
TEST(CpuStreams, PinnedBlockReusedOnlyAfterItsStreamReachedTheRelease) {
  const Stream w = Stream::create(Device::CPU);
  PinnedPool& pool = PinnedPool::get();
  const size_t bytes = 123457;  // a size no other test uses
  void* p = pool.acquire(bytes);
  std::promise<void> go;
  std::shared_future<void> opened = go.get_future().share();
  w.enqueue([opened] { opened.wait(); });
  std::vector<char> dst(bytes);
  copy_bytes_async(dst.data(), Device::CPU, p, Device::CPU, bytes, w);  // reads p later
  pool.release(p, bytes, w);
  void* other = pool.acquire(bytes);
  EXPECT_NE(other, p) << "p was handed out while a queued copy still reads it";
  pool.release(other, bytes, Stream::default_stream(Device::CPU));
  go.set_value();
  w.synchronize();
  void* again = pool.acquire(bytes);
  void* again2 = pool.acquire(bytes);
  EXPECT_TRUE(again == p || again2 == p) << "the block returns once its copies ran";
  pool.release(again, bytes, Stream::default_stream(Device::CPU));
  pool.release(again2, bytes, Stream::default_stream(Device::CPU));
}

}  // namespace pb::test
