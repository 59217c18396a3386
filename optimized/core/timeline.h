/* A rank's timeline of compute and communication (issue: communication overlap): spans on
 * the host clock (core/device.h host_clock_ms), recorded while a step runs, from which the
 * hidden fraction of its communication follows.
 *
 *   Compute   a block's forward or backward, a W, the optimizer step (the caller's thread;
 *             a blocking collective inside a block is inside its span)
 *   Blocking  a blocking communication call on the caller's thread (the wait for what the
 *             communicator had posted before included): communicating and blocked at once
 *   Async     a non-blocking call in flight: from its post to its completion (MPI: completed
 *             on the communicator's worker thread, which starts the calls in post order)
 *   Wait      the caller blocked in Request::wait()
 * Communication time C = |union of Blocking and Async spans|; exposed X = |C intersected
 * with the union of Blocking and Wait spans| (communication while the caller could not
 * compute); hidden fraction = 1 - X / C (0 when there is no communication). On the CPU
 * backend the spans are host-clock times; on CUDA they are the host's view of the
 * launches and waits, not device times (NCCL calls run on streams: not recorded yet).
 */
#pragma once

#include <atomic>
#include <mutex>
#include <string>
#include <vector>

namespace pb {

enum class SpanKind { Compute, Blocking, Async, Wait };
const char* span_kind_name(SpanKind k);

struct TimeSpan {
  SpanKind kind = SpanKind::Compute;
  std::string name;
  double start_ms = 0, end_ms = 0;
};

struct CommTime {
  double total_ms = 0, exposed_ms = 0;
  double hidden_fraction() const { return total_ms > 0 ? 1.0 - exposed_ms / total_ms : 0.0; }
};
CommTime comm_time(const std::vector<TimeSpan>& spans);

// The process's recorder (one rank per process). Off until enabled; then add() keeps spans
// until take().
class Timeline {
 public:
  static Timeline& get();
  void enable(bool on);
  bool on() const { return on_; }
  void add(SpanKind kind, std::string name, double start_ms, double end_ms);
  std::vector<TimeSpan> take();  // the spans so far, emptied

 private:
  std::mutex mu_;
  std::atomic<bool> on_ = false;
  std::vector<TimeSpan> spans_;
};

// Records a span of the given kind from construction to destruction (when the timeline is
// on), named "who what" (the name is only composed then).
class TimedSpan {
 public:
  TimedSpan(SpanKind kind, const char* what, const std::string& who = {});
  ~TimedSpan();
  TimedSpan(const TimedSpan&) = delete;
  TimedSpan& operator=(const TimedSpan&) = delete;

 private:
  SpanKind kind_;
  std::string name_;
  double start_ = -1;
};

}  // namespace pb
