/* The CPU kernels' thread pool (see parallel.h). One job at a time: the caller publishes
 * it, workers and caller take tasks from one atomic counter, the caller waits until the
 * last task has finished and every worker has left the job. */
#include "optimized/kernels/cpu/parallel.h"

#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "reference/common/error.h"

namespace pb::cpu {

namespace {

thread_local bool in_task = false;  // nested parallel_for runs inline

class Pool {
 public:
  ~Pool() { resize(1); }

  void resize(int n) {
    const std::lock_guard<std::mutex> busy(busy_);
    {
      const std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
    stop_ = false;
    for (int i = 1; i < n; ++i) workers_.emplace_back([this] { work(); });
    n_ = n;
  }
  int size() const { return n_; }

  // false: the pool is busy (another caller's job runs), the caller runs its tasks inline.
  bool run(int64_t tasks, const std::function<void(int64_t)>& fn) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    {
      const std::lock_guard<std::mutex> lk(m_);
      fn_ = &fn;
      tasks_ = tasks;
      next_.store(0);
      pending_ = tasks;
      error_ = nullptr;
      ++job_;
    }
    cv_.notify_all();
    const int64_t finished = take();
    std::unique_lock<std::mutex> lk(m_);
    pending_ -= finished;
    done_cv_.wait(lk, [&] { return pending_ == 0 && active_ == 0; });
    fn_ = nullptr;
    if (error_) std::rethrow_exception(error_);
    return true;
  }

 private:
  // Takes tasks until none is left; returns how many it ran.
  int64_t take() {
    in_task = true;
    int64_t finished = 0;
    for (int64_t t; (t = next_.fetch_add(1)) < tasks_; ++finished) {
      try {
        (*fn_)(t);
      } catch (...) {
        const std::lock_guard<std::mutex> lk(m_);
        if (!error_) error_ = std::current_exception();
      }
    }
    in_task = false;
    return finished;
  }
  // A worker joins a job only while it is published (fn_ set) and counts itself active
  // until it leaves it: the caller returns, and may publish the next job, only when every
  // task has run and no worker is still inside this one.
  void work() {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return stop_ || (job_ != seen && fn_); });
        if (stop_) return;
        seen = job_;
        ++active_;
      }
      const int64_t finished = take();
      const std::lock_guard<std::mutex> lk(m_);
      --active_;
      pending_ -= finished;
      if (pending_ == 0 && active_ == 0) done_cv_.notify_all();
    }
  }

  std::mutex busy_;  // one job (and no resize) at a time
  std::mutex m_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  int n_ = 1;
  bool stop_ = false;
  uint64_t job_ = 0;
  const std::function<void(int64_t)>* fn_ = nullptr;
  int64_t tasks_ = 0, pending_ = 0;
  int active_ = 0;
  std::atomic<int64_t> next_{0};
  std::exception_ptr error_;
};

Pool& pool() {
  static Pool p;
  return p;
}

}  // namespace

void set_threads(int n) {
  PB_REQUIRE(n >= 1 && n <= 1024, "threads: ", n, " (1 .. 1024)");
  if (n != pool().size()) pool().resize(n);
}

int threads() { return pool().size(); }

void parallel_for(int64_t tasks, const std::function<void(int64_t)>& fn) {
  if (tasks <= 0) return;
  if (tasks == 1 || in_task || pool().size() == 1 || !pool().run(tasks, fn))
    for (int64_t t = 0; t < tasks; ++t) fn(t);
}

}  // namespace pb::cpu
