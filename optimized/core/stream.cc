/* Streams and events on the CPU (inline default stream, worker threads) and on CUDA
 * (cudaStream_t, cudaEvent_t); see stream.h. */
#include "optimized/core/stream.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "reference/common/error.h"
#ifdef PB_WITH_CUDA
#include <cuda_runtime_api.h>

#include "optimized/core/cuda_check.h"
#endif

namespace pb {

namespace {

std::atomic<uint64_t> g_next_stream_id{1};

// The worker of a created CPU stream: one thread running closures in queue order. The
// thread shares the queue's state, so a stream whose last handle dies inside one of its
// own closures still finishes (the thread is detached then, not joined).
class Worker {
 public:
  Worker() : state_(std::make_shared<State>()), thread_([s = state_] { s->loop(); }) {}
  ~Worker() {
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->stop = true;
    }
    state_->wake.notify_all();
    if (thread_.get_id() == std::this_thread::get_id())
      thread_.detach();
    else
      thread_.join();  // runs what is still queued first
  }
  void push(std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->queue.push_back(std::move(fn));
    }
    state_->wake.notify_one();
  }
  // Waits until everything queued so far has run; rethrows a closure's exception.
  void drain() {
    State& s = *state_;
    std::unique_lock<std::mutex> lock(s.mu);
    s.idle.wait(lock, [&] { return s.queue.empty() && !s.busy; });
    if (s.error) std::rethrow_exception(std::exchange(s.error, nullptr));
  }

 private:
  struct State {
    std::mutex mu;
    std::condition_variable wake, idle;
    std::deque<std::function<void()>> queue;
    bool busy = false, stop = false;
    std::exception_ptr error;

    void loop() {
      for (;;) {
        std::function<void()> fn;
        {
          std::unique_lock<std::mutex> lock(mu);
          wake.wait(lock, [&] { return stop || !queue.empty(); });
          if (queue.empty()) return;  // stopped and drained
          fn = std::move(queue.front());
          queue.pop_front();
          busy = true;
        }
        try {
          fn();
        } catch (...) {
          std::lock_guard<std::mutex> lock(mu);
          if (!error) error = std::current_exception();
        }
        fn = nullptr;  // the closure's captures (tensor storage) die before the queue counts as done
        {
          std::lock_guard<std::mutex> lock(mu);
          busy = false;
          if (queue.empty()) idle.notify_all();
        }
      }
    }
  };
  std::shared_ptr<State> state_;
  std::thread thread_;
};

// The live CPU worker streams, so that synchronize(Device::CPU) can drain them all.
std::mutex g_workers_mu;
std::vector<std::weak_ptr<Stream::Impl>> g_workers;

}  // namespace

struct Stream::Impl {
  Device dev = Device::CPU;
  bool is_default = true;
  uint64_t id = 0;
  void* cuda = nullptr;            // cudaStream_t of a created CUDA stream
  std::unique_ptr<Worker> worker;  // created CPU stream
  ~Impl() {
#ifdef PB_WITH_CUDA
    if (cuda) cudaStreamDestroy(static_cast<cudaStream_t>(cuda));  // unchecked: may run at exit
#endif
  }
};

const Stream::Impl& Stream::impl() const {
  PB_REQUIRE(impl_, "stream: the placeholder Stream{} names no stream here (resolve it on a device first)");
  return *impl_;
}

Stream Stream::default_stream(Device d) {
  static const Stream cpu = [] {
    auto i = std::make_shared<Impl>();
    i->id = g_next_stream_id++;
    return Stream(i);
  }();
  static const Stream cuda = [] {
    auto i = std::make_shared<Impl>();
    i->dev = Device::CUDA;
    i->id = g_next_stream_id++;
    return Stream(i);
  }();
  return d == Device::CPU ? cpu : cuda;
}

Stream Stream::create(Device d) {
  auto i = std::make_shared<Impl>();
  i->dev = d;
  i->is_default = false;
  i->id = g_next_stream_id++;
  if (d == Device::CPU) {
    i->worker = std::make_unique<Worker>();
    std::lock_guard<std::mutex> lock(g_workers_mu);
    std::erase_if(g_workers, [](const auto& w) { return w.expired(); });
    g_workers.push_back(i);
  } else {
#ifdef PB_WITH_CUDA
    cudaStream_t s;
    CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    i->cuda = s;
#else
    throw Error("stream: this build has no CUDA backend");
#endif
  }
  return Stream(i);
}

Stream Stream::resolve(Device d) const { return impl_ ? *this : current_stream(d); }
Device Stream::device() const { return impl().dev; }
bool Stream::is_default() const { return impl().is_default; }
bool Stream::runs_inline() const { return impl().dev == Device::CPU && impl().is_default; }
uint64_t Stream::id() const { return impl().id; }
void* Stream::cuda_stream() const { return impl().cuda; }

void Stream::enqueue(std::function<void()> fn) const {
  PB_REQUIRE(impl().dev == Device::CPU, "stream: enqueue of host closures is for CPU streams");
  if (impl().worker)
    impl().worker->push(std::move(fn));
  else
    fn();
}

void Stream::synchronize() const {
  if (impl().dev == Device::CPU) {
    if (impl().worker) impl().worker->drain();
    return;
  }
#ifdef PB_WITH_CUDA
  CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(impl().cuda)));
#endif
}

// ---- current streams (per thread, per device) ----

namespace {
thread_local Stream tl_current[2];  // placeholders: the default stream
}

Stream current_stream(Device d) {
  const Stream& s = tl_current[int(d)];
  return s.defined() ? s : Stream::default_stream(d);
}

StreamScope::StreamScope(const Stream& s, Device d) : dev_(s.defined() ? s.device() : d), prev_(tl_current[int(dev_)]) {
  if (s.defined()) tl_current[int(dev_)] = s;
}
StreamScope::~StreamScope() { tl_current[int(dev_)] = prev_; }

// ---- events ----

// CPU: generations. record() numbers the recorded point; a closure queued behind the
// stream's work marks it complete. CUDA: a cudaEvent_t without timing.
struct Event::Impl {
  Device dev = Device::CPU;
  std::mutex mu;
  std::condition_variable cv;
  uint64_t recorded = 0, completed = 0;
  void* cuda = nullptr;

  void complete(uint64_t gen) {
    {
      std::lock_guard<std::mutex> lock(mu);
      completed = std::max(completed, gen);
    }
    cv.notify_all();
  }
  void wait_for(uint64_t gen) {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return completed >= gen; });
  }
  uint64_t last() {
    std::lock_guard<std::mutex> lock(mu);
    return recorded;
  }
  ~Impl() {
#ifdef PB_WITH_CUDA
    if (cuda) cudaEventDestroy(static_cast<cudaEvent_t>(cuda));  // unchecked: may run at exit
#endif
  }
};

Event::Event(Device d) : impl_(std::make_shared<Impl>()) {
  impl_->dev = d;
  if (d == Device::CUDA) {
#ifdef PB_WITH_CUDA
    cudaEvent_t e;
    CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    impl_->cuda = e;
#else
    throw Error("event: this build has no CUDA backend");
#endif
  }
}

Device Event::device() const { return impl_->dev; }
void* Event::cuda_event() const { return impl_->cuda; }

void Event::record(const Stream& stream) {
  const Stream s = stream.resolve(impl_->dev);
  PB_REQUIRE(s.device() == impl_->dev, "event: recorded on a stream of another device");
  if (impl_->dev == Device::CUDA) {
#ifdef PB_WITH_CUDA
    CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(impl_->cuda), static_cast<cudaStream_t>(s.cuda_stream())));
#endif
    return;
  }
  uint64_t gen;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    gen = ++impl_->recorded;
  }
  if (s.runs_inline()) {
    impl_->complete(gen);  // everything before it already ran on this thread
    return;
  }
  s.enqueue([i = impl_, gen] { i->complete(gen); });
}

bool Event::query() const {
  if (impl_->dev == Device::CUDA) {
#ifdef PB_WITH_CUDA
    const cudaError_t e = cudaEventQuery(static_cast<cudaEvent_t>(impl_->cuda));
    if (e == cudaErrorNotReady) {
      cudaGetLastError();  // not an error: clear it
      return false;
    }
    CUDA_CHECK(e);
#endif
    return true;
  }
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->completed >= impl_->recorded;
}

void Event::synchronize() const {
  if (impl_->dev == Device::CUDA) {
#ifdef PB_WITH_CUDA
    CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(impl_->cuda)));
#endif
    return;
  }
  impl_->wait_for(impl_->last());
}

void Stream::wait(const Event& e) const {
  const Impl& s = impl();
  if (s.dev == Device::CUDA && e.device() == Device::CUDA) {
#ifdef PB_WITH_CUDA
    CUDA_CHECK(cudaStreamWaitEvent(static_cast<cudaStream_t>(s.cuda), static_cast<cudaEvent_t>(e.cuda_event()), 0));
#endif
    return;
  }
  if (s.dev == Device::CPU && s.worker) {  // the worker waits in its queue; the host goes on
    if (e.device() == Device::CUDA)
      s.worker->push([e] { e.synchronize(); });
    else  // the point recorded by now, not a later record()
      s.worker->push([i = e.impl_, gen = e.impl_->last()] { i->wait_for(gen); });
    return;
  }
  e.synchronize();  // the inline CPU stream, or a CUDA stream behind a CPU event: the host waits
}

// ---- device-wide synchronization of the CPU streams ----

void synchronize_cpu_streams() {
  std::vector<std::shared_ptr<Stream::Impl>> live;
  {
    std::lock_guard<std::mutex> lock(g_workers_mu);
    for (const auto& w : g_workers)
      if (auto p = w.lock()) live.push_back(std::move(p));
  }
  for (const auto& p : live) p->worker->drain();
}

}  // namespace pb
