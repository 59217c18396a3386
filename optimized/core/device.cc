/* Device selection and cross-device copies (see device.h). */
#include "optimized/core/device.h"

#include <atomic>
#include <chrono>
#include <cstring>

#include "reference/common/error.h"
#ifdef PB_WITH_CUDA
#include <cuda_runtime_api.h>

#include "optimized/core/cuda_check.h"
#endif

namespace pb {

static std::atomic<Device> g_default{Device::CPU};  // read by worker threads too

double host_clock_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
static double host_now_ms() { return host_clock_ms(); }

Device default_device() { return g_default; }
void set_default_device(Device d) { g_default = d; }

#ifdef PB_WITH_CUDA
bool cuda_built() { return true; }

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

void cuda_select_device(int local_rank) {
  const int n = cuda_device_count();
  PB_REQUIRE(n > 0, "backend cuda: no CUDA device is visible on this machine");
  CUDA_CHECK(cudaSetDevice(local_rank % n));
}

std::string cuda_device_name() {
  if (cuda_device_count() == 0) return "";
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp p{};
  CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
  return std::string(p.name) + " (sm_" + std::to_string(p.major) + std::to_string(p.minor) + ", " +
         std::to_string(p.multiProcessorCount) + " SMs)";
}

std::string cuda_versions() {
  int rt = 0, drv = 0;
  cudaRuntimeGetVersion(&rt);
  cudaDriverGetVersion(&drv);
  auto v = [](int x) { return std::to_string(x / 1000) + "." + std::to_string((x % 1000) / 10); };
  return "CUDA runtime " + v(rt) + ", driver " + (drv ? v(drv) : std::string("none"));
}

static cudaStream_t cuda_of(const Stream& s) { return static_cast<cudaStream_t>(s.cuda_stream()); }

void copy_bytes(void* dst, Device dd, const void* src, Device sd, size_t bytes) {
  if (!bytes) return;
  if (dd == Device::CPU && sd == Device::CPU) {
    current_stream(Device::CPU).synchronize();  // a worker stream's queued writes first
    std::memcpy(dst, src, bytes);
    return;
  }
  const cudaStream_t s = cuda_of(current_stream(Device::CUDA));
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, s));
  if (dd == Device::CPU || sd == Device::CPU) CUDA_CHECK(cudaStreamSynchronize(s));  // device to device: ordered
}

void copy_bytes_async(void* dst, Device dd, const void* src, Device sd, size_t bytes, const Stream& stream) {
  if (!bytes) return;
  if (dd == Device::CPU && sd == Device::CPU) {
    stream.resolve(Device::CPU).enqueue([=] { std::memcpy(dst, src, bytes); });
    return;
  }
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, cuda_of(stream.resolve(Device::CUDA))));
}

void fill_zero(void* dst, Device dev, size_t bytes) {
  if (!bytes) return;
  if (dev == Device::CPU)
    std::memset(dst, 0, bytes);
  else
    CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, cuda_of(current_stream(Device::CUDA))));
}

void synchronize(Device dev) {
  if (dev == Device::CUDA)
    CUDA_CHECK(cudaDeviceSynchronize());
  else
    synchronize_cpu_streams();
}

DeviceMark::DeviceMark(Device d) : dev_(d) {
  if (dev_ == Device::CUDA) {
    cudaEvent_t e;
    CUDA_CHECK(cudaEventCreate(&e));
    event_ = e;
  }
}
DeviceMark::~DeviceMark() {
  if (event_) cudaEventDestroy(static_cast<cudaEvent_t>(event_));
}
void DeviceMark::record() {
  if (dev_ == Device::CUDA)
    CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event_), cuda_of(current_stream(Device::CUDA))));
  else
    host_ms_ = host_now_ms();
}
double DeviceMark::ms_since(const DeviceMark& earlier) const {
  PB_REQUIRE(dev_ == earlier.dev_, "DeviceMark: marks of different devices");
  if (dev_ != Device::CUDA) return host_ms_ - earlier.host_ms_;
  CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event_)));
  float ms = 0;
  CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(earlier.event_), static_cast<cudaEvent_t>(event_)));
  return double(ms);
}
#else
bool cuda_built() { return false; }
int cuda_device_count() { return 0; }
void cuda_select_device(int) { throw Error("backend cuda: this build has no CUDA backend (no CUDA toolkit at configure time)"); }
std::string cuda_device_name() { return ""; }
std::string cuda_versions() { return ""; }

void copy_bytes(void* dst, Device dd, const void* src, Device sd, size_t bytes) {
  PB_REQUIRE(dd == Device::CPU && sd == Device::CPU, "copy: this build has no CUDA backend");
  if (!bytes) return;
  current_stream(Device::CPU).synchronize();  // a worker stream's queued writes first
  std::memcpy(dst, src, bytes);
}

void copy_bytes_async(void* dst, Device dd, const void* src, Device sd, size_t bytes, const Stream& stream) {
  PB_REQUIRE(dd == Device::CPU && sd == Device::CPU, "copy: this build has no CUDA backend");
  if (bytes) stream.resolve(Device::CPU).enqueue([=] { std::memcpy(dst, src, bytes); });
}

void fill_zero(void* dst, Device dev, size_t bytes) {
  PB_REQUIRE(dev == Device::CPU, "fill: this build has no CUDA backend");
  if (bytes) std::memset(dst, 0, bytes);
}

void synchronize(Device dev) {
  if (dev == Device::CPU) synchronize_cpu_streams();
}

DeviceMark::DeviceMark(Device d) : dev_(d) {
  PB_REQUIRE(d == Device::CPU, "DeviceMark: this build has no CUDA backend");
}
DeviceMark::~DeviceMark() = default;
void DeviceMark::record() { host_ms_ = host_now_ms(); }
double DeviceMark::ms_since(const DeviceMark& earlier) const { return host_ms_ - earlier.host_ms_; }
#endif

DeviceMark::DeviceMark(DeviceMark&& o) noexcept : dev_(o.dev_), host_ms_(o.host_ms_), event_(o.event_) {
  o.event_ = nullptr;
}

Tensor to_device(const Tensor& t, Device d) {
  Tensor out = Tensor::empty(t.shape(), t.category(), t.dtype(), d);
  copy_bytes(out.raw(), d, t.raw(), t.device(), t.bytes());
  return out;
}

}  // namespace pb
