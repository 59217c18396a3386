/* Helpers of the CUDA kernel tests (test_cuda_*.cc): host fp32 copies of tensors of either
 * device and dtype, bf16 copies, and the relative error of a GPU result against a reference. */
#pragma once

#include <cmath>

#include "optimized/core/device.h"
#include "optimized/kernels/ops.h"

namespace pb::test {

// t on the host as fp32 (a copy from the GPU, a cast from bf16).
inline Tensor f32_host(const Tensor& t) {
  Tensor h = to_device(t, Device::CPU);
  if (h.dtype() == DType::F32) return h;
  Tensor f = Tensor::empty(h.shape(), MemCategory::Workspace, DType::F32, Device::CPU);
  ops::cast(f, h);
  return f;
}

// An fp32 host tensor rounded to bf16 (on the host).
inline Tensor bf16_of(const Tensor& f) {
  Tensor b = Tensor::empty(f.shape(), MemCategory::Workspace, DType::BF16, Device::CPU);
  ops::cast(b, f);
  return b;
}

// ||gpu - ref|| / ||ref|| over fp32 host values; a NaN or infinity in gpu fails (INFINITY).
// With `infinities` (an lse: -inf for rows that see no key), an infinite entry must be the
// same in both and the error is over the finite entries.
inline double rel(const Tensor& gpu, const Tensor& ref, bool infinities = false) {
  const Tensor g = f32_host(gpu), c = f32_host(ref);
  if (g.numel() != c.numel()) return INFINITY;
  double d = 0, n = 0;
  for (int64_t i = 0; i < c.numel(); ++i) {
    const double a = g.f32()[i], b = c.f32()[i];
    if (infinities && (std::isinf(a) || std::isinf(b))) {
      if (a != b) return INFINITY;
      continue;
    }
    if (!std::isfinite(a)) return INFINITY;
    d += (a - b) * (a - b);
    n += b * b;
  }
  return n > 0 ? std::sqrt(d / n) : std::sqrt(d);
}

}  // namespace pb::test
