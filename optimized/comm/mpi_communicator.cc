/* MPI backend of the Communicator: blocking and non-blocking collectives on host
 * buffers, every call accounted in the CommLedger when it is posted; the non-blocking
 * calls progressed by one worker thread per communicator (see mpi_communicator.h). */
#include "optimized/comm/mpi_communicator.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <new>
#include <thread>
#include <utility>

#include "optimized/core/device.h"
#include "optimized/core/fatal.h"
#include "optimized/core/timeline.h"
#include "reference/common/error.h"
#ifdef PB_WITH_CUDA
#include <cuda_runtime_api.h>

#include "optimized/core/cuda_check.h"
#endif

namespace pb {

namespace {

MPI_Datatype mpi_type(const Tensor& t) { return t.dtype() == DType::F32 ? MPI_FLOAT : MPI_UINT16_T; }

// bf16 reductions for MPI (which has no bf16 type): each pairwise step adds in fp32 and
// rounds to bf16, as a ring reduction on bf16 buffers does.
void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const uint16_t*>(in);
  auto* b = static_cast<uint16_t*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = float_to_bf16(bf16_to_float(a[i]) + bf16_to_float(b[i]));
}

void bf16_max(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const uint16_t*>(in);
  auto* b = static_cast<uint16_t*>(inout);
  for (int i = 0; i < *len; ++i)
    if (bf16_to_float(a[i]) > bf16_to_float(b[i])) b[i] = a[i];
}

MPI_Op mpi_op(const Tensor& t, ReduceOp op) {
  if (t.dtype() == DType::F32) return op == ReduceOp::Sum ? MPI_SUM : MPI_MAX;
  static MPI_Op sum = MPI_OP_NULL, max = MPI_OP_NULL;
  static std::once_flag created;  // the caller's thread or a worker, whichever comes first
  std::call_once(created, [] {
    MPI_CHECK(MPI_Op_create(bf16_sum, 1, &sum));
    MPI_CHECK(MPI_Op_create(bf16_max, 1, &max));
  });
  return op == ReduceOp::Sum ? sum : max;
}

int count(const Tensor& t) {
  PB_REQUIRE(t.numel() <= INT32_MAX, "communicator: buffer of ", t.numel(), " elements exceeds MPI's int count");
  return int(t.numel());
}

void copy(Tensor& dst, const Tensor& src) {
  PB_REQUIRE(dst.bytes() == src.bytes(), "communicator: size-1 group copy of ", src.shape_str(), " into ",
             dst.shape_str());
  if (dst.raw() != src.raw()) copy_bytes(dst.raw(), dst.device(), src.raw(), src.device(), src.bytes());
}

// Host staging blocks, cached by size: pinned (page-locked) memory in a CUDA build, so the
// device <-> host copies run at DMA speed and MPI may register the pages, and a block once
// pinned is reused by the next staging of the same rounded size (steady-state steps pin
// nothing new). Blocks are kept until the process ends: the pool is never destroyed, so no
// cudaFreeHost runs after the CUDA runtime has shut down at exit.
class StagingPool {
 public:
  static StagingPool& get() {
    static StagingPool* pool = new StagingPool;  // intentionally never destroyed (see above)
    return *pool;
  }
  // A block of at least `bytes` (rounded up to 4 KiB pages); its size is rounded(bytes).
  void* acquire(size_t bytes) {
    const size_t r = rounded(bytes);
    {
      std::lock_guard<std::mutex> lock(mu_);
      const auto it = free_.find(r);
      if (it != free_.end()) {
        void* p = it->second;
        free_.erase(it);
        return p;
      }
    }
    void* p = nullptr;
#ifdef PB_WITH_CUDA
    CUDA_CHECK(cudaHostAlloc(&p, r, cudaHostAllocDefault));
#else
    p = std::malloc(r);
    if (!p) throw std::bad_alloc();
#endif
    return p;
  }
  void release(void* p, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.emplace(rounded(bytes), p);
  }

 private:
  static size_t rounded(size_t bytes) { return (bytes + 4095) / 4096 * 4096; }
  std::mutex mu_;
  std::multimap<size_t, void*> free_;  // free blocks by rounded size
};

// Host memory for a tensor's bytes: the tensor itself on the CPU; for a device tensor a
// host copy in a pinned staging block (MPI sees host buffers; DESIGN.md: device buffers
// are staged through the host). copy_in / copy_out move the bytes between the tensor and
// the block (nothing to do on the CPU). The block returns to the pool when the view dies.
class HostView {
 public:
  explicit HostView(const Tensor& t) : t_(t), staged_(t.device() != Device::CPU), bytes_(t.bytes()) {
    if (staged_ && bytes_) buf_ = StagingPool::get().acquire(bytes_);  // empty: a null pointer (count 0)
  }
  ~HostView() {
    if (buf_) StagingPool::get().release(buf_, bytes_);
  }
  HostView(const HostView&) = delete;
  HostView& operator=(const HostView&) = delete;
  void* ptr() { return staged_ ? buf_ : const_cast<void*>(t_.raw()); }
  void copy_in() {
    if (buf_) copy_bytes(buf_, Device::CPU, t_.raw(), t_.device(), bytes_);
  }
  void copy_out() {  // the received bytes back to the device
    if (buf_) copy_bytes(const_cast<void*>(t_.raw()), t_.device(), buf_, Device::CPU, bytes_);
  }

 private:
  Tensor t_;  // keeps the storage alive while the call runs
  bool staged_;
  size_t bytes_;
  void* buf_ = nullptr;
};

class DoneRequest : public Request {
 public:
  void wait() override {}
};

// Completion of one asynchronous call, shared by the worker and the Request.
struct OpState {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::exception_ptr error;
  Span span;
  std::string what;  // "group op" where the timeline records (core/timeline.h)
  double posted_ms = 0;  // when the caller posted it: in flight from here on the timeline
  bool recorded = false;

  // The timeline's spans of a wait that began at t0 (ms): the caller blocked, and once the
  // call itself from its start to its completion.
  void record(double t0) {
    if (what.empty() || std::exchange(recorded, true)) return;  // (a wait again, or the destructor's)
    Timeline::get().add(SpanKind::Wait, what + " wait", t0, host_clock_ms());
    Timeline::get().add(SpanKind::Async, what, posted_ms, span.end_ms);
  }

  void finish(std::exception_ptr e) {
    {
      std::lock_guard<std::mutex> lock(mu);
      error = e;
      span.end_ms = host_clock_ms();
      done = true;
    }
    cv.notify_all();
  }
  void wait() {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return done; });
    if (error) std::rethrow_exception(std::exchange(error, nullptr));
  }
};

class AsyncRequest : public Request {
 public:
  explicit AsyncRequest(std::shared_ptr<OpState> s) : s_(std::move(s)) {}
  ~AsyncRequest() override {
    try {
      wait();
    } catch (...) {  // a destructor must not throw; the error was the caller's to wait for
    }
  }
  void wait() override {
    const double t0 = host_clock_ms();
    s_->wait();
    s_->record(t0);
  }
  Span span() const override {
    std::lock_guard<std::mutex> lock(s_->mu);
    return s_->span;
  }

 private:
  std::shared_ptr<OpState> s_;
};

}  // namespace

// One non-blocking call: start() stages the inputs in and posts the MPI call; finish()
// stages the results out once it completed. Both run on the worker (or, without
// MPI_THREAD_MULTIPLE, start() on the caller and finish() in wait()).
struct MpiCommunicator::AsyncOp {
  std::function<MPI_Request()> start;
  std::function<void()> finish = [] {};
  Event ready;          // recorded on the caller's current stream at post: the inputs are written
  int cuda_device = -1; // the caller's GPU when a buffer is on the device
  std::shared_ptr<OpState> state = std::make_shared<OpState>();
};

// The worker: posts queued calls to MPI in program order and completes them in any order.
// Between polls it sleeps briefly on its queue (no core spins while the caller computes).
class MpiCommunicator::Worker {
 public:
  Worker() : thread_([this] { loop(); }) {}
  ~Worker() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    thread_.join();  // completes what was posted first
  }
  void post(AsyncOp op) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(op));
      ++pending_;
    }
    wake_.notify_all();
  }
  void drain() {
    std::unique_lock<std::mutex> lock(mu_);
    idle_.wait(lock, [&] { return pending_ == 0; });
  }

 private:
  void loop();
  void start(AsyncOp& op);
  void complete(AsyncOp& op, std::exception_ptr e);
  void device_context(const AsyncOp& op);

  std::mutex mu_;
  std::condition_variable wake_, idle_;
  std::deque<AsyncOp> queue_;
  size_t pending_ = 0;  // posted and not yet complete
  bool stop_ = false;
  std::vector<AsyncOp> active_;  // worker thread only: started, with their MPI requests
  std::vector<MPI_Request> requests_;
  Stream staging_;               // CUDA builds: the worker's stream for staging copies
  int device_ = -1;
  std::thread thread_;           // last: starts once the members above exist
};

// The worker's CUDA context for a call on device buffers: the caller's GPU (the CUDA
// device is per thread) and a staging stream of its own, current for the copies.
void MpiCommunicator::Worker::device_context(const AsyncOp& op) {
#ifdef PB_WITH_CUDA
  if (op.cuda_device < 0) return;
  if (device_ != op.cuda_device) {
    CUDA_CHECK(cudaSetDevice(op.cuda_device));
    device_ = op.cuda_device;
    staging_ = Stream::create(Device::CUDA);
  }
#else
  (void)op;
#endif
}

void MpiCommunicator::Worker::start(AsyncOp& op) {
  op.state->span.start_ms = host_clock_ms();
  try {
    device_context(op);
    op.ready.synchronize();  // the caller's writes to the inputs
    const StreamScope on(staging_);
    const MPI_Request r = op.start();
    active_.push_back(std::move(op));
    requests_.push_back(r);
  } catch (...) {
    complete(op, std::current_exception());
  }
}

void MpiCommunicator::Worker::complete(AsyncOp& op, std::exception_ptr e) {
  if (!e) try {
      device_context(op);
      const StreamScope on(staging_);
      op.finish();
    } catch (...) {
      e = std::current_exception();
    }
  // The call's tensors and staging blocks are released before the caller can go on, so
  // memory is freed at the same point of the caller's program as with a blocking call.
  op.start = nullptr;
  op.finish = nullptr;
  op.state->finish(e);
  {
    std::lock_guard<std::mutex> lock(mu_);
    --pending_;
  }
  idle_.notify_all();
}

void MpiCommunicator::Worker::loop() {
  std::vector<int> done;
  for (;;) {
    std::deque<AsyncOp> fresh;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (active_.empty()) wake_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (stop_ && queue_.empty() && active_.empty()) return;
      fresh.swap(queue_);
    }
    for (auto& op : fresh) start(op);  // in program order
    if (active_.empty()) continue;
    int n = 0;
    done.resize(requests_.size());
    MPI_CHECK(MPI_Testsome(int(requests_.size()), requests_.data(), &n, done.data(), MPI_STATUSES_IGNORE));
    if (n == 0 || n == MPI_UNDEFINED) {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait_for(lock, std::chrono::microseconds(20), [&] { return stop_ || !queue_.empty(); });
      continue;
    }
    std::sort(done.begin(), done.begin() + n);
    for (int k = n - 1; k >= 0; --k) {  // from the back, so the indices stay valid
      const size_t i = size_t(done[size_t(k)]);
      AsyncOp op = std::move(active_[i]);
      active_.erase(active_.begin() + std::ptrdiff_t(i));
      requests_.erase(requests_.begin() + std::ptrdiff_t(i));
      complete(op, nullptr);
    }
  }
}

static int comm_rank(MPI_Comm c) {
  int r = 0;
  MPI_CHECK(MPI_Comm_rank(c, &r));
  return r;
}
static int comm_size(MPI_Comm c) {
  int s = 0;
  MPI_CHECK(MPI_Comm_size(c, &s));
  return s;
}

static bool mpi_thread_multiple() {
  int level = MPI_THREAD_SINGLE;
  MPI_CHECK(MPI_Query_thread(&level));
  return level >= MPI_THREAD_MULTIPLE;
}

MpiCommunicator::MpiCommunicator(std::string name, MPI_Comm comm)
    : Communicator(std::move(name), comm_rank(comm), comm_size(comm)), comm_(comm) {}

MpiCommunicator::~MpiCommunicator() {
  worker_.reset();  // completes what was posted
  int fin = 0;
  MPI_Finalized(&fin);
  if (!fin && comm_ != MPI_COMM_WORLD && comm_ != MPI_COMM_SELF && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void MpiCommunicator::drain() {
  if (worker_) worker_->drain();
}

namespace {

// Without a worker: the call starts here and completes in wait(), inside MPI_Wait.
class InlineRequest : public Request {
 public:
  InlineRequest(MPI_Request r, std::function<void()> finish, std::shared_ptr<OpState> state)
      : req_(r), finish_(std::move(finish)), state_(std::move(state)) {}
  ~InlineRequest() override {
    if (req_ != MPI_REQUEST_NULL) MPI_Wait(&req_, MPI_STATUS_IGNORE);
  }
  void wait() override {
    const double t0 = host_clock_ms();
    MPI_CHECK(MPI_Wait(&req_, MPI_STATUS_IGNORE));
    if (finish_) std::exchange(finish_, nullptr)();
    state_->span.end_ms = host_clock_ms();  // it progressed inside MPI_Wait (or the caller's MPI calls)
    state_->record(t0);
  }
  Span span() const override { return state_->span; }

 private:
  MPI_Request req_;
  std::function<void()> finish_;
  std::shared_ptr<OpState> state_;
};

}  // namespace

RequestPtr MpiCommunicator::post(AsyncOp op, const std::vector<const Tensor*>& buffers, const char* what) {
  if (Timeline::get().on()) op.state->what = name_ + " " + what, op.state->posted_ms = host_clock_ms();
  bool on_gpu = false;
  for (const Tensor* t : buffers) on_gpu = on_gpu || t->device() == Device::CUDA;
  const Device dev = on_gpu ? Device::CUDA : Device::CPU;
  op.ready = Event(dev);
  op.ready.record(current_stream(dev));
#ifdef PB_WITH_CUDA
  if (on_gpu) CUDA_CHECK(cudaGetDevice(&op.cuda_device));
#endif
  if (!mpi_thread_multiple()) {
    op.ready.synchronize();
    op.state->span.start_ms = host_clock_ms();
    return std::make_unique<InlineRequest>(op.start(), op.finish, op.state);
  }
  if (!worker_) worker_ = std::make_unique<Worker>();
  auto state = op.state;
  worker_->post(std::move(op));
  return std::make_unique<AsyncRequest>(std::move(state));
}

// ---- blocking calls: after the worker drained, on the calling thread ----

void MpiCommunicator::all_reduce(Tensor& buf, ReduceOp op) {
  if (size_ == 1) return;
  const TimedSpan timed(SpanKind::Blocking, "all_reduce", name_);
  drain();
  CommLedger::get().record(name_, CommOp::AllReduce, size_, int64_t(buf.bytes()));
  HostView b(buf);
  b.copy_in();
  // The non-blocking call, waited for here: the same reduction order as iall_reduce's.
  MPI_Request r;
  MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, b.ptr(), count(buf), mpi_type(buf), mpi_op(buf, op), comm_, &r));
  MPI_CHECK(MPI_Wait(&r, MPI_STATUS_IGNORE));
  b.copy_out();
}

void MpiCommunicator::all_gather(Tensor& out, const Tensor& in) {
  PB_REQUIRE(out.numel() == in.numel() * size_, "all_gather: output ", out.shape_str(), " is not ", size_,
             " x input ", in.shape_str());
  if (size_ == 1) return copy(out, in);
  const TimedSpan timed(SpanKind::Blocking, "all_gather", name_);
  drain();
  CommLedger::get().record(name_, CommOp::AllGather, size_, int64_t(out.bytes()));
  HostView i(in), o(out);
  i.copy_in();
  MPI_CHECK(MPI_Allgather(i.ptr(), count(in), mpi_type(in), o.ptr(), count(in), mpi_type(out), comm_));
  o.copy_out();
}

void MpiCommunicator::reduce_scatter(Tensor& out, const Tensor& in) {
  PB_REQUIRE(in.numel() == out.numel() * size_, "reduce_scatter: input ", in.shape_str(), " is not ", size_,
             " x output ", out.shape_str());
  if (size_ == 1) return copy(out, in);
  const TimedSpan timed(SpanKind::Blocking, "reduce_scatter", name_);
  drain();
  CommLedger::get().record(name_, CommOp::ReduceScatter, size_, int64_t(in.bytes()));
  HostView i(in), o(out);
  i.copy_in();
  // The non-blocking call, waited for here: the same reduction order as ireduce_scatter's
  // (Open MPI's blocking and non-blocking reduce-scatter differ in the last bits at 4 ranks).
  MPI_Request r;
  MPI_CHECK(MPI_Ireduce_scatter_block(i.ptr(), o.ptr(), count(out), mpi_type(in), mpi_op(in, ReduceOp::Sum), comm_,
                                      &r));
  MPI_CHECK(MPI_Wait(&r, MPI_STATUS_IGNORE));
  o.copy_out();
}

void MpiCommunicator::all_to_all(Tensor& out, const Tensor& in) {
  PB_REQUIRE(in.numel() == out.numel() && in.numel() % size_ == 0, "all_to_all: input ", in.shape_str(),
             " and output ", out.shape_str(), " must match and divide by ", size_);
  if (size_ == 1) return copy(out, in);
  const TimedSpan timed(SpanKind::Blocking, "all_to_all", name_);
  drain();
  CommLedger::get().record(name_, CommOp::AllToAll, size_, int64_t(in.bytes()));
  const int n = count(in) / size_;
  HostView i(in), o(out);
  i.copy_in();
  MPI_CHECK(MPI_Alltoall(i.ptr(), n, mpi_type(in), o.ptr(), n, mpi_type(out), comm_));
  o.copy_out();
}

void MpiCommunicator::all_to_all_v(Tensor& out, const std::vector<int64_t>& recv_rows, const Tensor& in,
                                   const std::vector<int64_t>& send_rows) {
  PB_REQUIRE(int(send_rows.size()) == size_ && int(recv_rows.size()) == size_, "all_to_all_v: ", size_,
             " row counts needed");
  const int64_t cols = row_width(in, out);
  const size_t n = static_cast<size_t>(size_);
  std::vector<int> sc(n), sd(n), rc(n), rd(n);
  int64_t s_off = 0, r_off = 0;
  for (int q = 0; q < size_; ++q) {
    sc[size_t(q)] = int(send_rows[size_t(q)] * cols);
    sd[size_t(q)] = int(s_off);
    rc[size_t(q)] = int(recv_rows[size_t(q)] * cols);
    rd[size_t(q)] = int(r_off);
    s_off += sc[size_t(q)];
    r_off += rc[size_t(q)];
  }
  PB_REQUIRE(s_off == in.numel() && r_off == out.numel(), "all_to_all_v: row counts (", s_off, " and ", r_off,
             " elements) do not cover input ", in.shape_str(), " and output ", out.shape_str());
  if (size_ == 1) return copy(out, in);
  const TimedSpan timed(SpanKind::Blocking, "all_to_all_v", name_);
  drain();
  CommLedger::get().record(name_, CommOp::AllToAll, size_, int64_t(in.bytes()));
  HostView i(in), o(out);
  i.copy_in();
  MPI_CHECK(MPI_Alltoallv(i.ptr(), sc.data(), sd.data(), mpi_type(in), o.ptr(), rc.data(), rd.data(), mpi_type(out),
                          comm_));
  o.copy_out();
}

void MpiCommunicator::broadcast(Tensor& buf, int root) {
  if (size_ == 1) return;
  const TimedSpan timed(SpanKind::Blocking, "broadcast", name_);
  drain();
  CommLedger::get().record(name_, CommOp::Broadcast, size_, int64_t(buf.bytes()));
  HostView b(buf);
  b.copy_in();
  MPI_CHECK(MPI_Bcast(b.ptr(), count(buf), mpi_type(buf), root, comm_));
  b.copy_out();
}

void MpiCommunicator::send(const Tensor& buf, int peer, int tag) {
  const TimedSpan timed(SpanKind::Blocking, "send", name_);
  drain();
  CommLedger::get().record(name_, CommOp::Send, size_, int64_t(buf.bytes()));
  HostView b(buf);
  b.copy_in();
  MPI_CHECK(MPI_Send(b.ptr(), count(buf), mpi_type(buf), peer, tag, comm_));
}

void MpiCommunicator::recv(Tensor& buf, int peer, int tag) {
  const TimedSpan timed(SpanKind::Blocking, "recv", name_);
  drain();
  CommLedger::get().record(name_, CommOp::Recv, size_, int64_t(buf.bytes()));
  HostView b(buf);
  MPI_CHECK(MPI_Recv(b.ptr(), count(buf), mpi_type(buf), peer, tag, comm_, MPI_STATUS_IGNORE));
  b.copy_out();
}

// ---- non-blocking calls: accounted here, run by the worker ----

namespace {
// A non-blocking call's start: its input staged in (a device buffer to the host), then the
// MPI call that fills the request.
std::function<MPI_Request()> staged(std::shared_ptr<HostView> in, std::function<void(MPI_Request*)> call) {
  return [in = std::move(in), call = std::move(call)] {
    if (in) in->copy_in();
    MPI_Request r;
    call(&r);
    return r;
  };
}
}  // namespace

RequestPtr MpiCommunicator::iall_reduce(Tensor& buf, ReduceOp op) {
  if (size_ == 1) return std::make_unique<DoneRequest>();
  CommLedger::get().record(name_, CommOp::AllReduce, size_, int64_t(buf.bytes()));
  auto b = std::make_shared<HostView>(buf);
  const int n = count(buf);
  const MPI_Datatype type = mpi_type(buf);
  const MPI_Op mop = mpi_op(buf, op);
  const MPI_Comm comm = comm_;
  AsyncOp a;
  a.start = staged(b, [=](MPI_Request* r) {
    MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, b->ptr(), n, type, mop, comm, r));
  });
  a.finish = [b] { b->copy_out(); };
  return post(std::move(a), {&buf}, "all_reduce");
}

RequestPtr MpiCommunicator::iall_gather(Tensor& out, const Tensor& in) {
  PB_REQUIRE(out.numel() == in.numel() * size_, "iall_gather: output ", out.shape_str(), " is not ", size_,
             " x input ", in.shape_str());
  if (size_ == 1) {
    copy(out, in);
    return std::make_unique<DoneRequest>();
  }
  CommLedger::get().record(name_, CommOp::AllGather, size_, int64_t(out.bytes()));
  auto i = std::make_shared<HostView>(in), o = std::make_shared<HostView>(out);
  const int n = count(in);
  const MPI_Datatype ti = mpi_type(in), to = mpi_type(out);
  const MPI_Comm comm = comm_;
  AsyncOp a;
  a.start = staged(i, [=](MPI_Request* r) {
    MPI_CHECK(MPI_Iallgather(i->ptr(), n, ti, o->ptr(), n, to, comm, r));
  });
  a.finish = [i, o] { o->copy_out(); };
  return post(std::move(a), {&out, &in}, "all_gather");
}

RequestPtr MpiCommunicator::iall_gather_in_place(Tensor& buf) {
  PB_REQUIRE(buf.numel() % size_ == 0, "iall_gather_in_place: ", buf.shape_str(), " does not divide by ", size_);
  if (size_ == 1) return std::make_unique<DoneRequest>();
  CommLedger::get().record(name_, CommOp::AllGather, size_, int64_t(buf.bytes()));
  auto b = std::make_shared<HostView>(buf);
  const int n = count(buf) / size_;
  const MPI_Datatype type = mpi_type(buf);
  const MPI_Comm comm = comm_;
  AsyncOp a;
  a.start = staged(b, [=](MPI_Request* r) {
    MPI_CHECK(MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, b->ptr(), n, type, comm, r));
  });
  a.finish = [b] { b->copy_out(); };
  return post(std::move(a), {&buf}, "all_gather");
}

// Host buffers: one MPI all-gather whose receive type is q rows resized to a stride of R
// rows, so rank j's rows land at j R + row0 directly. Device buffers: gathered into one
// staging block, each rank's rows then copied to their place.
RequestPtr MpiCommunicator::iall_gather_at(Tensor& out, const Tensor& in, int64_t row0) {
  const int64_t R = size_ ? out.rows() / size_ : 0, q = in.rows();
  PB_REQUIRE(out.rows() == R * size_ && out.cols() == in.cols() && out.dtype() == in.dtype() && row0 >= 0 &&
                 row0 + q <= R, "iall_gather_at: ", in.shape_str(), " at row ", row0, " of each of ", size_,
             " row blocks of ", out.shape_str());
  if (size_ == 1) {
    Tensor place = out.slice_rows(row0, q);
    copy(place, in);
    return std::make_unique<DoneRequest>();
  }
  CommLedger::get().record(name_, CommOp::AllGather, size_, int64_t(in.bytes()) * size_);
  auto i = std::make_shared<HostView>(in);
  const int n = count(in);
  const MPI_Datatype type = mpi_type(in);
  const MPI_Comm comm = comm_;
  const int64_t row_bytes = in.cols() * int64_t(dtype_bytes(in.dtype()));
  AsyncOp a;
  if (out.device() == Device::CPU) {
    char* dst = static_cast<char*>(out.raw()) + row0 * row_bytes;
    a.start = staged(i, [=](MPI_Request* r) {
      MPI_Datatype rows = MPI_DATATYPE_NULL, strided = MPI_DATATYPE_NULL;
      MPI_CHECK(MPI_Type_contiguous(n, type, &rows));
      MPI_CHECK(MPI_Type_create_resized(rows, 0, MPI_Aint(R * row_bytes), &strided));
      MPI_CHECK(MPI_Type_commit(&strided));
      MPI_CHECK(MPI_Iallgather(i->ptr(), n, type, dst, 1, strided, comm, r));
      MPI_CHECK(MPI_Type_free(&strided));  // pending calls keep what they use (MPI 4.0, 5.1.12)
      MPI_CHECK(MPI_Type_free(&rows));
    });
    a.finish = [i, out] {};
  } else {
    const size_t block = size_t(q * row_bytes);
    auto stage = std::shared_ptr<void>(StagingPool::get().acquire(block * size_t(size_)),
                                       [bytes = block * size_t(size_)](void* p) { StagingPool::get().release(p, bytes); });
    a.start = staged(i, [=](MPI_Request* r) { MPI_CHECK(MPI_Iallgather(i->ptr(), n, type, stage.get(), n, type, comm, r)); });
    a.finish = [i, out, stage, block, R, row0, row_bytes, ranks = size_] {
      for (int j = 0; j < ranks; ++j)
        copy_bytes(static_cast<char*>(const_cast<void*>(out.raw())) + (j * R + row0) * row_bytes, out.device(),
                   static_cast<char*>(stage.get()) + size_t(j) * block, Device::CPU, block);
    };
  }
  return post(std::move(a), {&out, &in}, "all_gather");
}

RequestPtr MpiCommunicator::ireduce_scatter(Tensor& out, const Tensor& in) {
  PB_REQUIRE(in.numel() == out.numel() * size_, "ireduce_scatter: input ", in.shape_str(), " is not ", size_,
             " x output ", out.shape_str());
  if (size_ == 1) {
    copy(out, in);
    return std::make_unique<DoneRequest>();
  }
  CommLedger::get().record(name_, CommOp::ReduceScatter, size_, int64_t(in.bytes()));
  auto i = std::make_shared<HostView>(in), o = std::make_shared<HostView>(out);
  const int n = count(out);
  const MPI_Datatype type = mpi_type(in);
  const MPI_Op mop = mpi_op(in, ReduceOp::Sum);
  const MPI_Comm comm = comm_;
  AsyncOp a;
  a.start = staged(i, [=](MPI_Request* r) {
    MPI_CHECK(MPI_Ireduce_scatter_block(i->ptr(), o->ptr(), n, type, mop, comm, r));
  });
  a.finish = [i, o] { o->copy_out(); };
  return post(std::move(a), {&out, &in}, "reduce_scatter");
}

// MPI's in-place reduce-scatter leaves the rank's block at the front of the buffer: moved
// to its place (block r) once it completed, before the staged copy back.
RequestPtr MpiCommunicator::ireduce_scatter_in_place(Tensor& buf) {
  PB_REQUIRE(buf.numel() % size_ == 0, "ireduce_scatter_in_place: ", buf.shape_str(), " does not divide by ", size_);
  if (size_ == 1) return std::make_unique<DoneRequest>();
  CommLedger::get().record(name_, CommOp::ReduceScatter, size_, int64_t(buf.bytes()));
  auto b = std::make_shared<HostView>(buf);
  const int n = count(buf) / size_;
  const MPI_Datatype type = mpi_type(buf);
  const MPI_Op mop = mpi_op(buf, ReduceOp::Sum);
  const MPI_Comm comm = comm_;
  const size_t block = buf.bytes() / size_t(size_), at = block * size_t(rank_);
  AsyncOp a;
  a.start = staged(b, [=](MPI_Request* r) {
    MPI_CHECK(MPI_Ireduce_scatter_block(MPI_IN_PLACE, b->ptr(), n, type, mop, comm, r));
  });
  a.finish = [b, block, at] {
    char* p = static_cast<char*>(b->ptr());
    if (at) std::memcpy(p + at, p, block);
    b->copy_out();
  };
  return post(std::move(a), {&buf}, "reduce_scatter");
}

RequestPtr MpiCommunicator::isend(const Tensor& buf, int peer, int tag) {
  CommLedger::get().record(name_, CommOp::Send, size_, int64_t(buf.bytes()));
  auto b = std::make_shared<HostView>(buf);
  const int n = count(buf);
  const MPI_Datatype type = mpi_type(buf);
  const MPI_Comm comm = comm_;
  AsyncOp a;
  a.start = staged(b, [=](MPI_Request* r) {
    MPI_CHECK(MPI_Isend(b->ptr(), n, type, peer, tag, comm, r));
  });
  a.finish = [b] {};
  return post(std::move(a), {&buf}, "send");
}

RequestPtr MpiCommunicator::irecv(Tensor& buf, int peer, int tag) {
  CommLedger::get().record(name_, CommOp::Recv, size_, int64_t(buf.bytes()));
  auto b = std::make_shared<HostView>(buf);
  const int n = count(buf);
  const MPI_Datatype type = mpi_type(buf);
  const MPI_Comm comm = comm_;
  AsyncOp a;
  a.start = staged(nullptr, [=](MPI_Request* r) {
    MPI_CHECK(MPI_Irecv(b->ptr(), n, type, peer, tag, comm, r));
  });
  a.finish = [b] { b->copy_out(); };
  return post(std::move(a), {&buf}, "recv");
}

// Posted together, waited together: paired exchanges cannot deadlock. A blocking call:
// after the worker drained, every send and receive is started here and waited for here
// (no thread hand-off on the pipeline's critical path).
void MpiCommunicator::batch_p2p(const std::vector<P2POp>& ops) {
  const TimedSpan timed(SpanKind::Blocking, "batch_p2p", name_);
  drain();
  std::vector<MPI_Request> reqs;
  std::vector<std::unique_ptr<HostView>> views;
  for (const auto& op : ops) {
    PhaseScope phase(op.phase);
    const Tensor& t = *op.buf;
    CommLedger::get().record(name_, op.send ? CommOp::Send : CommOp::Recv, size_, int64_t(t.bytes()));
    views.push_back(std::make_unique<HostView>(t));
    HostView& v = *views.back();
    reqs.emplace_back();
    if (op.send) {
      v.copy_in();
      MPI_CHECK(MPI_Isend(v.ptr(), count(t), mpi_type(t), op.peer, op.tag, comm_, &reqs.back()));
    } else {
      MPI_CHECK(MPI_Irecv(v.ptr(), count(t), mpi_type(t), op.peer, op.tag, comm_, &reqs.back()));
    }
  }
  MPI_CHECK(MPI_Waitall(int(reqs.size()), reqs.data(), MPI_STATUSES_IGNORE));
  for (size_t i = 0; i < ops.size(); ++i)
    if (!ops[i].send) views[i]->copy_out();
}

// Each transfer posted on the worker in order (it progresses them together): the same
// pairing as batch_p2p, with the caller free until it waits.
RequestPtr MpiCommunicator::ibatch_p2p(const std::vector<P2POp>& ops) {
  std::vector<RequestPtr> all;
  for (const auto& op : ops) {
    PhaseScope phase(op.phase);
    all.push_back(op.send ? isend(*op.buf, op.peer, op.tag) : irecv(*op.buf, op.peer, op.tag));
  }
  return std::make_unique<Requests>(std::move(all));
}

void MpiCommunicator::barrier() {
  const TimedSpan timed(SpanKind::Blocking, "barrier", name_);
  drain();
  MPI_CHECK(MPI_Barrier(comm_));
}

double MpiCommunicator::all_reduce_scalar(double v, ReduceOp op) {
  if (size_ == 1) return v;
  const TimedSpan timed(SpanKind::Blocking, "all_reduce_scalar", name_);
  drain();
  CommLedger::get().record(name_, CommOp::AllReduce, size_, 8);
  double out = 0;
  MPI_CHECK(MPI_Allreduce(&v, &out, 1, MPI_DOUBLE, op == ReduceOp::Sum ? MPI_SUM : MPI_MAX, comm_));
  return out;
}

void MpiCommunicator::send_scalar(double v, int peer, int tag) {
  const TimedSpan timed(SpanKind::Blocking, "send_scalar", name_);
  drain();
  CommLedger::get().record(name_, CommOp::Send, size_, 8);
  MPI_CHECK(MPI_Send(&v, 1, MPI_DOUBLE, peer, tag, comm_));
}

double MpiCommunicator::recv_scalar(int peer, int tag) {
  const TimedSpan timed(SpanKind::Blocking, "recv_scalar", name_);
  drain();
  CommLedger::get().record(name_, CommOp::Recv, size_, 8);
  double v = 0;
  MPI_CHECK(MPI_Recv(&v, 1, MPI_DOUBLE, peer, tag, comm_, MPI_STATUS_IGNORE));
  return v;
}

}  // namespace pb
