/* Reuse-fp32-param conversions (FEATURES.md): the round trip is bit-exact for every fp32
 * pattern tried (random, zeros, denormals, infinities, NaNs, ties, carries into the
 * exponent); the bf16 view equals round-to-nearest-even except at exact ties, where it
 * rounds away from zero. */
#include <gtest/gtest.h>

#include <cstring>
#include <limits>

#include "optimized/kernels/ops.h"
#include "reference/common/counter_rng.h"

namespace pb::test {

static uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
static float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

static std::vector<float> patterns() {
  std::vector<float> v = {0.0f, -0.0f, 1.0f, -1.0f, 3.14159265f, 1e-40f, -1e-45f,
                          std::numeric_limits<float>::max(), -std::numeric_limits<float>::max(),
                          std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                          std::numeric_limits<float>::quiet_NaN(), from_bits(0x7fffffffu), from_bits(0xffffffffu),
                          from_bits(0x3f808000u),   // tie, even high half
                          from_bits(0x3f818000u),   // tie, odd high half
                          from_bits(0xbf808000u),   // negative tie
                          from_bits(0x3f80ffffu),   // carry into the next bf16
                          from_bits(0x3fffffffu),   // carry into the exponent
                          from_bits(0x00008000u)};  // tie among denormals
  CounterRng rng(3, "reuse");
  for (uint64_t i = 0; i < 10000; ++i) v.push_back(from_bits(uint32_t(rng.bits(i))));
  return v;
}

TEST(ReuseFp32Param, RoundTripIsBitExact) {
  const auto v = patterns();
  const int64_t n = int64_t(v.size());
  Tensor w = Tensor::empty({n}, MemCategory::Params, DType::F32, Device::CPU);
  std::memcpy(w.raw(), v.data(), v.size() * 4);
  ops::fp32_to_bf16_residual(w);
  EXPECT_NE(std::memcmp(w.raw(), v.data(), v.size() * 4), 0);  // the buffer really changed
  ops::bf16_residual_to_fp32(w);
  EXPECT_EQ(std::memcmp(w.raw(), v.data(), v.size() * 4), 0);
}

TEST(ReuseFp32Param, Bf16ViewIsRoundingExceptAtTies) {
  const auto v = patterns();
  const int64_t n = int64_t(v.size());
  Tensor w = Tensor::empty({n}, MemCategory::Params, DType::F32, Device::CPU);
  std::memcpy(w.raw(), v.data(), v.size() * 4);
  ops::fp32_to_bf16_residual(w);
  const Tensor view = w.reinterpret(DType::BF16, 2 * n, {n});  // the bf16 parameter: second half
  int ties = 0, checked = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float f = v[size_t(i)];
    if (f != f) continue;  // NaN payloads are not rounded
    const uint16_t got = view.bf16_bits()[i];
    if ((bits(f) & 0xffffu) == 0x8000u) {
      EXPECT_EQ(got, uint16_t((bits(f) >> 16) + 1)) << "tie away from zero at " << i;
      ++ties;
    } else {
      EXPECT_EQ(got, float_to_bf16(f)) << "element " << i << " bits " << std::hex << bits(f);
    }
    ++checked;
  }
  EXPECT_GE(ties, 4);
  EXPECT_GT(checked, 9000);
}

TEST(Bf16, CastRoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(from_bits(0x3f808000u)), 0x3f80);  // tie to even (down)
  EXPECT_EQ(float_to_bf16(from_bits(0x3f818000u)), 0x3f82);  // tie to even (up)
  EXPECT_EQ(float_to_bf16(from_bits(0x3f808001u)), 0x3f81);  // above the tie
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.5f)), 1.5f);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  Tensor f = Tensor::empty({3}, MemCategory::Workspace, DType::F32, Device::CPU);
  Tensor b = Tensor::empty({3}, MemCategory::Workspace, DType::BF16, Device::CPU);
  f.f32()[0] = 1.0f;
  f.f32()[1] = from_bits(0x3f818000u);
  f.f32()[2] = -2.5f;
  ops::cast(b, f);
  EXPECT_EQ(b.bf16_bits()[1], 0x3f82);
  Tensor back = Tensor::empty({3}, MemCategory::Workspace, DType::F32, Device::CPU);
  ops::cast(back, b);
  EXPECT_EQ(back.f32()[2], -2.5f);
}

}  // namespace pb::test
