/* Every CUDA kernel against the CPU kernel (which is the reference op) in fp32:
 * random inputs, device outputs pre-filled with NaN, awkward shapes (primes, 1 x N, head
 * dims 4, 64 and 128, GQA). Labelled gpu; skipped with a message where no GPU is visible.
 * The bf16 tests (Bf16*) run the native bf16 CUDA kernels against the CPU's bf16 path (the
 * promote-and-round emulation, which computes the same thing) and against the fp32 op on
 * the same bf16-valued inputs, with DESIGN.md's rule: the CUDA error is at most 2x the
 * emulation's (the naive bf16 implementation). */
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "optimized/core/device.h"
#include "optimized/kernels/ops.h"
#include "reference/common/counter_rng.h"
#include "suites/unit/cuda_test_util.h"

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

static Tensor nan_bf16_host(std::vector<int64_t> shape) {
  Tensor h = Tensor::empty(std::move(shape), MemCategory::Workspace, DType::BF16, Device::CPU);
  std::fill_n(h.bf16_bits(), h.numel(), uint16_t(0x7fc0));  // quiet NaN
  return h;
}

static Tensor nan_bf16_dev(std::vector<int64_t> shape) { return dev(nan_bf16_host(std::move(shape))); }

constexpr double kTol = 2e-6;

// The bf16 rule for one bf16 output: gpu (native CUDA bf16), emu (the CPU's bf16
// emulation: fp32 math on the promoted inputs, rounded once) and ref (the fp32 op on the
// same bf16-valued inputs). The CUDA error against ref is at most 2x the emulation's (a
// 1e-6 floor for outputs that both compute exactly); the two bf16 results agree within
// about one bf16 ulp (2^-8 relative) per element.
static void expect_bf16(const Tensor& gpu, const Tensor& emu, const Tensor& ref, const std::string& what) {
  ASSERT_EQ(gpu.dtype(), DType::BF16) << what;
  ASSERT_EQ(gpu.device(), Device::CUDA) << what;
  const double e_gpu = rel(gpu, ref), e_emu = rel(emu, ref);
  EXPECT_LE(e_gpu, 2 * e_emu + 1e-6) << what << ": cuda bf16 error " << e_gpu << ", emulation " << e_emu;
  EXPECT_LT(rel(gpu, emu), 1e-2) << what;
}

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

// Ring attention's merge: two partial results (one with rows that saw no key: lse -inf)
// merged on the GPU and on the CPU, fp32 and bf16 o.
TEST_F(CudaKernels, AttentionMerge) {
  for (const DType dt : {DType::F32, DType::BF16}) {
    const int64_t B = 2, n = 9, A = 3, D = 64;
    Tensor o = host_randn({B * n, A * D}, "mo"), ob = host_randn({B * n, A * D}, "mob");
    Tensor l = host_randn({B * A, n}, "ml"), lb = host_randn({B * A, n}, "mlb");
    for (int64_t i = 0; i < l.numel(); i += 4) lb.f32()[i] = -INFINITY;  // rows of the block that saw nothing
    for (int64_t i = 1; i < l.numel(); i += 5) l.f32()[i] = -INFINITY;   // rows merged from nothing yet
    Tensor co = dt == DType::BF16 ? bf16_of(o) : o, cob = dt == DType::BF16 ? bf16_of(ob) : ob;
    Tensor go = dev(co), gl = dev(l);
    ops::attention_merge(co, l, cob, lb, B, A, D);
    ops::attention_merge(go, gl, dev(cob), dev(lb), B, A, D);
    EXPECT_LT(rel(go, co), dt == DType::BF16 ? 1e-2 : 1e-6) << "bf16 " << (dt == DType::BF16);
    EXPECT_LT(rel(gl, l, true), 1e-6);
  }
}

// Ulysses' strided block copy, plain and accumulating, fp32 and bf16: bitwise equal.
TEST_F(CudaKernels, CopyBlock) {
  for (const DType dt : {DType::F32, DType::BF16})
    for (const bool acc : {false, true}) {
      Tensor src = host_randn({37, 129}, "cs"), dst = host_randn({41, 67}, "cd");
      if (dt == DType::BF16) src = bf16_of(src), dst = bf16_of(dst);
      Tensor gdst = dev(dst);
      ops::copy_block(dst, src, 30, 64, 5, 65, 11, 3, acc);
      ops::copy_block(gdst, dev(src), 30, 64, 5, 65, 11, 3, acc);
      EXPECT_EQ(rel(gdst, dst), 0.0) << "bf16 " << (dt == DType::BF16) << " accumulate " << acc;
    }
}

// The vocab-parallel cross-entropy statistics of logits z (N rows) on z's device, into
// NaN-prefilled outputs: row max, sum of exponentials, target logit (vocab_start 3).
struct CePieces {
  Tensor mx, se, tl;
};
static CePieces ce_pieces(const Tensor& z, const std::vector<int64_t>& labels) {
  const int64_t N = z.rows();
  const bool gpu = z.device() == Device::CUDA;
  CePieces c{gpu ? nan_dev({N}) : nan_host({N}), gpu ? nan_dev({N}) : nan_host({N}), gpu ? nan_dev({N}) : nan_host({N})};
  ops::ce_row_max(c.mx, z);
  ops::ce_sum_exp(c.se, z, c.mx);
  ops::ce_target_logit(c.tl, z, labels, 3);
  return c;
}

TEST_F(CudaKernels, VocabParallelCrossEntropy) {
  const int64_t N = 9, V = 37;
  const std::vector<int64_t> labels{0, 36, 40, 5, 5, 80, 12, 13, 37};
  Tensor z = host_randn({N, V}, "z", 4.0f);
  const Tensor gz = dev(z);
  const auto [mx, se, tl] = ce_pieces(z, labels);
  const auto [gmx, gse, gtl] = ce_pieces(gz, labels);
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
  Tensor w = to_device(f, Device::CPU), gw = dev(f);  // copies (Tensor's copy shares storage)
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
  EXPECT_LT(rel(gmain, main_grad), 1e-5);  // fp32 accumulation on tensor cores, in another order
}

// ---- native bf16 on CUDA ----

TEST_F(CudaKernels, Bf16Linear) {
  for (auto [N, in, out] : {std::tuple{7, 13, 5}, {1, 64, 128}, {33, 1, 17}, {130, 96, 37}}) {
    const std::string what = std::to_string(N) + "x" + std::to_string(in) + "->" + std::to_string(out);
    const Tensor x = bf16_of(host_randn({N, in}, "x")), w = bf16_of(host_randn({out, in}, "w"));
    const Tensor dy = bf16_of(host_randn({N, out}, "dy"));
    // forward: y = x W^T
    Tensor y = nan_bf16_host({N, out}), gy = nan_bf16_dev({N, out}), ry = nan_host({N, out});
    ops::linear_forward(y, x, w);
    ops::linear_forward(gy, dev(x), dev(w));
    ops::linear_forward(ry, f32_host(x), f32_host(w));
    expect_bf16(gy, y, ry, "linear y " + what);
    // dx = dy W
    Tensor dx = nan_bf16_host({N, in}), gdx = nan_bf16_dev({N, in}), rdx = nan_host({N, in});
    ops::linear_backward_input(dx, dy, w);
    ops::linear_backward_input(gdx, dev(dy), dev(w));
    ops::linear_backward_input(rdx, f32_host(dy), f32_host(w));
    expect_bf16(gdx, dx, rdx, "linear dx " + what);
    // dW += dy^T x into the fp32 main grad
    Tensor dw = host_randn({out, in}, "dw0"), gdw = dev(dw);
    ops::linear_backward_weight(dw, dy, x);
    ops::linear_backward_weight(gdw, dev(dy), dev(x));
    EXPECT_LT(rel(gdw, dw), 1e-5) << what;
  }
}

TEST_F(CudaKernels, Bf16ElementwiseAndReductions) {
  for (int64_t n : {int64_t(1), int64_t(77), int64_t(4099)}) {
    const Tensor a = bf16_of(host_randn({n}, "a")), b = bf16_of(host_randn({n}, "b", 0.01f));
    Tensor y = nan_bf16_host({n}), gy = nan_bf16_dev({n}), ry = nan_host({n});
    ops::add(y, a, b);
    ops::add(gy, dev(a), dev(b));
    ops::add(ry, f32_host(a), f32_host(b));
    expect_bf16(gy, y, ry, "add " + std::to_string(n));
    EXPECT_EQ(std::memcmp(to_device(gy, Device::CPU).raw(), y.raw(), y.bytes()), 0);  // one fp32 add, one rounding
    ops::add_(y, a);
    ops::add_(gy, dev(a));
    ops::add_(ry, f32_host(a));
    expect_bf16(gy, y, ry, "add_ " + std::to_string(n));
    ops::scale_(y, 0.37f);
    ops::scale_(gy, 0.37f);
    ops::scale_(ry, 0.37f);
    expect_bf16(gy, y, ry, "scale_ " + std::to_string(n));
    EXPECT_EQ(std::memcmp(to_device(gy, Device::CPU).raw(), y.raw(), y.bytes()), 0);
  }
  const Tensor big = bf16_of(host_randn({1000003}, "big"));
  const double s_cpu = ops::sum_squares(big), s_gpu = ops::sum_squares(dev(big));
  EXPECT_NEAR(s_gpu, s_cpu, 1e-9 * s_cpu);
  EXPECT_EQ(ops::sum_squares(dev(big)), s_gpu);  // deterministic
}

TEST_F(CudaKernels, Bf16Embedding) {
  const std::vector<int64_t> tok{3, 17, 3, 0, 9, 3, 16, 2, 2};
  const int64_t n = int64_t(tok.size()), H = 130;
  const Tensor table = bf16_of(host_randn({8, H}, "E")), dy = bf16_of(host_randn({n, H}, "dy"));
  Tensor y = nan_bf16_host({n, H}), gy = nan_bf16_dev({n, H}), ry = nan_host({n, H});
  ops::embedding_forward(y, tok, table, 2);  // this rank owns tokens 2..9
  ops::embedding_forward(gy, tok, dev(table), 2);
  ops::embedding_forward(ry, tok, f32_host(table), 2);
  expect_bf16(gy, y, ry, "embedding y");
  EXPECT_EQ(std::memcmp(to_device(gy, Device::CPU).raw(), y.raw(), y.bytes()), 0);  // rows copied exactly
  Tensor dt = host_randn({8, H}, "dt0"), gdt = dev(dt);  // fp32 main grad
  ops::embedding_backward(dt, dy, tok, 2);
  ops::embedding_backward(gdt, dev(dy), tok, 2);
  EXPECT_LT(rel(gdt, dt), kTol);
}

TEST_F(CudaKernels, Bf16RmsNorm) {
  for (auto [N, H] : {std::pair{7, 12}, {1, 4096}, {67, 33}, {129, 256}}) {
    const std::string what = std::to_string(N) + "x" + std::to_string(H);
    const Tensor x = bf16_of(host_randn({N, H}, "x")), g = bf16_of(host_randn({H}, "g"));
    const Tensor dy = bf16_of(host_randn({N, H}, "dy"));
    Tensor y = nan_bf16_host({N, H}), gy = nan_bf16_dev({N, H}), ry = nan_host({N, H});
    Tensor r = nan_host({N}), gr = nan_dev({N}), rr = nan_host({N});
    ops::rmsnorm_forward(y, r, x, g, 1e-5f);
    ops::rmsnorm_forward(gy, gr, dev(x), dev(g), 1e-5f);
    ops::rmsnorm_forward(ry, rr, f32_host(x), f32_host(g), 1e-5f);
    expect_bf16(gy, y, ry, "rmsnorm y " + what);
    EXPECT_LT(rel(gr, r), kTol) << what;  // rstd stays fp32
    Tensor dx = nan_bf16_host({N, H}), gdx = nan_bf16_dev({N, H}), rdx = nan_host({N, H});
    Tensor dg = host_randn({H}, "dg0"), gdg = dev(dg), rdg = to_device(dg, Device::CPU);  // copies
    ops::rmsnorm_backward(dx, dg, dy, x, r, g);
    ops::rmsnorm_backward(gdx, gdg, dev(dy), dev(x), dev(r), dev(g));
    ops::rmsnorm_backward(rdx, rdg, f32_host(dy), f32_host(x), r, f32_host(g));
    expect_bf16(gdx, dx, rdx, "rmsnorm dx " + what);
    EXPECT_LT(rel(gdg, dg), 1e-5) << what;  // the fp32 main grad
  }
}

TEST_F(CudaKernels, Bf16RopeAndSwiGlu) {
  // S = 37 with two sequences (B = 2), head dims 64 (3 heads) and 128 (2 heads).
  std::vector<int64_t> pos;
  for (int b = 0; b < 2; ++b)
    for (int64_t s = 0; s < 37; ++s) pos.push_back(b == 0 ? s : 4000 + 3 * s);
  const int64_t N = int64_t(pos.size());
  for (auto [heads, D] : {std::pair{3, 64}, {2, 128}}) {
    const std::string what = std::to_string(heads) + "x" + std::to_string(D);
    const int64_t C = int64_t(heads) * D;
    const Tensor x = bf16_of(host_randn({N, C}, "x"));
    Tensor y = nan_bf16_host({N, C}), gy = nan_bf16_dev({N, C}), ry = nan_host({N, C});
    ops::rope_forward(y, x, pos, D, 10000.0);
    ops::rope_forward(gy, dev(x), pos, D, 10000.0);
    ops::rope_forward(ry, f32_host(x), pos, D, 10000.0);
    expect_bf16(gy, y, ry, "rope forward " + what);
    Tensor dx = nan_bf16_host({N, C}), gdx = nan_bf16_dev({N, C}), rdx = nan_host({N, C});
    ops::rope_backward(dx, x, pos, D, 10000.0);
    ops::rope_backward(gdx, dev(x), pos, D, 10000.0);
    ops::rope_backward(rdx, f32_host(x), pos, D, 10000.0);
    expect_bf16(gdx, dx, rdx, "rope backward " + what);
  }
  const int64_t R = 37, F = 129;
  const Tensor a = bf16_of(host_randn({R, F}, "a", 3.0f)), u = bf16_of(host_randn({R, F}, "u"));
  const Tensor dy = bf16_of(host_randn({R, F}, "dy"));
  Tensor s = nan_bf16_host({R, F}), gs = nan_bf16_dev({R, F}), rs = nan_host({R, F});
  ops::swiglu_forward(s, a, u);
  ops::swiglu_forward(gs, dev(a), dev(u));
  ops::swiglu_forward(rs, f32_host(a), f32_host(u));
  expect_bf16(gs, s, rs, "swiglu forward");
  Tensor da = nan_bf16_host({R, F}), du = nan_bf16_host({R, F}), gda = nan_bf16_dev({R, F}), gdu = nan_bf16_dev({R, F});
  Tensor rda = nan_host({R, F}), rdu = nan_host({R, F});
  ops::swiglu_backward(da, du, dy, a, u);
  ops::swiglu_backward(gda, gdu, dev(dy), dev(a), dev(u));
  ops::swiglu_backward(rda, rdu, f32_host(dy), f32_host(a), f32_host(u));
  expect_bf16(gda, da, rda, "swiglu dgate");
  expect_bf16(gdu, du, rdu, "swiglu dup");
}

// Attention with explicit positions and key blocks (ring attention's partial steps): the
// load-balanced CP chunks, unsorted and fully masked blocks, and the model's own causal
// self-attention (default positions).
struct AttnPosCase {
  int64_t B, A, G, D, S;  // S: default query positions 0..S-1 where qpos is empty
  int64_t Sk;             // 0: S
  std::vector<int64_t> qpos, kpos;
};

static std::vector<int64_t> span(int64_t a, int64_t b) {  // a .. b-1
  std::vector<int64_t> p;
  for (int64_t i = a; i < b; ++i) p.push_back(i);
  return p;
}
static std::vector<int64_t> join(std::vector<int64_t> a, const std::vector<int64_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

static std::vector<AttnPosCase> attn_pos_cases() {
  const auto r0 = join(span(0, 4), span(12, 16)), r1 = span(4, 12);           // CP=2, T=16
  const auto c0 = join(span(0, 19), span(57, 76)), c1 = span(19, 57);         // CP=2, T=76
  return {
      {2, 4, 2, 64, 8, 8, r0, r1},                        // queries 0..3 see nothing
      {1, 3, 1, 128, 8, 5, r0, {13, 14, 15, 0, 1}},       // Sk < S, unsorted keys
      {2, 2, 2, 4, 3, 4, {0, 1, 2}, {5, 6, 7, 8}},        // no row sees anything
      {1, 4, 2, 128, 38, 38, c0, c0},                     // the diagonal block, non-contiguous
      {1, 2, 1, 256, 38, 38, c1, c0},                     // the other rank's block, D = 256
      {1, 2, 1, 64, 9, 4, {}, {}},                        // Sk < S, default positions
      {2, 3, 3, 64, 5, 11, {}, {}},                       // Sk > S, default positions
      // Causal self-attention as the model calls it (Sk = S, default positions).
      {2, 4, 2, 64, 37, 0, {}, {}},
      {1, 4, 2, 128, 37, 0, {}, {}},
      {2, 3, 1, 4, 7, 0, {}, {}},
      {1, 2, 2, 128, 65, 0, {}, {}},
  };
}

static ops::AttnShape attn_pos_shape(const AttnPosCase& c) {
  return ops::AttnShape{.B = c.B, .S = c.S, .A = c.A, .G = c.G, .D = c.D, .Sk = c.Sk, .qpos = c.qpos, .kpos = c.kpos};
}

static std::string attn_pos_name(const AttnPosCase& c) {
  return "B" + std::to_string(c.B) + " A" + std::to_string(c.A) + " G" + std::to_string(c.G) + " D" +
         std::to_string(c.D) + " S" + std::to_string(c.S) + " Sk" + std::to_string(c.Sk) +
         (c.qpos.empty() ? " default positions" : " positions");
}

// Statistics as a ring step's backward receives them: the merged LSE over all blocks is at
// least the block's own, and finite where this block sees nothing.
static Tensor merged_lse(const Tensor& lse) {
  Tensor m = f32_host(lse);
  Tensor out = Tensor::empty(m.shape(), MemCategory::Workspace, DType::F32, Device::CPU);
  for (int64_t i = 0; i < m.numel(); ++i) out.f32()[i] = std::isinf(m.f32()[i]) ? 0.5f : m.f32()[i] + 0.25f;
  return out;
}

TEST_F(CudaKernels, AttentionPositionsAndKeyBlocks) {
  for (const AttnPosCase& c : attn_pos_cases()) {
    const ops::AttnShape sh = attn_pos_shape(c);
    const int64_t B = c.B, S = c.S, Sk = sh.keys(), A = c.A, G = c.G, D = c.D;
    const std::string what = attn_pos_name(c);
    Tensor q = host_randn({B * S, A * D}, "q"), k = host_randn({B * Sk, G * D}, "k"), v = host_randn({B * Sk, G * D}, "v");
    Tensor dout = host_randn({B * S, A * D}, "do");
    Tensor o = nan_host({B * S, A * D}), lse = nan_host({B * A, S}), go = nan_dev({B * S, A * D}), glse = nan_dev({B * A, S});
    ops::attention_forward(o, lse, q, k, v, sh);
    ops::attention_forward(go, glse, dev(q), dev(k), dev(v), sh);
    EXPECT_LT(rel(go, o), 1e-5) << what;
    EXPECT_LT(rel(glse, lse, true), 1e-6) << what;
    // From the block's own o and lse, then from merged-like statistics.
    const Tensor om = host_randn({B * S, A * D}, "om");
    for (const auto& [so, sl] : {std::pair{o, lse}, std::pair{om, merged_lse(lse)}}) {
      Tensor dq = nan_host({B * S, A * D}), dk = nan_host({B * Sk, G * D}), dv = nan_host({B * Sk, G * D});
      Tensor gdq = nan_dev({B * S, A * D}), gdk = nan_dev({B * Sk, G * D}), gdv = nan_dev({B * Sk, G * D});
      ops::attention_backward(dq, dk, dv, dout, q, k, v, so, sl, sh);
      ops::attention_backward(gdq, gdk, gdv, dev(dout), dev(q), dev(k), dev(v), dev(so), dev(sl), sh);
      EXPECT_LT(rel(gdq, dq), 1e-5) << what;
      EXPECT_LT(rel(gdk, dk), 1e-5) << what;
      EXPECT_LT(rel(gdv, dv), 1e-5) << what;
    }
  }
}

TEST_F(CudaKernels, Bf16AttentionPositionsAndKeyBlocks) {
  for (const AttnPosCase& c : attn_pos_cases()) {
    const ops::AttnShape sh = attn_pos_shape(c);
    const int64_t B = c.B, S = c.S, Sk = sh.keys(), A = c.A, G = c.G, D = c.D;
    const std::string what = attn_pos_name(c);
    const Tensor q = bf16_of(host_randn({B * S, A * D}, "q")), k = bf16_of(host_randn({B * Sk, G * D}, "k"));
    const Tensor v = bf16_of(host_randn({B * Sk, G * D}, "v")), dout = bf16_of(host_randn({B * S, A * D}, "do"));
    Tensor o = nan_bf16_host({B * S, A * D}), go = nan_bf16_dev({B * S, A * D}), ro = nan_host({B * S, A * D});
    Tensor lse = nan_host({B * A, S}), glse = nan_dev({B * A, S}), rlse = nan_host({B * A, S});
    ops::attention_forward(o, lse, q, k, v, sh);
    ops::attention_forward(go, glse, dev(q), dev(k), dev(v), sh);
    ops::attention_forward(ro, rlse, f32_host(q), f32_host(k), f32_host(v), sh);
    expect_bf16(go, o, ro, "attention o " + what);
    EXPECT_LT(rel(glse, lse, true), 1e-5) << what;  // lse stays fp32
    const Tensor om = bf16_of(host_randn({B * S, A * D}, "om"));
    for (const auto& [so, sl] : {std::pair{o, lse}, std::pair{om, merged_lse(lse)}}) {
      Tensor dq = nan_bf16_host({B * S, A * D}), dk = nan_bf16_host({B * Sk, G * D}), dv = nan_bf16_host({B * Sk, G * D});
      Tensor gdq = nan_bf16_dev({B * S, A * D}), gdk = nan_bf16_dev({B * Sk, G * D}), gdv = nan_bf16_dev({B * Sk, G * D});
      Tensor rdq = nan_host({B * S, A * D}), rdk = nan_host({B * Sk, G * D}), rdv = nan_host({B * Sk, G * D});
      ops::attention_backward(dq, dk, dv, dout, q, k, v, so, sl, sh);
      ops::attention_backward(gdq, gdk, gdv, dev(dout), dev(q), dev(k), dev(v), dev(so), dev(sl), sh);
      ops::attention_backward(rdq, rdk, rdv, f32_host(dout), f32_host(q), f32_host(k), f32_host(v), f32_host(so), sl, sh);
      expect_bf16(gdq, dq, rdq, "attention dq " + what);
      expect_bf16(gdk, dk, rdk, "attention dk " + what);
      expect_bf16(gdv, dv, rdv, "attention dv " + what);
    }
  }
}

TEST_F(CudaKernels, Bf16VocabParallelCrossEntropy) {
  for (auto [N, V] : {std::pair{9, 37}, {5, 1000}}) {
    const std::string what = std::to_string(N) + "x" + std::to_string(V);
    std::vector<int64_t> labels;
    for (int64_t t = 0; t < N; ++t) labels.push_back((t * 131 + 7) % (V + 40));  // some outside [3, 3 + V)
    const Tensor z = bf16_of(host_randn({N, V}, "z", 4.0f)), gz = dev(z), zf = f32_host(z);
    const auto [mx, se, tl] = ce_pieces(z, labels);
    const auto [gmx, gse, gtl] = ce_pieces(gz, labels);
    EXPECT_EQ(rel(gmx, mx), 0.0) << what;  // the max of bf16 values, exact
    EXPECT_LT(rel(gse, se), 1e-5) << what;  // fp32 sums of up to 1000 terms in another order
    EXPECT_EQ(rel(gtl, tl), 0.0) << what;  // a bf16 logit, exact
    EXPECT_NEAR(ops::ce_loss_sum(gmx, gse, gtl), ops::ce_loss_sum(mx, se, tl), 1e-5) << what;
    Tensor dz = nan_bf16_host({N, V}), gdz = nan_bf16_dev({N, V}), rdz = nan_host({N, V});
    ops::ce_backward(dz, z, mx, se, labels, 3, 0.25f);
    ops::ce_backward(gdz, gz, gmx, gse, labels, 3, 0.25f);
    ops::ce_backward(rdz, zf, mx, se, labels, 3, 0.25f);
    expect_bf16(gdz, dz, rdz, "ce dlogits " + what);
  }
}

// The caching allocator's reserved bytes are device memory, so they cannot exceed what the
// driver reports as used (which also holds the context, cuBLAS workspaces, and the like).
TEST_F(CudaKernels, AllocatorReservedWithinDriverUsage) {
  TrackingAllocator& a = TrackingAllocator::device();
  {
    Tensor big = Tensor::empty({int64_t(64) << 20}, MemCategory::Workspace, DType::F32, Device::CUDA);  // 256 MiB
    Tensor small = Tensor::empty({1001}, MemCategory::Workspace, DType::BF16, Device::CUDA);
    EXPECT_GE(a.reserved(), int64_t(big.bytes() + small.bytes()));
    EXPECT_GT(a.driver_used_bytes(), 0);
    EXPECT_LE(a.reserved(), a.driver_used_bytes());
  }
  EXPECT_LE(a.reserved(), a.driver_used_bytes());  // the freed blocks stay cached
  EXPECT_EQ(TrackingAllocator::host().driver_used_bytes(), 0);
}

}  // namespace pb::test
