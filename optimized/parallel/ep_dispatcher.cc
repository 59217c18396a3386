/* Host <-> tensor helpers of the token dispatchers (see ep_dispatcher.h). */
#include "optimized/parallel/ep_dispatcher.h"

#include <algorithm>

#include "optimized/core/device.h"
#include "reference/common/error.h"

namespace pb {

std::vector<float> host_floats(const Tensor& t) {
  PB_REQUIRE(t.dtype() == DType::F32, "host_floats: an fp32 tensor expected, got ", dtype_name(t.dtype()));
  std::vector<float> v(static_cast<size_t>(t.numel()));
  if (t.device() == Device::CPU) {
    std::copy_n(t.f32(), t.numel(), v.begin());
  } else {
    copy_bytes(v.data(), Device::CPU, t.raw(), t.device(), t.bytes());
  }
  return v;
}

Tensor tensor_of(const std::vector<float>& v, std::vector<int64_t> shape, MemCategory cat) {
  Tensor t = Tensor::empty(std::move(shape), cat, DType::F32);
  PB_REQUIRE(t.numel() == int64_t(v.size()), "tensor_of: ", v.size(), " values for ", t.shape_str());
  if (!v.empty()) copy_bytes(t.raw(), t.device(), v.data(), Device::CPU, t.bytes());
  return t;
}

Tensor comm_buffer(int64_t rows, int64_t cols, DType dt) {
  return Tensor::empty({rows, cols}, MemCategory::CommBuffers, dt);
}

}  // namespace pb
