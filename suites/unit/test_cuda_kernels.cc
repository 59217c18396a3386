/* Every CUDA kernel against the CPU kernel (which is the reference op) in fp32:
 * random inputs, device outputs pre-filled with NaN, awkward shapes (primes, 1 x N, head
 * dims 4, 64 and 128, GQA). Labelled gpu; skipped with a message where no GPU is visible. */
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "optimized/core/device.h"
#include "optimized/kernels/ops.h"
#include "reference/common/counter_rng.h"

namespace pb::test {

class CudaKernels : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device visible: GPU kernel tests skipped";
    cuda_select_device(0);
  }
};

static Tensor host_randn(std::vector<int64_t> shape, const std::string& name, float scale = 1.0f) {
  Tensor t = Tensor::empty(std::move(shape), MemCategory::Workspace, DType::F32, Device::CPU);
  CounterRng rng(11, name);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = scale * float(rng.normal(uint64_t(i)));
  return t;
}

static Tensor dev(const Tensor& h) { return to_device(h, Device::CUDA); }

static Tensor nan_dev(std::vector<int64_t> shape) {
  Tensor h = Tensor::empty(shape, MemCategory::Workspace, DType::F32, Device::CPU);
  std::fill_n(h.f32(), h.numel(), std::numeric_limits<float>::quiet_NaN());
  return dev(h);
}

static Tensor nan_host(std::vector<int64_t> shape) {
  Tensor h = Tensor::empty(std::move(shape), MemCategory::Workspace, DType::F32, Device::CPU);
  std::fill_n(h.f32(), h.numel(), std::numeric_limits<float>::quiet_NaN());
  return h;
}

// ||gpu - cpu|| / ||cpu|| with the GPU tensor copied back; NaN anywhere fails.
static double rel(const Tensor& gpu, const Tensor& cpu) {
  const Tensor g = to_device(gpu, Device::CPU);
  double d = 0, n = 0;
  for (int64_t i = 0; i < cpu.numel(); ++i) {
    const double a = g.f32()[i], b = cpu.f32()[i];
    if (!std::isfinite(a)) return INFINITY;
    d += (a - b) * (a - b);
    n += b * b;
  }
  return n > 0 ? std::sqrt(d / n) : std::sqrt(d);
}

constexpr double kTol = 2e-6;

TEST_F(CudaKernels, Linear) {
  for (auto [N, in, out] : {std::tuple{7, 13, 5}, {1, 64, 128}, {33, 1, 17}}) {
    Tensor x = host_randn({N, in}, "x"), w = host_randn({out, in}, "w"), dy = host_randn({N, out}, "dy");
    Tensor y = nan_host({N, out}), dx = nan_host({N, in}), dw = host_randn({out, in}, "dw0");
    Tensor gy = nan_dev({N, out}), gdx = nan_dev({N, in}), gdw = dev(dw);
    ops::linear_forward(y, x, w);
    ops::linear_forward(gy, dev(x), dev(w));
    ops::linear_backward_input(dx, dy, w);
    ops::linear_backward_input(gdx, dev(dy), dev(w));
    ops::linear_backward_weight(dw, dy, x);
    ops::linear_backward_weight(gdw, dev(dy), dev(x));
    EXPECT_LT(rel(gy, y), kTol) << N << "x" << in << "->" << out;
    EXPECT_LT(rel(gdx, dx), kTol);
    EXPECT_LT(rel(gdw, dw), kTol);
  }
}

TEST_F(CudaKernels, ElementwiseAndReductions) {
  Tensor a = host_randn({7, 11}, "a"), b = host_randn({7, 11}, "b"), y = nan_host({7, 11}), gy = nan_dev({7, 11});
  ops::add(y, a, b);
  ops::add(gy, dev(a), dev(b));
  EXPECT_LT(rel(gy, y), 1e-7);
  ops::scale_(y, 0.37f);
  ops::scale_(gy, 0.37f);
  EXPECT_LT(rel(gy, y), 1e-7);
  Tensor big = host_randn({1000003}, "big");
  const double s_cpu = ops::sum_squares(big), s_gpu = ops::sum_squares(dev(big));
  EXPECT_NEAR(s_gpu, s_cpu, 1e-9 * s_cpu);
  EXPECT_EQ(ops::sum_squares(dev(big)), s_gpu);  // deterministic
}

TEST_F(CudaKernels, EmbeddingVocabParallel) {
  const std::vector<int64_t> tok{3, 17, 3, 0, 9, 3, 16};
  Tensor table = host_randn({8, 12}, "E"), dy = host_randn({7, 12}, "dy");
  Tensor y = nan_host({7, 12}), gy = nan_dev({7, 12});
  ops::embedding_forward(y, tok, table, 2);  // this rank owns tokens 2..9
  ops::embedding_forward(gy, tok, dev(table), 2);
  EXPECT_LT(rel(gy, y), 1e-7);
  Tensor dt = host_randn({8, 12}, "dt0"), gdt = dev(dt);
  ops::embedding_backward(dt, dy, tok, 2);
  ops::embedding_backward(gdt, dev(dy), tok, 2);
  EXPECT_LT(rel(gdt, dt), kTol);
}

TEST_F(CudaKernels, RmsNorm) {
  for (auto [N, H] : {std::pair{7, 12}, {1, 4096}, {67, 33}}) {
    Tensor x = host_randn({N, H}, "x"), g = host_randn({H}, "g"), dy = host_randn({N, H}, "dy");
    Tensor y = nan_host({N, H}), r = nan_host({N}), gy = nan_dev({N, H}), gr = nan_dev({N});
    ops::rmsnorm_forward(y, r, x, g, 1e-5f);
    ops::rmsnorm_forward(gy, gr, dev(x), dev(g), 1e-5f);
    EXPECT_LT(rel(gy, y), kTol) << N << "x" << H;
    EXPECT_LT(rel(gr, r), kTol);
    Tensor dx = nan_host({N, H}), dg = host_randn({H}, "dg0"), gdx = nan_dev({N, H}), gdg = dev(dg);
    ops::rmsnorm_backward(dx, dg, dy, x, r, g);
    ops::rmsnorm_backward(gdx, gdg, dev(dy), dev(x), dev(r), dev(g));
    EXPECT_LT(rel(gdx, dx), 1e-5);
    EXPECT_LT(rel(gdg, dg), 1e-5);
  }
}

TEST_F(CudaKernels, RopeAndSwiGlu) {
  const std::vector<int64_t> pos{0, 1, 2, 9, 100, 4095, 5};
  Tensor x = host_randn({7, 3 * 64}, "x"), y = nan_host({7, 192}), gy = nan_dev({7, 192});
  ops::rope_forward(y, x, pos, 64, 10000.0);
  ops::rope_forward(gy, dev(x), pos, 64, 10000.0);
  EXPECT_LT(rel(gy, y), 1e-5);
  ops::rope_backward(y, x, pos, 64, 10000.0);
  ops::rope_backward(gy, dev(x), pos, 64, 10000.0);
  EXPECT_LT(rel(gy, y), 1e-5);
  Tensor a = host_randn({5, 13}, "a", 3.0f), u = host_randn({5, 13}, "u"), dy = host_randn({5, 13}, "dy");
  Tensor s = nan_host({5, 13}), gs = nan_dev({5, 13});
  ops::swiglu_forward(s, a, u);
  ops::swiglu_forward(gs, dev(a), dev(u));
  EXPECT_LT(rel(gs, s), kTol);
  Tensor da = nan_host({5, 13}), du = nan_host({5, 13}), gda = nan_dev({5, 13}), gdu = nan_dev({5, 13});
  ops::swiglu_backward(da, du, dy, a, u);
  ops::swiglu_backward(gda, gdu, dev(dy), dev(a), dev(u));
  EXPECT_LT(rel(gda, da), kTol);
  EXPECT_LT(rel(gdu, du), kTol);
}

TEST_F(CudaKernels, AttentionForwardBackward) {
  for (auto [B, S, A, G, D] : {std::tuple{2, 7, 3, 1, 4}, {1, 65, 4, 2, 64}, {2, 33, 2, 2, 128}}) {
    const ops::AttnShape sh{B, S, A, G, D};
    Tensor q = host_randn({B * S, A * D}, "q"), k = host_randn({B * S, G * D}, "k"), v = host_randn({B * S, G * D}, "v");
    Tensor dout = host_randn({B * S, A * D}, "do");
    Tensor o = nan_host({B * S, A * D}), lse = nan_host({B * A, S}), go = nan_dev({B * S, A * D}), glse = nan_dev({B * A, S});
    ops::attention_forward(o, lse, q, k, v, sh);
    ops::attention_forward(go, glse, dev(q), dev(k), dev(v), sh);
    EXPECT_LT(rel(go, o), 1e-5) << B << " " << S << " " << A << " " << G << " " << D;
    EXPECT_LT(rel(glse, lse), 1e-6);
    Tensor dq = nan_host({B * S, A * D}), dk = nan_host({B * S, G * D}), dv = nan_host({B * S, G * D});
    Tensor gdq = nan_dev({B * S, A * D}), gdk = nan_dev({B * S, G * D}), gdv = nan_dev({B * S, G * D});
    ops::attention_backward(dq, dk, dv, dout, q, k, v, o, lse, sh);
    ops::attention_backward(gdq, gdk, gdv, dev(dout), dev(q), dev(k), dev(v), dev(o), dev(lse), sh);
    EXPECT_LT(rel(gdq, dq), 1e-5);
    EXPECT_LT(rel(gdk, dk), 1e-5);
    EXPECT_LT(rel(gdv, dv), 1e-5);
  }
}

TEST_F(CudaKernels, VocabParallelCrossEntropy) {
  const int64_t N = 9, V = 37;
  const std::vector<int64_t> labels{0, 36, 40, 5, 5, 80, 12, 13, 37};
  Tensor z = host_randn({N, V}, "z", 4.0f);
  Tensor mx = nan_host({N}), se = nan_host({N}), tl = nan_host({N});
  Tensor gmx = nan_dev({N}), gse = nan_dev({N}), gtl = nan_dev({N});
  const Tensor gz = dev(z);
  ops::ce_row_max(mx, z);
  ops::ce_row_max(gmx, gz);
  ops::ce_sum_exp(se, z, mx);
  ops::ce_sum_exp(gse, gz, gmx);
  ops::ce_target_logit(tl, z, labels, 3);
  ops::ce_target_logit(gtl, gz, labels, 3);
  EXPECT_LT(rel(gmx, mx), 1e-7);
  EXPECT_LT(rel(gse, se), kTol);
  EXPECT_LT(rel(gtl, tl), 1e-7);
  EXPECT_NEAR(ops::ce_loss_sum(gmx, gse, gtl), ops::ce_loss_sum(mx, se, tl), 1e-5);
  Tensor dz = nan_host({N, V}), gdz = nan_dev({N, V});
  ops::ce_backward(dz, z, mx, se, labels, 3, 0.25f);
  ops::ce_backward(gdz, gz, gmx, gse, labels, 3, 0.25f);
  EXPECT_LT(rel(gdz, dz), kTol);
}

TEST_F(CudaKernels, AdamW) {
  Tensor w = host_randn({1000}, "w"), g = host_randn({1000}, "g"), m = host_randn({1000}, "m", 0.1f);
  Tensor v = host_randn({1000}, "v", 0.1f);
  for (int64_t i = 0; i < 1000; ++i) v.f32()[i] = std::abs(v.f32()[i]);
  Tensor gw = dev(w), gm = dev(m), gv = dev(v);
  const ops::AdamHyper h{1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.19f, 0.0975f, 0.5f};
  ops::adamw(w, g, m, v, h);
  ops::adamw(gw, dev(g), gm, gv, h);
  EXPECT_LT(rel(gw, w), 1e-7);
  EXPECT_LT(rel(gm, m), 1e-7);
  EXPECT_LT(rel(gv, v), 1e-7);
}

TEST_F(CudaKernels, CastAndReuseFp32Param) {
  const int64_t n = 4099;
  Tensor f = host_randn({n}, "f", 3.0f);
  Tensor b = Tensor::empty({n}, MemCategory::Workspace, DType::BF16, Device::CPU);
  ops::cast(b, f);
  Tensor gb = Tensor::empty({n}, MemCategory::Workspace, DType::BF16, Device::CUDA);
  ops::cast(gb, dev(f));
  const Tensor hb = to_device(gb, Device::CPU);
  EXPECT_EQ(std::memcmp(hb.raw(), b.raw(), b.bytes()), 0);  // same rounding bit for bit
  Tensor w = f, gw = dev(f);
  ops::fp32_to_bf16_residual(w);
  ops::fp32_to_bf16_residual(gw);
  EXPECT_EQ(std::memcmp(to_device(gw, Device::CPU).raw(), w.raw(), w.bytes()), 0);
  ops::bf16_residual_to_fp32(gw);
  EXPECT_EQ(std::memcmp(to_device(gw, Device::CPU).raw(), f.raw(), f.bytes()), 0);  // exact round trip
}

TEST_F(CudaKernels, GroupedGemmAndMatmulAdd) {
  const std::vector<int64_t> sizes{3, 0, 70, 1};
  const int64_t M = 74, H = 64, F = 48, E = 4;
  Tensor x = host_randn({M, H}, "x"), w = host_randn({E, H, F}, "w"), dy = host_randn({M, F}, "dy");
  Tensor dw = host_randn({E, H, F}, "dw0"), gdw = dev(dw);
  Tensor y = nan_host({M, F}), gy = nan_dev({M, F}), dx = nan_host({M, H}), gdx = nan_dev({M, H});
  ops::grouped_gemm_forward(y, x, w, sizes);
  ops::grouped_gemm_forward(gy, dev(x), dev(w), sizes);
  ops::grouped_gemm_backward(dx, dw, dy, x, w, sizes);
  ops::grouped_gemm_backward(gdx, gdw, dev(dy), dev(x), dev(w), sizes);
  EXPECT_LT(rel(gy, y), kTol);
  EXPECT_LT(rel(gdx, dx), kTol);
  EXPECT_LT(rel(gdw, dw), kTol);
  Tensor xb = Tensor::empty({M, H}, MemCategory::Workspace, DType::BF16, Device::CPU);
  Tensor dyb = Tensor::empty({M, F}, MemCategory::Workspace, DType::BF16, Device::CPU);
  ops::cast(xb, x);
  ops::cast(dyb, dy);
  Tensor main_grad = host_randn({F, H}, "mg"), gmain = dev(main_grad);
  ops::linear_backward_weight(main_grad, dyb, xb);
  ops::linear_backward_weight(gmain, dev(dyb), dev(xb));
  EXPECT_LT(rel(gmain, main_grad), 1e-6);
}

}  // namespace pb::test
