/* Grouped GEMM (MoE experts) and matmul-add (gradient-accumulation fusion) on the CPU
 * backend: GMM against per-group loops, with empty groups; matmul-add with bf16 inputs
 * accumulated in fp32 is closer to the fp64 truth than rounding the product to bf16 first,
 * and m micro-batches add up exactly once each. */
#include <gtest/gtest.h>

#include <cmath>

#include "optimized/kernels/ops.h"
#include "reference/common/counter_rng.h"
#include "reference/common/error.h"

namespace pb::test {

static Tensor randn(std::vector<int64_t> shape, const std::string& name, DType dt = DType::F32) {
  Tensor f = Tensor::empty(shape, MemCategory::Workspace, DType::F32, Device::CPU);
  CounterRng rng(5, name);
  for (int64_t i = 0; i < f.numel(); ++i) f.f32()[i] = float(rng.normal(uint64_t(i)));
  if (dt == DType::F32) return f;
  Tensor b = Tensor::empty(shape, MemCategory::Workspace, DType::BF16, Device::CPU);
  ops::cast(b, f);
  return b;
}

TEST(GroupedGemm, EqualsPerGroupProductsWithEmptyGroups) {
  const std::vector<int64_t> sizes{3, 0, 5, 1, 0};
  const int64_t M = 9, H = 7, F = 4, E = 5;
  Tensor x = randn({M, H}, "x"), w = randn({E, H, F}, "w"), dy = randn({M, F}, "dy"), dw = randn({E, H, F}, "dw0");
  Tensor dw0 = randn({E, H, F}, "dw0");
  Tensor y = Tensor::empty({M, F}, MemCategory::Workspace, DType::F32, Device::CPU);
  Tensor dx = Tensor::empty({M, H}, MemCategory::Workspace, DType::F32, Device::CPU);
  ops::grouped_gemm_forward(y, x, w, sizes);
  ops::grouped_gemm_backward(dx, dw, dy, x, w, sizes);
  int64_t row = 0;
  for (int64_t e = 0; e < E; ++e) {
    const float* we = w.f32() + e * H * F;
    for (int64_t r = row; r < row + sizes[size_t(e)]; ++r) {
      for (int64_t f = 0; f < F; ++f) {
        double s = 0;
        for (int64_t h = 0; h < H; ++h) s += double(x.f32()[r * H + h]) * we[h * F + f];
        EXPECT_NEAR(y.f32()[r * F + f], s, 1e-5) << "y row " << r;
      }
      for (int64_t h = 0; h < H; ++h) {
        double s = 0;
        for (int64_t f = 0; f < F; ++f) s += double(dy.f32()[r * F + f]) * we[h * F + f];
        EXPECT_NEAR(dx.f32()[r * H + h], s, 1e-5) << "dx row " << r;
      }
    }
    for (int64_t h = 0; h < H; ++h)
      for (int64_t f = 0; f < F; ++f) {
        double s = dw0.f32()[e * H * F + h * F + f];
        for (int64_t r = row; r < row + sizes[size_t(e)]; ++r) s += double(x.f32()[r * H + h]) * dy.f32()[r * F + f];
        EXPECT_NEAR(dw.f32()[e * H * F + h * F + f], s, 1e-5) << "dW group " << e;  // empty groups unchanged
      }
    row += sizes[size_t(e)];
  }
}

TEST(GroupedGemm, RejectsSizesThatDoNotCoverTheRows) {
  Tensor x = randn({4, 3}, "x"), w = randn({2, 3, 2}, "w");
  Tensor y = Tensor::empty({4, 2}, MemCategory::Workspace, DType::F32, Device::CPU);
  EXPECT_THROW(ops::grouped_gemm_forward(y, x, w, {1, 2}), pb::Error);
  EXPECT_THROW(ops::grouped_gemm_forward(y, x, w, {5, -1}), pb::Error);
  EXPECT_THROW(ops::grouped_gemm_forward(y, x, w, {4}), pb::Error);
}

TEST(MatmulAdd, Bf16InputsAccumulateInFp32OncePerMicroBatch) {
  const int64_t N = 64, out = 16, in = 24, m = 3;
  Tensor main_grad = Tensor::zeros({out, in}, MemCategory::Grads, DType::F32, Device::CPU);
  std::vector<double> truth(size_t(out * in), 0.0), unfused(size_t(out * in), 0.0);
  for (int64_t mb = 0; mb < m; ++mb) {
    Tensor dy = randn({N, out}, "dy" + std::to_string(mb), DType::BF16);
    Tensor x = randn({N, in}, "x" + std::to_string(mb), DType::BF16);
    ops::linear_backward_weight(main_grad, dy, x);
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < in; ++i) {
        double s = 0;
        for (int64_t t = 0; t < N; ++t)
          s += double(bf16_to_float(dy.bf16_bits()[t * out + o])) * bf16_to_float(x.bf16_bits()[t * in + i]);
        truth[size_t(o * in + i)] += s;
        unfused[size_t(o * in + i)] += bf16_to_float(float_to_bf16(float(s)));  // product rounded to bf16 first
      }
  }
  double err_fused = 0, err_unfused = 0, norm = 0;
  for (size_t k = 0; k < truth.size(); ++k) {
    err_fused += std::pow(main_grad.f32()[k] - truth[k], 2);
    err_unfused += std::pow(unfused[k] - truth[k], 2);
    norm += truth[k] * truth[k];
  }
  EXPECT_LT(std::sqrt(err_fused / norm), 1e-6);   // fp32 accumulation of m products
  EXPECT_GT(std::sqrt(err_unfused / norm), 1e-4); // bf16 rounding of each product
}

}  // namespace pb::test
