/* A rank's timeline and the hidden fraction of its communication (see timeline.h). */
#include "optimized/core/timeline.h"

#include <algorithm>
#include <utility>

#include "optimized/core/device.h"

namespace pb {

const char* span_kind_name(SpanKind k) {
  switch (k) {
    case SpanKind::Compute: return "compute";
    case SpanKind::Blocking: return "comm";
    case SpanKind::Async: return "comm_async";
    case SpanKind::Wait: return "wait";
  }
  return "?";
}

namespace {
using Intervals = std::vector<std::pair<double, double>>;

Intervals merged(Intervals v) {  // sorted, disjoint
  std::sort(v.begin(), v.end());
  Intervals out;
  for (const auto& [a, b] : v) {
    if (b <= a) continue;
    if (!out.empty() && a <= out.back().second)
      out.back().second = std::max(out.back().second, b);
    else
      out.emplace_back(a, b);
  }
  return out;
}

double length(const Intervals& v) {
  double n = 0;
  for (const auto& [a, b] : v) n += b - a;
  return n;
}

double overlap(const Intervals& x, const Intervals& y) {  // both merged
  double n = 0;
  size_t i = 0, j = 0;
  while (i < x.size() && j < y.size()) {
    n += std::max(0.0, std::min(x[i].second, y[j].second) - std::max(x[i].first, y[j].first));
    if (x[i].second < y[j].second) ++i; else ++j;
  }
  return n;
}
}  // namespace

CommTime comm_time(const std::vector<TimeSpan>& spans) {
  Intervals comm, blocked;
  for (const auto& s : spans) {
    if (s.kind == SpanKind::Blocking || s.kind == SpanKind::Async) comm.emplace_back(s.start_ms, s.end_ms);
    if (s.kind == SpanKind::Blocking || s.kind == SpanKind::Wait) blocked.emplace_back(s.start_ms, s.end_ms);
  }
  const Intervals c = merged(std::move(comm)), b = merged(std::move(blocked));
  return {length(c), overlap(c, b)};
}

Timeline& Timeline::get() {
  static Timeline t;
  return t;
}

void Timeline::enable(bool on) {
  std::lock_guard<std::mutex> lock(mu_);
  on_ = on;
  spans_.clear(), marked_.clear(), base_.reset();
  if (on && current_device() == Device::CUDA) {  // the device clock's origin on the host clock
    base_ = std::make_shared<DeviceMark>(Device::CUDA);
    base_->record();
    base_->ms_since(*base_);  // waits for it
    base_ms_ = host_clock_ms();
  }
}

void Timeline::add_marks(SpanKind kind, std::string name, std::shared_ptr<DeviceMark> start,
                         std::shared_ptr<DeviceMark> end) {
  std::lock_guard<std::mutex> lock(mu_);
  if (on_ && base_) marked_.push_back({kind, std::move(name), std::move(start), std::move(end)});
}

void Timeline::add(SpanKind kind, std::string name, double start_ms, double end_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  if (on_) spans_.push_back({kind, std::move(name), start_ms, end_ms});
}

std::vector<TimeSpan> Timeline::take() {
  std::lock_guard<std::mutex> lock(mu_);
  for (const Marked& m : marked_)
    spans_.push_back({m.kind, m.name, base_ms_ + m.start->ms_since(*base_), base_ms_ + m.end->ms_since(*base_)});
  marked_.clear();
  return std::exchange(spans_, {});
}

TimedSpan::TimedSpan(SpanKind kind, const char* what, const std::string& who) : kind_(kind) {
  Timeline& t = Timeline::get();
  if (!t.on()) return;
  name_ = who.empty() ? std::string(what) : who + " " + what;
  if (t.device_timed() && kind == SpanKind::Compute) {  // (a blocking call is the host's: MPI's)
    mark_ = std::make_shared<DeviceMark>(Device::CUDA);
    mark_->record();  // on the current stream
    return;
  }
  start_ = host_clock_ms();
}

TimedSpan::~TimedSpan() {
  if (mark_) {
    auto end = std::make_shared<DeviceMark>(Device::CUDA);
    end->record();
    Timeline::get().add_marks(kind_, std::move(name_), std::move(mark_), std::move(end));
    return;
  }
  if (start_ >= 0) Timeline::get().add(kind_, std::move(name_), start_, host_clock_ms());
}

}  // namespace pb
