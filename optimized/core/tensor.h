/* Tensor of the optimized path: shape, dtype, device and a category, over storage from
 * the tracking allocator; owning, or a view sharing another tensor's storage.
 *
 * Row-major, contiguous. Activations are 2-D [tokens, features] with token row
 * t = b*S + s, as in the reference (reference/common/tensor.h).
 *
 * Streams: the storage is allocated for the current stream of its device; a tensor that
 * other streams use (a communication stream) is marked with record_stream(s), so that
 * its block is not handed out again before s's work on it is done (core/allocator.h).
 * CPU worker-stream closures hold Tensor copies, which keep the storage alive.
 */
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "optimized/core/allocator.h"

namespace pb {

enum class DType { F32, BF16 };
Device current_device();  // = default_device() of core/device.h
size_t dtype_bytes(DType d);
const char* dtype_name(DType d);

// bfloat16 <-> float on the host: round to nearest, ties to even (as __float2bfloat16_rn);
// NaN stays NaN.
uint16_t float_to_bf16(float f);
float bf16_to_float(uint16_t b);

class Tensor {
 public:
  Tensor() = default;
  // On `dev`, by default the current default device (core/device.h), so that technique code
  // allocates wherever the runner put the model.
  static Tensor empty(std::vector<int64_t> shape, MemCategory cat, DType dt = DType::F32, Device dev = current_device());
  static Tensor zeros(std::vector<int64_t> shape, MemCategory cat, DType dt = DType::F32, Device dev = current_device());

  bool defined() const { return bool(st_); }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_[size_t(i)]; }
  int64_t rows() const { return shape_.empty() ? 0 : shape_[0]; }
  int64_t cols() const { return numel() / (rows() ? rows() : 1); }  // product of the trailing dims
  int64_t numel() const;
  size_t bytes() const { return size_t(numel()) * dtype_bytes(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  MemCategory category() const;

  // Typed pointers into the tensor's memory, host or device (F32 tensors).
  float* f32();
  const float* f32() const;
  void* raw() { return static_cast<char*>(base()) + offset_ * int64_t(dtype_bytes(dtype_)); }
  const void* raw() const { return const_cast<Tensor*>(this)->raw(); }

  // A view of numel(shape) elements starting at element `offset` of this tensor.
  Tensor view(int64_t offset, std::vector<int64_t> shape) const;
  // Rows r0 .. r0+n-1 of a tensor seen as [rows, cols].
  Tensor slice_rows(int64_t r0, int64_t n) const;
  // The same bytes seen as another dtype: numel(shape) elements of dt starting `byte_offset`
  // bytes into this tensor (reuse-fp32-param's bf16 view of the fp32 master buffer).
  Tensor reinterpret(DType dt, int64_t byte_offset, std::vector<int64_t> shape) const;

  uint16_t* bf16_bits();  // BF16 tensors: the raw 16-bit patterns
  const uint16_t* bf16_bits() const;

  std::string shape_str() const;

  // Marks the storage as used by work queued on s (resolved on this tensor's device): on
  // CUDA the block is kept from reuse until that work completed (as PyTorch's
  // record_stream). Nothing to do for the allocation stream or on the CPU.
  void record_stream(const Stream& s) const;

 private:
  struct Storage;
  void* base() const;
  std::shared_ptr<Storage> st_;
  int64_t offset_ = 0;
  std::vector<int64_t> shape_;
  DType dtype_ = DType::F32;
  Device device_ = Device::CPU;
};

}  // namespace pb
