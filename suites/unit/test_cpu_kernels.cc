/* The optimized CPU kernels (optimized/kernels/cpu) against the reference ops, in fp32,
 * on awkward shapes: S = 37 (no whole tile), S = 130 (three query and key tiles, a last
 * one of 2 rows), a single token, head dims 64 and 128, GQA (A/G = 2 and 4) and A = G.
 *
 *  - Every output is pre-filled with NaN (an element a kernel fails to write shows up);
 *    accumulated outputs (dW, dg) start from known values and must gain exactly the sum.
 *  - Accuracy: relative error ||out - ref|| / ||ref|| against the reference op evaluated in
 *    float64, below 1e-5 (DESIGN.md's fp32 rule: reduction order only). Where the kernel
 *    keeps the reference's per-element arithmetic (RoPE, the CE row max), bitwise against
 *    the reference in fp32.
 *  - Threads: every kernel's outputs for 2 and 3 threads bitwise equal to 1 thread's. */
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "optimized/kernels/cpu/parallel.h"
#include "optimized/kernels/cpu/sgemm.h"
#include "optimized/kernels/ops.h"
#include "reference/common/counter_rng.h"
#include "reference/ops/attention.h"
#include "reference/ops/rmsnorm.h"
#include "reference/ops/rope.h"
#include "reference/ops/swiglu.h"

namespace pb::test {

using MatD = ref::Mat<double>;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

Tensor make(std::vector<int64_t> shape, float fill) {
  Tensor t = Tensor::empty(std::move(shape), MemCategory::Workspace, DType::F32, Device::CPU);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = fill;
  return t;
}
Tensor randn(std::vector<int64_t> shape, const std::string& name, double scale = 1.0) {
  Tensor t = make(std::move(shape), 0.0f);
  CounterRng rng(29, name);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = float(scale * rng.normal(uint64_t(i)));
  return t;
}
// The tensor as a (rows, cols) float64 matrix.
MatD mat(const Tensor& t, int64_t rows, int64_t cols) {
  MatD m(rows, cols);
  for (int64_t i = 0; i < rows * cols; ++i) m.data()[i] = t.f32()[i];
  return m;
}
MatD mat(const Tensor& t) { return mat(t, t.rows(), t.cols()); }
double rel(const Tensor& out, const MatD& ref) {
  const MatD o = mat(out, ref.rows(), ref.cols());
  EXPECT_TRUE(o.allFinite()) << "an output element was not written (NaN) or is not finite";
  const double d = ref.norm();
  return d > 0 ? (o - ref).norm() / d : o.norm();
}
bool same_bits(const Tensor& a, const Tensor& b) {
  return a.numel() == b.numel() && std::memcmp(a.raw(), b.raw(), a.bytes()) == 0;
}

constexpr double kTol = 1e-5;

// Runs `run` (which fills fresh outputs) with 1, 2 and 3 threads; every output of 2 and 3
// threads must equal 1 thread's bit for bit. Returns 1 thread's outputs.
std::vector<Tensor> across_threads(const std::function<std::vector<Tensor>()>& run) {
  cpu::set_threads(1);
  const std::vector<Tensor> one = run();
  for (int n : {2, 3}) {
    cpu::set_threads(n);
    const std::vector<Tensor> many = run();
    for (size_t i = 0; i < one.size(); ++i) EXPECT_TRUE(same_bits(one[i], many[i])) << "output " << i << ", " << n << " threads";
  }
  cpu::set_threads(1);
  return one;
}

// ---- attention ----------------------------------------------------------------------------

struct AttnCase {
  int64_t B, S, A, G, D;
};

// o, lse, dq, dk, dv of the optimized attention (outputs pre-filled with NaN), the same bits
// for 1, 2 and 3 threads (across_threads).
std::vector<Tensor> attention_across_threads(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout,
                                             const ops::AttnShape& sh) {
  return across_threads([&] {
    Tensor o = make(q.shape(), kNaN), lse = make({sh.B * sh.A, sh.S}, kNaN);
    ops::attention_forward(o, lse, q, k, v, sh);
    Tensor dq = make(q.shape(), kNaN), dk = make(k.shape(), kNaN), dv = make(v.shape(), kNaN);
    ops::attention_backward(dq, dk, dv, dout, q, k, v, o, lse, sh);
    return std::vector<Tensor>{o, lse, dq, dk, dv};
  });
}

class Attention : public ::testing::TestWithParam<AttnCase> {};

TEST_P(Attention, ForwardAndBackwardMatchTheReference) {
  const auto [B, S, A, G, D] = GetParam();
  const ops::AttnShape sh{B, S, A, G, D};
  const Tensor q = randn({B * S, A * D}, "q"), k = randn({B * S, G * D}, "k"), v = randn({B * S, G * D}, "v");
  const Tensor dout = randn({B * S, A * D}, "dout");
  const auto outs = attention_across_threads(q, k, v, dout, sh);
  const std::vector<int64_t> pos = ref::iota_positions(S);
  const ref::AttentionShape rs{B, S, S, A, G, D};
  MatD o, lse, dq, dk, dv;
  ref::attention_forward(o, lse, mat(q), mat(k), mat(v), rs, pos, pos);
  ref::attention_backward(dq, dk, dv, mat(dout), mat(q), mat(k), mat(v), o, lse, rs, pos, pos);
  EXPECT_LT(rel(outs[0], o), kTol);
  EXPECT_LT(rel(outs[1], lse), kTol);
  EXPECT_LT(rel(outs[2], dq), kTol);
  EXPECT_LT(rel(outs[3], dk), kTol);
  EXPECT_LT(rel(outs[4], dv), kTol);
}

INSTANTIATE_TEST_SUITE_P(Shapes, Attention,
                         ::testing::Values(AttnCase{2, 37, 4, 2, 64},    // GQA, no whole tile
                                           AttnCase{1, 37, 2, 2, 128},   // A = G, D 128
                                           AttnCase{2, 1, 4, 1, 64},     // one token, one kv head
                                           AttnCase{2, 130, 4, 1, 32},   // three tiles each way, MQA
                                           AttnCase{1, 130, 8, 2, 128},  // GQA 4, D 128, three tiles
                                           AttnCase{4, 128, 8, 4, 32})); // the default model's

// Ring attention's blocks: queries later than every key, a block no query sees (o = 0,
// lse = -inf, no gradient), and positions that are not contiguous (zigzag chunks).
TEST(AttentionPositions, PartialBlocksMatchTheReference) {
  const int64_t B = 2, S = 70, Sk = 67, A = 4, G = 2, D = 64;
  struct Pos {
    std::vector<int64_t> q, k;
  };
  std::vector<Pos> cases(3);
  for (int64_t i = 0; i < S; ++i) {
    cases[0].q.push_back(100 + i);
    cases[1].q.push_back(i);
    cases[2].q.push_back(i < 35 ? i : 200 + i);
  }
  for (int64_t j = 0; j < Sk; ++j) {
    cases[0].k.push_back(j);
    cases[1].k.push_back(500 + j);  // after every query: all masked
    cases[2].k.push_back(j < 33 ? 2 * j : 190 + j);
  }
  const Tensor q = randn({B * S, A * D}, "pq"), k = randn({B * Sk, G * D}, "pk"), v = randn({B * Sk, G * D}, "pv");
  const Tensor dout = randn({B * S, A * D}, "pd");
  for (const Pos& p : cases) {
    const ops::AttnShape sh{B, S, A, G, D, Sk, p.q, p.k};
    const auto outs = attention_across_threads(q, k, v, dout, sh);
    const ref::AttentionShape rs{B, S, Sk, A, G, D};
    MatD o, lse, dq, dk, dv;
    ref::attention_forward(o, lse, mat(q), mat(k), mat(v), rs, p.q, p.k);
    ref::attention_backward(dq, dk, dv, mat(dout), mat(q), mat(k), mat(v), o, lse, rs, p.q, p.k);
    for (int64_t i = 0; i < lse.size(); ++i)  // -inf exactly where the reference has it
      EXPECT_EQ(std::isinf(outs[1].f32()[i]), std::isinf(lse.data()[i])) << "lse element " << i;
    MatD lse_finite = lse, got = mat(outs[1]);
    for (int64_t i = 0; i < lse.size(); ++i)
      if (std::isinf(lse.data()[i])) lse_finite.data()[i] = got.data()[i] = 0;
    EXPECT_LE((got - lse_finite).norm(), kTol * std::max(1.0, lse_finite.norm()));
    EXPECT_LT(rel(outs[0], o), kTol);
    EXPECT_LT(rel(outs[2], dq), kTol);
    EXPECT_LT(rel(outs[3], dk), kTol);
    EXPECT_LT(rel(outs[4], dv), kTol);
  }
}

// ---- RMSNorm, RoPE, SwiGLU -----------------------------------------------------------------

TEST(RmsNorm, ForwardAndBackwardMatchTheReference) {
  for (auto [N, H] : {std::pair<int64_t, int64_t>{37, 64}, {130, 256}, {1, 128}}) {
    const Tensor x = randn({N, H}, "x"), g = randn({H}, "g"), dy = randn({N, H}, "dy");
    const Tensor dg0 = randn({H}, "dg0");  // dg accumulates
    const auto outs = across_threads([&] {
      Tensor y = make({N, H}, kNaN), rstd = make({N}, kNaN), dx = make({N, H}, kNaN), dg = make({H}, 0.0f);
      ops::copy(dg, dg0);
      ops::rmsnorm_forward(y, rstd, x, g, 1e-5f);
      ops::rmsnorm_backward(dx, dg, dy, x, rstd, g);
      return std::vector<Tensor>{y, rstd, dx, dg};
    });
    MatD y, dx, dg = MatD::Zero(1, H);
    ref::Vec<double> rstd;
    ref::rmsnorm_forward(y, rstd, mat(x), mat(g, 1, H), 1e-5);
    ref::rmsnorm_backward(dx, dg, mat(dy), mat(x), rstd, mat(g, 1, H));
    EXPECT_LT(rel(outs[0], y), kTol) << N << "x" << H;
    EXPECT_LT(rel(outs[1], MatD(rstd.transpose())), kTol);
    EXPECT_LT(rel(outs[2], dx), kTol);
    EXPECT_LT(rel(outs[3], mat(dg0, 1, H) + dg), kTol) << "dg += the rows' sum";
  }
}

TEST(Rope, BitwiseTheReference) {
  for (auto [N, W, D] : {std::tuple<int64_t, int64_t, int64_t>{37, 4 * 64, 64}, {130, 2 * 128, 128}, {1, 64, 64}}) {
    const Tensor x = randn({N, W}, "rx");
    std::vector<int64_t> pos;
    for (int64_t t = 0; t < N; ++t) pos.push_back((t * 7) % 41);  // repeated and unordered
    const auto outs = across_threads([&] {
      Tensor y = make({N, W}, kNaN), dx = make({N, W}, kNaN);
      ops::rope_forward(y, x, pos, D, 10000.0);
      ops::rope_backward(dx, x, pos, D, 10000.0);
      return std::vector<Tensor>{y, dx};
    });
    ref::Mat<float> y, dx;
    const ref::Mat<float> xf = mat(x).cast<float>();
    ref::rope_forward(y, xf, pos, D, 10000.0);
    ref::rope_backward(dx, xf, pos, D, 10000.0);
    EXPECT_EQ(std::memcmp(outs[0].f32(), y.data(), outs[0].bytes()), 0) << "forward " << N << "x" << W;
    EXPECT_EQ(std::memcmp(outs[1].f32(), dx.data(), outs[1].bytes()), 0) << "backward " << N << "x" << W;
  }
  // In place (y aliasing x) is the same rotation.
  Tensor x = randn({37, 128}, "rx"), y = make({37, 128}, kNaN);
  const std::vector<int64_t> pos = ref::iota_positions(37);
  ops::rope_forward(y, x, pos, 64, 10000.0);
  ops::rope_forward(x, x, pos, 64, 10000.0);
  EXPECT_TRUE(same_bits(x, y));
}

TEST(SwiGlu, ForwardAndBackwardMatchTheReference) {
  for (auto [N, F] : {std::pair<int64_t, int64_t>{37, 768}, {1, 100}, {130, 3}}) {
    const Tensor a = randn({N, F}, "a", 3.0), u = randn({N, F}, "u"), dy = randn({N, F}, "sdy");
    const auto outs = across_threads([&] {
      Tensor y = make({N, F}, kNaN), da = make({N, F}, kNaN), du = make({N, F}, kNaN);
      ops::swiglu_forward(y, a, u);
      ops::swiglu_backward(da, du, dy, a, u);
      return std::vector<Tensor>{y, da, du};
    });
    MatD y, da, du;
    ref::swiglu_forward(y, mat(a), mat(u));
    ref::swiglu_backward(da, du, mat(dy), mat(a), mat(u));
    EXPECT_LT(rel(outs[0], y), kTol) << N << "x" << F;
    EXPECT_LT(rel(outs[1], da), kTol);
    EXPECT_LT(rel(outs[2], du), kTol);
  }
}

// ---- cross-entropy, AdamW, linear -----------------------------------------------------------

TEST(CrossEntropy, PiecesMatchFloat64) {
  const int64_t N = 37, V = 2048, start = 1000;  // a vocabulary shard: labels outside it too
  const Tensor z = randn({N, V}, "z", 4.0);
  std::vector<int64_t> labels;
  for (int64_t t = 0; t < N; ++t) labels.push_back((t * 389) % 4096);
  const auto outs = across_threads([&] {
    Tensor mx = make({N}, kNaN), se = make({N}, kNaN), tl = make({N}, kNaN), d = make({N, V}, kNaN);
    ops::ce_row_max(mx, z);
    ops::ce_sum_exp(se, z, mx);
    ops::ce_target_logit(tl, z, labels, start);
    ops::ce_backward(d, z, mx, se, labels, start, 0.25f);
    return std::vector<Tensor>{mx, se, tl, d};
  });
  const MatD Z = mat(z);
  MatD mx(N, 1), se(N, 1), tl(N, 1), d(N, V);
  for (int64_t t = 0; t < N; ++t) {
    mx(t) = Z.row(t).maxCoeff();
    se(t) = (Z.row(t).array() - mx(t)).exp().sum();
    const int64_t c = labels[size_t(t)] - start;
    tl(t) = c >= 0 && c < V ? Z(t, c) : 0.0;
    d.row(t) = (Z.row(t).array() - mx(t)).exp() / se(t) * 0.25;
    if (c >= 0 && c < V) d(t, c) -= 0.25;
  }
  EXPECT_EQ(rel(outs[0], mx), 0.0) << "the row max is exact";
  EXPECT_LT(rel(outs[1], se), kTol);
  EXPECT_EQ(rel(outs[2], tl), 0.0) << "the target logit is a copy";
  EXPECT_LT(rel(outs[3], d), kTol);
}

TEST(AdamW, OnePassMatchesFloat64) {
  const int64_t n = 100003;  // several blocks and a ragged end
  const Tensor w0 = randn({n}, "w"), g = randn({n}, "g"), m0 = randn({n}, "m", 0.1);
  Tensor v0 = randn({n}, "v", 0.01);
  for (int64_t i = 0; i < n; ++i) v0.f32()[i] = std::abs(v0.f32()[i]);
  const ops::AdamHyper h{1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1 - 0.9f * 0.9f, 1 - 0.95f * 0.95f, 0.5f};
  const auto outs = across_threads([&] {
    Tensor w = make({n}, 0.0f), m = make({n}, 0.0f), v = make({n}, 0.0f);
    ops::copy(w, w0), ops::copy(m, m0), ops::copy(v, v0);
    ops::adamw(w, g, m, v, h);
    return std::vector<Tensor>{w, m, v};
  });
  MatD w(1, n), m(1, n), v(1, n);
  for (int64_t i = 0; i < n; ++i) {
    const double gi = double(h.grad_scale) * g.f32()[i];
    const double wi = double(w0.f32()[i]) * (1 - double(h.lr) * h.weight_decay);
    m(i) = h.beta1 * double(m0.f32()[i]) + (1 - double(h.beta1)) * gi;
    v(i) = h.beta2 * double(v0.f32()[i]) + (1 - double(h.beta2)) * gi * gi;
    w(i) = wi - h.lr * (m(i) / h.bias_corr1) / (std::sqrt(v(i) / h.bias_corr2) + h.eps);
  }
  EXPECT_LT(rel(outs[0], w), 1e-6);
  EXPECT_LT(rel(outs[1], m), 1e-6);
  EXPECT_LT(rel(outs[2], v), 1e-6);
}

TEST(Linear, ProductsMatchFloat64) {
  // (100, 300, 272): fewer than 256 rows, so the blocks split the columns (linear.cc), and
  // more than one k-block of the SGEMM (KC 256).
  for (auto [N, in, out] : {std::tuple<int64_t, int64_t, int64_t>{37, 64, 130}, {512, 256, 768}, {1, 128, 64},
                            {300, 96, 2048}, {100, 300, 272}}) {
    const Tensor x = randn({N, in}, "lx"), w = randn({out, in}, "lw"), dy = randn({N, out}, "ldy");
    const Tensor dw0 = randn({out, in}, "ldw0");
    const auto outs = across_threads([&] {
      Tensor y = make({N, out}, kNaN), dx = make({N, in}, kNaN), dw = make({out, in}, 0.0f);
      Tensor p = make({out, in}, kNaN);
      ops::copy(dw, dw0);
      ops::linear_forward(y, x, w);
      ops::linear_backward_input(dx, dy, w);
      ops::linear_backward_weight(dw, dy, x);
      ops::linear_weight_product(p, dy, x);
      return std::vector<Tensor>{y, dx, dw, p};
    });
    const MatD X = mat(x), W = mat(w), DY = mat(dy);
    EXPECT_LT(rel(outs[0], X * W.transpose()), kTol) << N << " " << in << " " << out;
    EXPECT_LT(rel(outs[1], DY * W), kTol);
    EXPECT_LT(rel(outs[2], mat(dw0) + DY.transpose() * X), kTol) << "dW += dy^T x";
    EXPECT_LT(rel(outs[3], DY.transpose() * X), kTol);
  }
}

// Row-stable products (sgemm.h), which MC2's chunked linears rely on: the rows of y and dx
// computed in chunks of any length at any offset are bitwise the whole product's rows.
TEST(Linear, RowsAreTheSameInChunks) {
  const int64_t N = 101, in = 296, out = 40;  // in > KC: two k-blocks
  const Tensor x = randn({N, in}, "cx"), w = randn({out, in}, "cw"), dy = randn({N, out}, "cdy");
  Tensor y = make({N, out}, kNaN), dx = make({N, in}, kNaN);
  ops::linear_forward(y, x, w);
  ops::linear_backward_input(dx, dy, w);
  // The Eigen fallback (no AVX2/FMA) is stable in groups of 4 rows only (sgemm.h).
  const std::vector<int64_t> lens = cpu::sgemm_rows_stable() ? std::vector<int64_t>{1, 2, 3, 4, 5, 8, 12, 13, 30, 48, 100}
                                                             : std::vector<int64_t>{4, 8, 12, 48, 100};
  for (int64_t len : lens) {
    for (int64_t b = 0; b < N; b += len) {
      const int64_t n = std::min(len, N - b);
      const Tensor xc = x.view(b * in, {n, in}), dyc = dy.view(b * out, {n, out});
      Tensor yc = make({n, out}, kNaN), dxc = make({n, in}, kNaN);
      ops::linear_forward(yc, xc, w);
      ops::linear_backward_input(dxc, dyc, w);
      ASSERT_TRUE(same_bits(yc, y.view(b * out, {n, out}))) << "y rows " << b << ".." << b + n;
      ASSERT_TRUE(same_bits(dxc, dx.view(b * in, {n, in}))) << "dx rows " << b << ".." << b + n;
    }
  }
}

// ---- the pool -------------------------------------------------------------------------------

TEST(Pool, RunsEveryTaskOnceAndRethrows) {
  for (int n : {1, 2, 3, 8}) {
    cpu::set_threads(n);
    EXPECT_EQ(cpu::threads(), n);
    std::vector<int> hits(1000, 0);
    for (int rep = 0; rep < 20; ++rep) cpu::parallel_for(1000, [&](int64_t t) { ++hits[size_t(t)]; });
    for (int h : hits) ASSERT_EQ(h, 20);
    // Nested: the inner loop runs inline in the task.
    std::vector<int> inner(64, 0);
    cpu::parallel_for(8, [&](int64_t t) { cpu::parallel_for(8, [&](int64_t u) { ++inner[size_t(t * 8 + u)]; }); });
    for (int h : inner) ASSERT_EQ(h, 1);
    EXPECT_THROW(cpu::parallel_for(10, [](int64_t t) { PB_REQUIRE(t != 7, "task 7 fails"); }), Error);
  }
  cpu::set_threads(1);
  EXPECT_THROW(cpu::set_threads(0), Error);
}

}  // namespace pb::test
