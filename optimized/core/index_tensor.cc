/* Index tensors: host values, and on CUDA a device copy uploaded once from pinned memory
 * (see index_tensor.h). */
#include "optimized/core/index_tensor.h"

#include <cstring>

#include "optimized/core/device.h"
#include "reference/common/error.h"

namespace pb {

struct IndexTensor::Impl {
  std::vector<int64_t> host;
  Device dev = Device::CPU;
  Tensor device;  // CUDA: the n int64 values as raw storage (2n 32-bit words)
  Stream upload;  // the stream the upload was queued on
  std::unique_ptr<Event> ready;
};

IndexTensor::IndexTensor(std::vector<int64_t> values, Device dev, const Stream& stream)
    : impl_(std::make_shared<Impl>()) {
  impl_->host = std::move(values);
  impl_->dev = dev;
  if (dev != Device::CUDA) return;
  const Stream s = stream.resolve(Device::CUDA);
  const size_t bytes = impl_->host.size() * sizeof(int64_t);
  {
    StreamScope on(s);  // the device block belongs to the upload stream
    impl_->device = Tensor::empty({int64_t(2 * impl_->host.size())}, MemCategory::Workspace, DType::F32, Device::CUDA);
  }
  impl_->upload = s;
  if (bytes) {
    void* pinned = PinnedPool::get().acquire(bytes);
    std::memcpy(pinned, impl_->host.data(), bytes);
    copy_bytes_async(impl_->device.raw(), Device::CUDA, pinned, Device::CPU, bytes, s);
    PinnedPool::get().release(pinned, bytes, s);  // reused once the copy has run
  }
  impl_->ready = std::make_unique<Event>(Device::CUDA);
  impl_->ready->record(s);
}

int64_t IndexTensor::size() const { return impl_ ? int64_t(impl_->host.size()) : 0; }
Device IndexTensor::device() const { return impl_ ? impl_->dev : Device::CPU; }

const std::vector<int64_t>& IndexTensor::host() const {
  static const std::vector<int64_t> empty;
  return impl_ ? impl_->host : empty;
}

const int64_t* IndexTensor::device_data(const Stream& stream) const {
  PB_REQUIRE(impl_ && impl_->dev == Device::CUDA, "index tensor: no device copy (a CPU index tensor)");
  const Stream s = stream.resolve(Device::CUDA);
  if (!(s == impl_->upload)) {
    s.wait(*impl_->ready);
    impl_->device.record_stream(s);
  }
  return static_cast<const int64_t*>(impl_->device.raw());
}

}  // namespace pb
