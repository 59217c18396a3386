/* Streams and events (DESIGN.md, "Streams"): in-order queues of device work, and points
 * in them that other queues and the host can wait for.
 *
 *   CPU   the default stream runs work inline on the calling thread (the behaviour of the
 *         code before streams, order for order); Stream::create(Device::CPU) owns a worker
 *         thread that runs enqueued closures in order, so overlap is real on the CPU too.
 *   CUDA  a cudaStream_t: the default stream is the legacy stream 0; created streams are
 *         non-blocking (they do not synchronize with stream 0, so they can overlap it).
 *
 * An Event records a point of a stream: event.record(stream), stream.wait(event) (CUDA:
 * on the device, the host does not block; a CPU worker waits in its queue; the inline CPU
 * stream waits on the host), event.query(), event.synchronize().
 *
 * Stream{} (the placeholder) means "the current stream of the device the work runs on":
 * ops take `const Stream& stream = {}` last. current_stream(dev) is per thread, the
 * default stream unless a StreamScope set another one.
 */
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

namespace pb {

enum class Device { CPU, CUDA };

class Event;

class Stream {
 public:
  Stream() = default;  // the placeholder: the current stream of the op's device
  static Stream default_stream(Device d);
  static Stream create(Device d);  // CPU: a worker thread; CUDA: a non-blocking cudaStream_t

  bool defined() const { return bool(impl_); }
  // *this, or for the placeholder the current stream of device d.
  Stream resolve(Device d) const;
  Device device() const;
  bool is_default() const;
  bool runs_inline() const;  // the CPU default stream: work runs on the calling thread
  uint64_t id() const;       // unique per stream of the process (the allocator's key)
  void* cuda_stream() const; // cudaStream_t (nullptr: the legacy default stream)

  // CPU streams: runs fn inline (default stream) or queues it on the worker. Whatever fn
  // uses must stay alive until it ran: capture Tensors by value. An exception thrown by a
  // queued closure is rethrown by the next synchronize().
  void enqueue(std::function<void()> fn) const;
  // Blocks the host until all work queued so far has completed.
  void synchronize() const;
  // Work queued on this stream after this call starts after the event's recorded work.
  void wait(const Event& e) const;

  friend bool operator==(const Stream& a, const Stream& b) { return a.impl_ == b.impl_; }

  struct Impl;

 private:
  explicit Stream(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  const Impl& impl() const;
  std::shared_ptr<Impl> impl_;
};

// The current stream of device d on this thread (the default stream unless a scope set one).
Stream current_stream(Device d);

// Makes s (resolved on device d) the current stream of its device for the scope.
class StreamScope {
 public:
  explicit StreamScope(const Stream& s, Device d = Device::CPU);
  ~StreamScope();
  StreamScope(const StreamScope&) = delete;
  StreamScope& operator=(const StreamScope&) = delete;

 private:
  Device dev_;
  Stream prev_;
};

// A point in a stream's queue. Copies share the event. An event never recorded counts as
// complete (as cudaEvent_t does).
class Event {
 public:
  explicit Event(Device d = Device::CPU);
  Device device() const;
  // Captures the work queued so far on s (the placeholder: the current stream of the
  // event's device).
  void record(const Stream& s = {});
  bool query() const;        // has the recorded work completed?
  void synchronize() const;  // blocks the host until it has
  void* cuda_event() const;  // cudaEvent_t of a CUDA event

  struct Impl;

 private:
  friend class Stream;
  std::shared_ptr<Impl> impl_;
};

// Blocks until the queues of every created CPU stream have run (synchronize(Device::CPU)).
void synchronize_cpu_streams();

}  // namespace pb
