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
 * backend the spans are host-clock times. On CUDA they are device times: a compute span is
 * two marks (CUDA events) on the current stream, an NCCL call's Async span two marks on the
 * communication stream around the call, its Wait span two marks on the waiting stream
 * around the stream's wait for it (how long that stream stalled); all are placed on the
 * host clock when taken, through a base mark recorded when the timeline was enabled; a
 * blocking call (MPI's, staged through the host) stays host-timed (unverified on a GPU).
 */
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace pb {

class DeviceMark;  // core/device.h

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
  // A device-timed span (CUDA): two recorded marks, placed on the host clock by take().
  void add_marks(SpanKind kind, std::string name, std::shared_ptr<DeviceMark> start, std::shared_ptr<DeviceMark> end);
  // Whether spans are device-timed: on, with the CUDA device current when it was enabled.
  bool device_timed() const { return on_ && base_ != nullptr; }
  std::vector<TimeSpan> take();  // the spans so far, emptied (device-timed ones: synchronizes)

 private:
  struct Marked {
    SpanKind kind;
    std::string name;
    std::shared_ptr<DeviceMark> start, end;
  };
  std::mutex mu_;
  std::atomic<bool> on_ = false;
  std::vector<TimeSpan> spans_;
  std::vector<Marked> marked_;
  std::shared_ptr<DeviceMark> base_;  // CUDA: recorded at enable(true), completed at base_ms_
  double base_ms_ = 0;
};

// Records a span of the given kind from construction to destruction (when the timeline is
// on), named "who what" (the name is only composed then); device-timed on CUDA.
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
  std::shared_ptr<DeviceMark> mark_;  // device-timed: the start mark
};

}  // namespace pb
