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

// The allocation stream is the current stream of the device; `used` the other streams
// that record_stream named (CUDA).
struct Tensor::Storage {
  void* ptr = nullptr;
  size_t bytes = 0;
  MemCategory cat = MemCategory::Workspace;
  Device dev = Device::CPU;
  Stream stream;
  std::vector<Stream> used;
  Storage(size_t b, MemCategory c, Device d)
      : ptr(nullptr), bytes(b), cat(c), dev(d), stream(d == Device::CUDA ? current_stream(d) : Stream()) {
    ptr = allocator(d).allocate(b, c, stream);
  }
  ~Storage() { allocator(dev).release(ptr, bytes, cat, stream, used); }
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

Tensor Tensor::reinterpret(DType dt, int64_t byte_offset, std::vector<int64_t> shape) const {
  Tensor t = *this;
  const int64_t es = int64_t(dtype_bytes(dt));
  const int64_t base = offset_ * int64_t(dtype_bytes(dtype_)) + byte_offset;
  PB_REQUIRE(base % es == 0, "tensor: reinterpret at byte ", byte_offset, " is not aligned to ", dtype_name(dt));
  t.dtype_ = dt;
  t.offset_ = base / es;
  t.shape_ = std::move(shape);
  PB_REQUIRE(byte_offset >= 0 && byte_offset + int64_t(t.bytes()) <= int64_t(bytes()), "tensor: reinterpret ",
             t.shape_str(), " ", dtype_name(dt), " at byte ", byte_offset, " outside ", shape_str());
  return t;
}

uint16_t* Tensor::bf16_bits() {
  PB_REQUIRE(dtype_ == DType::BF16, "tensor: bf16_bits() on a ", dtype_name(dtype_), " tensor");
  return static_cast<uint16_t*>(raw());
}
const uint16_t* Tensor::bf16_bits() const { return const_cast<Tensor*>(this)->bf16_bits(); }

uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);                                            // ties to even
  return uint16_t(u >> 16);
}

float bf16_to_float(uint16_t b) {
  const uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

Tensor Tensor::slice_rows(int64_t r0, int64_t n) const {
  std::vector<int64_t> s = shape_;
  s[0] = n;
  return view(r0 * cols(), s);
}

void Tensor::record_stream(const Stream& s) const {
  if (!st_ || st_->dev != Device::CUDA) return;
  const Stream r = s.resolve(st_->dev);
  if (r == st_->stream) return;
  for (const auto& u : st_->used)
    if (u == r) return;
  st_->used.push_back(r);
}

std::string Tensor::shape_str() const {
  std::string s = "[";
  for (size_t i = 0; i < shape_.size(); ++i) s += (i ? ", " : "") + std::to_string(shape_[i]);
  return s + "]";
}

}  // namespace pb
