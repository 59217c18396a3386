/* Tensor storage through the tracking allocator. */
#include "optimized/core/tensor.h"

#include <cstring>

#include "optimized/core/device.h"
#include "reference/common/error.h"

namespace pb {

Device current_device() { return default_device(); }

size_t dtype_bytes(DType d) { return d == DType::F32 ? 4 : 2; }
const char* dtype_name(DType d) { return d == DType::F32 ? "fp32" : "bf16"; }

static TrackingAllocator& allocator(Device d) {
  return d == Device::CPU ? TrackingAllocator::host() : TrackingAllocator::device();
}

struct Tensor::Storage {
  void* ptr = nullptr;
  size_t bytes = 0;
  MemCategory cat = MemCategory::Workspace;
  Device dev = Device::CPU;
  Storage(size_t b, MemCategory c, Device d) : ptr(allocator(d).allocate(b, c)), bytes(b), cat(c), dev(d) {}
  ~Storage() { allocator(dev).release(ptr, bytes, cat); }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

Tensor Tensor::empty(std::vector<int64_t> shape, MemCategory cat, DType dt, Device dev) {
  Tensor t;
  t.shape_ = std::move(shape);
  for (int64_t d : t.shape_) PB_REQUIRE(d >= 0, "tensor: negative dimension in ", t.shape_str());
  t.dtype_ = dt;
  t.device_ = dev;
  t.st_ = std::make_shared<Storage>(t.bytes(), cat, dev);
  return t;
}

Tensor Tensor::zeros(std::vector<int64_t> shape, MemCategory cat, DType dt, Device dev) {
  Tensor t = empty(std::move(shape), cat, dt, dev);
  fill_zero(t.raw(), dev, t.bytes());
  return t;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

MemCategory Tensor::category() const { return st_ ? st_->cat : MemCategory::Workspace; }

void* Tensor::base() const { return st_ ? st_->ptr : nullptr; }

float* Tensor::f32() {
  PB_REQUIRE(dtype_ == DType::F32, "tensor: f32() on a ", dtype_name(dtype_), " tensor");
  return static_cast<float*>(raw());
}
const float* Tensor::f32() const { return const_cast<Tensor*>(this)->f32(); }

Tensor Tensor::view(int64_t offset, std::vector<int64_t> shape) const {
  Tensor t = *this;
  t.offset_ = offset_ + offset;
  t.shape_ = std::move(shape);
  PB_REQUIRE(offset >= 0 && offset + t.numel() <= numel(), "tensor: view ", t.shape_str(), " at ", offset,
             " outside ", shape_str());
  return t;
}

Tensor Tensor::slice_rows(int64_t r0, int64_t n) const {
  std::vector<int64_t> s = shape_;
  s[0] = n;
  return view(r0 * cols(), s);
}

std::string Tensor::shape_str() const {
  std::string s = "[";
  for (size_t i = 0; i < shape_.size(); ++i) s += (i ? ", " : "") + std::to_string(shape_[i]);
  return s + "]";
}

}  // namespace pb
