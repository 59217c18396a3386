/* CPU fp32 <-> bf16 conversion, round to nearest even (core/tensor.h). */
#include "optimized/kernels/cpu/cpu_kernels.h"
#include "reference/common/error.h"

namespace pb::cpu {

void cast(Tensor& dst, const Tensor& src, const Stream&) {
  PB_REQUIRE(dst.numel() == src.numel(), "cast: ", src.shape_str(), " into ", dst.shape_str());
  const int64_t n = src.numel();
  if (src.dtype() == dst.dtype()) return copy(dst, src);
  if (src.dtype() == DType::F32)
    for (int64_t i = 0; i < n; ++i) dst.bf16_bits()[i] = float_to_bf16(src.f32()[i]);
  else
    for (int64_t i = 0; i < n; ++i) dst.f32()[i] = bf16_to_float(src.bf16_bits()[i]);
}

}  // namespace pb::cpu
