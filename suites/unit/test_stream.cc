/* CPU streams and events (optimized/core/stream.h): a created stream's worker runs its
 * closures in order off the calling thread; events record, wait, query and synchronize;
 * the work of two streams overlaps in time (measured spans); an op queued on a worker
 * stream gives bitwise the result of the default stream; errors of queued work surface at
 * synchronize. The gradient-norm op over buffer segments is bitwise the per-tensor loop.
 * CUDA (CudaStreams.*, skipped where no GPU is visible): ops on a created stream equal the
 * default stream's bit for bit, the IndexTensor overloads equal the host-vector ones, the
 * two-launch segment norm matches the per-tensor sums, and events order two streams. */
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <future>
#include <mutex>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "optimized/core/device.h"
#include "optimized/kernels/ops.h"
#include "reference/common/error.h"

namespace pb::test {

namespace {

Tensor filled(std::vector<int64_t> shape, float seed, DType dt = DType::F32) {
  Tensor f = Tensor::empty(std::move(shape), MemCategory::Workspace);
  for (int64_t i = 0; i < f.numel(); ++i) f.f32()[i] = std::sin(seed + 0.37f * float(i));
  if (dt == DType::F32) return f;
  Tensor b = Tensor::empty(f.shape(), MemCategory::Workspace, dt);
  ops::cast(b, f);
  return b;
}

Tensor nan_like(const Tensor& t) {
  Tensor o = Tensor::empty(t.shape(), MemCategory::Workspace, t.dtype());
  if (t.dtype() == DType::F32)
    for (int64_t i = 0; i < o.numel(); ++i) o.f32()[i] = std::nanf("");
  else
    std::memset(o.raw(), 0xff, o.bytes());
  return o;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.bytes() == b.bytes() && std::memcmp(a.raw(), b.raw(), a.bytes()) == 0;
}

// A closure that blocks its stream until open() (a gate in the queue).
class Gate {
 public:
  void wait() { opened_.wait(); }
  void open() { promise_.set_value(); }

 private:
  std::promise<void> promise_;
  std::shared_future<void> opened_ = promise_.get_future().share();
};

}  // namespace

TEST(Stream, DefaultStreamRunsInlineOnTheCallingThread) {
  const Stream s = Stream::default_stream(Device::CPU);
  EXPECT_TRUE(s.runs_inline());
  EXPECT_TRUE(current_stream(Device::CPU) == s);
  std::thread::id ran;
  s.enqueue([&] { ran = std::this_thread::get_id(); });
  EXPECT_EQ(ran, std::this_thread::get_id()) << "ran before enqueue returned, on this thread";
}

TEST(Stream, WorkerRunsClosuresInOrderOffTheCallingThread) {
  const Stream s = Stream::create(Device::CPU);
  EXPECT_FALSE(s.runs_inline());
  EXPECT_FALSE(s.is_default());
  std::vector<int> order;
  std::vector<std::thread::id> threads;
  for (int i = 0; i < 200; ++i)
    s.enqueue([&, i] {
      order.push_back(i);
      threads.push_back(std::this_thread::get_id());
    });
  s.synchronize();
  ASSERT_EQ(order.size(), 200u);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(order[size_t(i)], i);
  for (const auto& t : threads) EXPECT_NE(t, std::this_thread::get_id());
}

TEST(Stream, ScopeSetsTheCurrentStreamOfThisThread) {
  const Stream s = Stream::create(Device::CPU);
  {
    StreamScope on(s);
    EXPECT_TRUE(current_stream(Device::CPU) == s);
    std::thread other([] { EXPECT_TRUE(current_stream(Device::CPU).runs_inline()); });  // per thread
    other.join();
    EXPECT_TRUE(Stream{}.resolve(Device::CPU) == s);
  }
  EXPECT_TRUE(current_stream(Device::CPU).runs_inline());
}

TEST(Event, RecordQuerySynchronizeAndStreamWait) {
  Event never;
  EXPECT_TRUE(never.query()) << "an event never recorded counts as complete";

  const Stream a = Stream::create(Device::CPU), b = Stream::create(Device::CPU);
  Gate gate;
  a.enqueue([&] { gate.wait(); });
  Event e;
  e.record(a);
  EXPECT_FALSE(e.query()) << "a's work is held by the gate";

  std::atomic<bool> b_ran{false};
  b.wait(e);  // b's later work starts after a reached e; the host is not blocked
  b.enqueue([&] { b_ran = true; });
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_FALSE(b_ran.load()) << "b ran before the event it waits for";

  gate.open();
  e.synchronize();
  EXPECT_TRUE(e.query());
  b.synchronize();
  EXPECT_TRUE(b_ran.load());

  Event inline_event;
  inline_event.record(Stream::default_stream(Device::CPU));
  EXPECT_TRUE(inline_event.query()) << "the inline stream's work has run when the event is recorded";
}

TEST(Event, WaitHoldsForThePointRecordedAtTheCall) {
  const Stream a = Stream::create(Device::CPU), b = Stream::create(Device::CPU);
  Gate first, second;
  a.enqueue([&] { first.wait(); });
  Event e;
  e.record(a);
  b.wait(e);  // the point before `second`
  std::atomic<bool> b_ran{false};
  b.enqueue([&] { b_ran = true; });
  a.enqueue([&] { second.wait(); });
  e.record(a);  // a later point: b must not wait for it
  first.open();
  b.synchronize();
  EXPECT_TRUE(b_ran.load());
  EXPECT_FALSE(e.query());
  second.open();
  e.synchronize();
  EXPECT_TRUE(e.query());
}

// The closures of two streams rendezvous (each waits until the other has started), then
// compute for a while: with serialized queues this would time out, and the measured spans
// must intersect.
TEST(Stream, TwoStreamsOverlapInTime) {
  const Stream a = Stream::create(Device::CPU), b = Stream::create(Device::CPU);
  std::promise<void> a_started, b_started;
  auto a_seen = a_started.get_future(), b_seen = b_started.get_future();
  struct SpanMs {
    double start = 0, end = 0;
    bool met = false;
  } sa, sb;
  auto work = [](SpanMs& span, std::promise<void>& mine, std::future<void>& theirs) {
    span.start = host_clock_ms();
    mine.set_value();
    span.met = theirs.wait_for(std::chrono::seconds(20)) == std::future_status::ready;
    volatile double x = 0;
    while (host_clock_ms() - span.start < 30) x = x + std::sqrt(x + 1.0);
    span.end = host_clock_ms();
  };
  a.enqueue([&] { work(sa, a_started, b_seen); });
  b.enqueue([&] { work(sb, b_started, a_seen); });
  a.synchronize();
  b.synchronize();
  EXPECT_TRUE(sa.met && sb.met) << "the two streams' closures did not run at the same time";
  EXPECT_LT(sa.start, sb.end);
  EXPECT_LT(sb.start, sa.end);
}

// The same ops, fp32 and bf16 (the promote-and-round emulation queues casts too), on the
// default stream and queued on a worker stream: bitwise the same outputs; value ops
// synchronize the worker.
TEST(Stream, OpsOnAWorkerStreamMatchTheDefaultStreamBitwise) {
  const Stream w = Stream::create(Device::CPU);
  for (DType dt : {DType::F32, DType::BF16}) {
    const Tensor x = filled({7, 12}, 0.1f, dt), wt = filled({5, 12}, 0.7f, dt), g = filled({12}, 1.3f, dt);
    auto run = [&](const Stream& s, Tensor& y, Tensor& n, Tensor& rstd, Tensor& sum, double& sq) {
      ops::linear_forward(y, x, wt, s);
      ops::rmsnorm_forward(n, rstd, x, g, 1e-5f, s);
      ops::add(sum, n, x, s);
      ops::scale_(sum, 0.5f, s);
      sq = ops::sum_squares(sum, s);
    };
    Tensor y0 = nan_like(Tensor::empty({7, 5}, MemCategory::Workspace, dt)), n0 = nan_like(x), s0 = nan_like(x);
    Tensor y1 = nan_like(y0), n1 = nan_like(x), s1 = nan_like(x);
    Tensor r0 = Tensor::empty({7}, MemCategory::Workspace), r1 = Tensor::empty({7}, MemCategory::Workspace);
    double q0 = 0, q1 = 0;
    run(Stream::default_stream(Device::CPU), y0, n0, r0, s0, q0);
    run(w, y1, n1, r1, s1, q1);  // sum_squares waited for the worker
    w.synchronize();
    EXPECT_TRUE(same_bits(y0, y1)) << dtype_name(dt);
    EXPECT_TRUE(same_bits(n0, n1)) << dtype_name(dt);
    EXPECT_TRUE(same_bits(r0, r1)) << dtype_name(dt);
    EXPECT_TRUE(same_bits(s0, s1)) << dtype_name(dt);
    EXPECT_EQ(std::memcmp(&q0, &q1, sizeof q0), 0) << dtype_name(dt);
  }
}

// Ops on a worker stream run on its thread, after the closures queued before them.
TEST(Stream, OpsQueueBehindEarlierWork) {
  const Stream w = Stream::create(Device::CPU);
  Tensor a = filled({64}, 0.2f), b = filled({64}, 0.9f), y = nan_like(a);
  Gate gate;
  w.enqueue([&] { gate.wait(); });
  ops::add(y, a, b, w);
  EXPECT_TRUE(std::isnan(y.f32()[0])) << "the add ran before the work queued ahead of it";
  gate.open();
  w.synchronize();
  for (int64_t i = 0; i < 64; ++i) EXPECT_EQ(y.f32()[i], a.f32()[i] + b.f32()[i]);
}

TEST(Stream, AnErrorOfQueuedWorkSurfacesAtSynchronize) {
  const Stream w = Stream::create(Device::CPU);
  Tensor x = filled({4, 3}, 0.f), bad = filled({5, 2}, 0.f), y = Tensor::empty({4, 5}, MemCategory::Workspace);
  ops::linear_forward(y, x, bad, w);  // shape mismatch, found by the kernel on the worker
  EXPECT_THROW(w.synchronize(), Error);
  w.synchronize();  // reported once
}

// synchronize(Device::CPU) drains every created CPU stream (step timings).
TEST(Stream, DeviceSynchronizeDrainsWorkerStreams) {
  const Stream w = Stream::create(Device::CPU);
  std::atomic<bool> ran{false};
  w.enqueue([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ran = true;
  });
  synchronize(Device::CPU);
  EXPECT_TRUE(ran.load());
}

// dist_optimizer's gradient norm: segments of one buffer, bitwise the per-tensor loop
// `sq += sum_squares(view)` (empty segments included).
TEST(SumSquaresSegments, BitwiseThePerTensorLoop) {
  const Tensor buf = filled({1009}, 0.3f);
  const std::vector<int64_t> ends = {7, 7, 300, 301, 1000};
  double loop = 0;
  int64_t start = 0;
  for (int64_t e : ends) {
    loop += ops::sum_squares(buf.view(start, {e - start}));
    start = e;
  }
  const double seg = ops::sum_squares_segments(buf, ends);
  EXPECT_EQ(std::memcmp(&seg, &loop, sizeof seg), 0) << seg << " vs " << loop;
  const Tensor tail = buf.view(300, {709});  // a view not at the start of its storage
  double tail_loop = ops::sum_squares(tail.view(0, {1})) + ops::sum_squares(tail.view(1, {699}));
  const double tail_seg = ops::sum_squares_segments(tail, {1, 700});
  EXPECT_EQ(std::memcmp(&tail_seg, &tail_loop, sizeof tail_seg), 0);
  EXPECT_EQ(ops::sum_squares_segments(buf, {}), 0.0);
  EXPECT_THROW(ops::sum_squares_segments(buf, {5, 3}), Error) << "segment ends must ascend";
  EXPECT_THROW(ops::sum_squares_segments(buf, {2000}), Error) << "and stay inside the buffer";
}

// ---- CUDA (skipped without a GPU) ----

class CudaStreams : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device visible: GPU stream tests skipped";
    cuda_select_device(0);
  }
};

namespace {

Tensor on_gpu(const Tensor& h) { return to_device(h, Device::CUDA); }

bool same_bits_gpu(const Tensor& a, const Tensor& b) {
  return same_bits(to_device(a, Device::CPU), to_device(b, Device::CPU));
}

}  // namespace

TEST_F(CudaStreams, OpsOnACreatedStreamMatchTheDefaultStreamBitwise) {
  const Stream s = Stream::create(Device::CUDA);
  const Tensor x = on_gpu(filled({37, 64}, 0.1f)), w = on_gpu(filled({48, 64}, 0.5f)), g = on_gpu(filled({64}, 1.1f));
  auto run = [&](const Stream& st) {
    Tensor y = Tensor::empty({37, 48}, MemCategory::Workspace, DType::F32, Device::CUDA);
    Tensor n = Tensor::empty({37, 64}, MemCategory::Workspace, DType::F32, Device::CUDA);
    Tensor r = Tensor::empty({37}, MemCategory::Workspace, DType::F32, Device::CUDA);
    ops::linear_forward(y, x, w, st);
    ops::rmsnorm_forward(n, r, x, g, 1e-5f, st);
    ops::add_(n, x, st);
    const double sq = ops::sum_squares(n, st);  // synchronizes st
    return std::tuple{y, n, sq};
  };
  const auto [y0, n0, q0] = run(Stream::default_stream(Device::CUDA));
  const auto [y1, n1, q1] = run(s);
  s.synchronize();
  EXPECT_TRUE(same_bits_gpu(y0, y1));
  EXPECT_TRUE(same_bits_gpu(n0, n1));
  EXPECT_EQ(q0, q1);
}

TEST_F(CudaStreams, IndexTensorOverloadsEqualTheHostVectorOnes) {
  const Stream s = Stream::create(Device::CUDA);
  const int64_t N = 29, H = 16, V = 40, heads = 2, D = 8;
  std::vector<int64_t> tok, pos;
  for (int64_t t = 0; t < N; ++t) {
    tok.push_back((t * 13 + 5) % (V + 9));  // some outside this rank's [3, 3 + V)
    pos.push_back((t * 7) % 11);
  }
  const StreamScope on(s);  // s is current: the zero-filled outputs are ordered before the ops
  const IndexTensor itok(tok, Device::CUDA), ipos(pos, Device::CUDA, Stream::default_stream(Device::CUDA));
  const Tensor table = on_gpu(filled({V, H}, 0.2f)), x = on_gpu(filled({N, heads * D}, 0.4f));
  const Tensor dy = on_gpu(filled({N, H}, 0.6f)), z = on_gpu(filled({N, V}, 0.8f));
  auto emb = [&](auto&& idx) {
    Tensor y = Tensor::zeros({N, H}, MemCategory::Workspace, DType::F32, Device::CUDA);
    Tensor dt = Tensor::zeros({V, H}, MemCategory::Workspace, DType::F32, Device::CUDA);
    ops::embedding_forward(y, idx, table, 3, s);
    ops::embedding_backward(dt, dy, idx, 3, s);
    return std::pair{y, dt};
  };
  auto rope = [&](auto&& idx) {
    Tensor y = Tensor::zeros({N, heads * D}, MemCategory::Workspace, DType::F32, Device::CUDA);
    Tensor dx = Tensor::zeros({N, heads * D}, MemCategory::Workspace, DType::F32, Device::CUDA);
    ops::rope_forward(y, x, idx, D, 10000.0, s);
    ops::rope_backward(dx, y, idx, D, 10000.0, s);
    return std::pair{y, dx};
  };
  auto ce = [&](auto&& idx) {
    Tensor mx = Tensor::empty({N}, MemCategory::Workspace, DType::F32, Device::CUDA);
    Tensor se = Tensor::empty({N}, MemCategory::Workspace, DType::F32, Device::CUDA);
    Tensor tl = Tensor::empty({N}, MemCategory::Workspace, DType::F32, Device::CUDA);
    Tensor dz = Tensor::empty({N, V}, MemCategory::Workspace, DType::F32, Device::CUDA);
    ops::ce_row_max(mx, z, s);
    ops::ce_sum_exp(se, z, mx, s);
    ops::ce_target_logit(tl, z, idx, 3, s);
    ops::ce_backward(dz, z, mx, se, idx, 3, 0.5f, s);
    return std::pair{tl, dz};
  };
  const auto [ev, edv] = emb(tok);
  const auto [ei, edi] = emb(itok);
  const auto [rv, rdv] = rope(pos);
  const auto [ri, rdi] = rope(ipos);  // uploaded on the default stream: s waits for the upload
  const auto [cv, cdv] = ce(tok);
  const auto [ci, cdi] = ce(itok);
  s.synchronize();
  EXPECT_TRUE(same_bits_gpu(ev, ei));
  EXPECT_TRUE(same_bits_gpu(edv, edi));
  EXPECT_TRUE(same_bits_gpu(rv, ri));
  EXPECT_TRUE(same_bits_gpu(rdv, rdi));
  EXPECT_TRUE(same_bits_gpu(cv, ci));
  EXPECT_TRUE(same_bits_gpu(cdv, cdi));
  const IndexTensor host_only(tok, Device::CPU);  // a CPU index tensor works on CUDA too (uploaded per call)
  const auto [eh, edh] = emb(host_only);
  s.synchronize();
  EXPECT_TRUE(same_bits_gpu(ev, eh));
}

TEST_F(CudaStreams, SegmentNormMatchesThePerTensorSums) {
  const Tensor h = filled({100003}, 0.9f), d = on_gpu(h);
  const std::vector<int64_t> ends = {5, 5, 2048, 2049, 70001, 100003};
  double per_tensor = 0;
  int64_t start = 0;
  for (int64_t e : ends) {
    per_tensor += ops::sum_squares(d.view(start, {e - start}));
    start = e;
  }
  const double cpu = ops::sum_squares_segments(h, ends), gpu = ops::sum_squares_segments(d, ends);
  EXPECT_NEAR(gpu, cpu, 1e-12 * cpu);
  EXPECT_NEAR(gpu, per_tensor, 1e-12 * cpu);
  EXPECT_EQ(gpu, ops::sum_squares_segments(d, ends)) << "deterministic";
  EXPECT_EQ(ops::sum_squares_segments(d, {}), 0.0);
}

TEST_F(CudaStreams, EventsOrderTwoStreams) {
  const Stream a = Stream::create(Device::CUDA), b = Stream::create(Device::CUDA);
  const Tensor src = on_gpu(filled({1 << 20}, 0.3f));
  Tensor mid = Tensor::empty({1 << 20}, MemCategory::Workspace, DType::F32, Device::CUDA);
  Tensor out = Tensor::empty({1 << 20}, MemCategory::Workspace, DType::F32, Device::CUDA);
  for (int i = 0; i < 8; ++i) ops::copy(mid, src, a);  // a writes mid
  ops::scale_(mid, 2.0f, a);
  Event e(Device::CUDA);
  e.record(a);
  b.wait(e);            // b reads mid after a's writes, without the host waiting
  mid.record_stream(b); // and the allocator keeps mid from other streams until b is done
  ops::copy(out, mid, b);
  e.synchronize();
  EXPECT_TRUE(e.query());
  b.synchronize();
  const Tensor got = to_device(out, Device::CPU), want = to_device(src, Device::CPU);
  for (int64_t i = 0; i < got.numel(); i += 4099) ASSERT_EQ(got.f32()[i], 2.0f * want.f32()[i]);
}

}  // namespace pb::test
