/* The CUDA grouped linear (MoE experts, Megatron-LM's GroupedMLP in the linear layout:
 * y_i = x_i w_i^T, dx_i = dy_i w_i, dW_i += dy_i^T x_i, one cuBLAS GEMM per non-empty group)
 * against the CPU ops: fp32 to 2e-6; bf16 (native cuBLAS bf16 GEMMs with fp32 accumulation,
 * dW an fp32 main grad) against the CPU's promote-and-round emulation and the fp32 op on the
 * same bf16 values, with test_cuda_kernels.cc's rule (the CUDA error at most 2x the
 * emulation's). Empty groups first, in the middle and last; device outputs pre-filled with
 * NaN (every row must be written). Part of test_cuda_kernels (gtest_main); skipped with a
 * message where no GPU is visible. */
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "optimized/core/device.h"
#include "optimized/kernels/ops.h"
#include "reference/common/counter_rng.h"
#include "suites/unit/cuda_test_util.h"

namespace pb::test {

class CudaGroupedLinear : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device visible: GPU kernel tests skipped";
    cuda_select_device(0);
  }
};

namespace {

Tensor host_randn(std::vector<int64_t> shape, const std::string& name) {
  Tensor t = Tensor::empty(std::move(shape), MemCategory::Workspace, DType::F32, Device::CPU);
  CounterRng rng(13, name);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = float(rng.normal(uint64_t(i)));
  return t;
}

Tensor dev(const Tensor& h) { return to_device(h, Device::CUDA); }

// A host tensor of dtype dt filled with NaN.
Tensor nan_host(std::vector<int64_t> shape, DType dt = DType::F32) {
  Tensor h = Tensor::empty(std::move(shape), MemCategory::Workspace, dt, Device::CPU);
  if (dt == DType::F32)
    std::fill_n(h.f32(), h.numel(), std::numeric_limits<float>::quiet_NaN());
  else
    std::fill_n(h.bf16_bits(), h.numel(), uint16_t(0x7fc0));  // quiet NaN
  return h;
}

constexpr double kTol = 2e-6;

// Sizes with empty groups first, in the middle and last; M rows in all.
const std::vector<int64_t> kSizes{0, 3, 0, 70, 1, 0};
constexpr int64_t kM = 74, kIn = 64, kOut = 48, kE = 6;

}  // namespace

TEST_F(CudaGroupedLinear, Fp32MatchesCpu) {
  const Tensor x = host_randn({kM, kIn}, "x"), w = host_randn({kE, kOut, kIn}, "w"), dy = host_randn({kM, kOut}, "dy");
  Tensor y = nan_host({kM, kOut}), gy = dev(nan_host({kM, kOut}));
  ops::grouped_linear_forward(y, x, w, kSizes);
  ops::grouped_linear_forward(gy, dev(x), dev(w), kSizes);
  EXPECT_LT(rel(gy, y), kTol);
  Tensor dx = nan_host({kM, kIn}), gdx = dev(nan_host({kM, kIn}));
  ops::grouped_linear_backward_input(dx, dy, w, kSizes);
  ops::grouped_linear_backward_input(gdx, dev(dy), dev(w), kSizes);
  EXPECT_LT(rel(gdx, dx), kTol);
  Tensor dw = host_randn({kE, kOut, kIn}, "dw0"), gdw = dev(dw);
  const Tensor dw0 = f32_host(dw);
  ops::grouped_linear_backward_weight(dw, dy, x, kSizes);
  ops::grouped_linear_backward_weight(gdw, dev(dy), dev(x), kSizes);
  EXPECT_LT(rel(gdw, dw), kTol);
  // The empty groups' dW is untouched, bit for bit.
  const Tensor h = f32_host(gdw);
  for (int64_t e : {0, 2, 5})
    EXPECT_EQ(std::memcmp(h.f32() + e * kOut * kIn, dw0.f32() + e * kOut * kIn, size_t(kOut * kIn) * 4), 0) << e;
}

TEST_F(CudaGroupedLinear, Bf16MatchesCpuEmulation) {
  const Tensor x = bf16_of(host_randn({kM, kIn}, "x")), w = bf16_of(host_randn({kE, kOut, kIn}, "w"));
  const Tensor dy = bf16_of(host_randn({kM, kOut}, "dy"));
  // y = x w_i^T: native CUDA bf16, the CPU emulation, the fp32 op on the same values.
  Tensor y = nan_host({kM, kOut}, DType::BF16), gy = dev(nan_host({kM, kOut}, DType::BF16)), ry = nan_host({kM, kOut});
  ops::grouped_linear_forward(y, x, w, kSizes);
  ops::grouped_linear_forward(gy, dev(x), dev(w), kSizes);
  ops::grouped_linear_forward(ry, f32_host(x), f32_host(w), kSizes);
  ASSERT_EQ(gy.dtype(), DType::BF16);
  EXPECT_LE(rel(gy, ry), 2 * rel(y, ry) + 1e-6) << "grouped y";
  EXPECT_LT(rel(gy, y), 1e-2);
  // dx = dy w_i
  Tensor dx = nan_host({kM, kIn}, DType::BF16), gdx = dev(nan_host({kM, kIn}, DType::BF16)), rdx = nan_host({kM, kIn});
  ops::grouped_linear_backward_input(dx, dy, w, kSizes);
  ops::grouped_linear_backward_input(gdx, dev(dy), dev(w), kSizes);
  ops::grouped_linear_backward_input(rdx, f32_host(dy), f32_host(w), kSizes);
  EXPECT_LE(rel(gdx, rdx), 2 * rel(dx, rdx) + 1e-6) << "grouped dx";
  EXPECT_LT(rel(gdx, dx), 1e-2);
  // dW += dy^T x into the fp32 main grad (fp32 accumulation on tensor cores, another order).
  Tensor dw = host_randn({kE, kOut, kIn}, "dw0"), gdw = dev(dw);
  ops::grouped_linear_backward_weight(dw, dy, x, kSizes);
  ops::grouped_linear_backward_weight(gdw, dev(dy), dev(x), kSizes);
  ASSERT_EQ(gdw.dtype(), DType::F32);
  EXPECT_LT(rel(gdw, dw), 1e-5);
}

// No rows at all: nothing launched, dW unchanged.
TEST_F(CudaGroupedLinear, AllGroupsEmpty) {
  const std::vector<int64_t> sizes{0, 0};
  const Tensor x = host_randn({0, 8}, "x0"), dy = host_randn({0, 4}, "dy0"), w = host_randn({2, 4, 8}, "w0");
  Tensor gy = dev(nan_host({0, 4})), gdx = dev(nan_host({0, 8}));
  ops::grouped_linear_forward(gy, dev(x), dev(w), sizes);
  ops::grouped_linear_backward_input(gdx, dev(dy), dev(w), sizes);
  const Tensor dw = host_randn({2, 4, 8}, "dw00");
  Tensor gdw = dev(dw);
  ops::grouped_linear_backward_weight(gdw, dev(dy), dev(x), sizes);
  EXPECT_EQ(std::memcmp(f32_host(gdw).raw(), dw.raw(), dw.bytes()), 0);
}

}  // namespace pb::test
