/* CPU reuse-fp32-param conversions (MindSpeed "reuse-fp32-param"; FEATURES.md):
 *   u = bits(w) + 0x8000 (mod 2^32);  residual = u & 0xffff;  bf16 = u >> 16
 * stored as [residuals (n) | bf16 (n)] in the master's own 4n bytes; the inverse is
 *   bits(w) = ((bf16 << 16) | residual) - 0x8000, exact for every fp32 pattern.
 * Adding 0x8000 before truncating rounds the bf16 half to nearest with ties away from zero
 * (IEEE sign-magnitude), so the bf16 view equals round-to-nearest-even except at ties.
 * The permutation is done through a copy of the buffer (a transient workspace). */
#include <cstring>
#include <vector>

#include "optimized/kernels/cpu/cpu_kernels.h"
#include "reference/common/error.h"

namespace pb::cpu {

void fp32_to_bf16_residual(Tensor& master, const Stream&) {
  PB_REQUIRE(master.dtype() == DType::F32, "fp32_to_bf16_residual: master must be fp32");
  const int64_t n = master.numel();
  std::vector<uint32_t> bits(static_cast<size_t>(n));
  if (n) std::memcpy(bits.data(), master.raw(), size_t(n) * 4);
  auto* half = static_cast<uint16_t*>(master.raw());
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = bits[size_t(i)] + 0x8000u;
    half[i] = uint16_t(u & 0xffffu);  // residual
    half[n + i] = uint16_t(u >> 16);  // bf16
  }
}

void bf16_residual_to_fp32(Tensor& master, const Stream&) {
  PB_REQUIRE(master.dtype() == DType::F32, "bf16_residual_to_fp32: master must be fp32");
  const int64_t n = master.numel();
  std::vector<uint16_t> half(static_cast<size_t>(2 * n));
  if (n) std::memcpy(half.data(), master.raw(), size_t(n) * 4);
  auto* bits = static_cast<uint32_t*>(master.raw());
  for (int64_t i = 0; i < n; ++i)
    bits[i] = ((uint32_t(half[size_t(n + i)]) << 16) | uint32_t(half[size_t(i)])) - 0x8000u;
}

}  // namespace pb::cpu
