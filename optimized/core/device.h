/* Devices: the default device that technique code allocates on (set by the runner, so
 * that model code stays device-agnostic), CUDA discovery and selection, and copies
 * between host and device memory. Streams and events (Stream, Event, current_stream,
 * StreamScope) are in core/stream.h, included here.
 *
 * Without a CUDA build, cuda_device_count() is 0 and any CUDA request fails with one
 * clear line.
 */
#pragma once

#include <cstddef>
#include <string>

#include "optimized/core/stream.h"
#include "optimized/core/tensor.h"

namespace pb {

Device default_device();
void set_default_device(Device d);

class DeviceScope {
 public:
  explicit DeviceScope(Device d) : prev_(default_device()) { set_default_device(d); }
  ~DeviceScope() { set_default_device(prev_); }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  Device prev_;
};

// The host's steady clock in milliseconds (the time base of spans and CPU device marks).
double host_clock_ms();

bool cuda_built();
int cuda_device_count();  // 0 without CUDA or without a GPU
// Selects GPU local_rank % count for this process; throws if there is none.
void cuda_select_device(int local_rank);
std::string cuda_device_name();  // "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs)"; "" without CUDA
std::string cuda_versions();     // "CUDA runtime 13.0, driver 13.0"; "" without CUDA

// Copies between any two devices (host-host, host-device, device-host, device-device),
// complete on return (device to device: ordered on the current CUDA stream). CUDA copies
// run on the current CUDA stream, synchronized when host memory is involved.
void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes);
// The same copy queued on `stream` (CUDA: cudaMemcpyAsync; host memory should be pinned
// and must stay valid until the stream reached the copy; a CPU worker stream runs the
// memcpy in its queue; the inline CPU stream copies at once).
void copy_bytes_async(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes, const Stream& stream);
// Zeroes device memory (CUDA: queued on the current stream).
void fill_zero(void* dst, Device dev, size_t bytes);
// Waits for the device's queued work (CUDA: cudaDeviceSynchronize; CPU: the queues of the
// created worker streams), so that host clocks time what ran (step times).
void synchronize(Device dev);

// A point in a device's queue of work, for timelines of asynchronous work without stalling
// it: on the CPU the host clock when recorded; on CUDA an event recorded on the default
// current stream (cudaEventRecord), read once the work has completed. ms_since(earlier) is the
// time between two marks of the same device; on CUDA it synchronizes on this mark first.
class DeviceMark {
 public:
  explicit DeviceMark(Device d);
  ~DeviceMark();
  DeviceMark(DeviceMark&& o) noexcept;
  DeviceMark(const DeviceMark&) = delete;
  DeviceMark& operator=(const DeviceMark&) = delete;
  DeviceMark& operator=(DeviceMark&&) = delete;
  void record();
  double ms_since(const DeviceMark& earlier) const;

 private:
  Device dev_;
  double host_ms_ = 0;     // CPU: steady clock, milliseconds
  void* event_ = nullptr;  // CUDA: cudaEvent_t
};
// A copy of t on device d (same shape, dtype and category).
Tensor to_device(const Tensor& t, Device d);

}  // namespace pb
