/* Attention of the optimized path with explicit positions and a key block of its own
 * length (ops::AttnShape's Sk, qpos, kpos), on the CPU backend, as ring attention's
 * partial steps use it (Liu et al., arXiv 2310.01889; load-balanced causal CP, where a
 * rank holds chunks r and 2CP-1-r, so its positions are not contiguous).
 *
 * Simulated ring: every query set attends to every key block separately; the partial
 * (o, lse) are merged by the log-sum-exp rule
 *   m = max_t l_t;  lse = m + log sum_t e^(l_t - m);  o = sum_t e^(l_t - m) o_t / sum_t e^(l_t - m)
 * and must equal full causal attention over the whole sequence (the default AttnShape)
 * at the query set's rows, in fp32 (relative error < 1e-5). Rows that see nothing of a
 * block get o = 0 and lse = -inf there. The backward of each block, from the merged o
 * and lse (FlashAttention's D_i = dO_i . o_i uses the merged o), summed over blocks for dQ
 * and over query sets for dK and dV, must equal the full backward.
 *
 * ops::attention_merge is the same merge as an op, two results at a time, in place: key
 * blocks merged one by one into o = 0, lse = -inf must give full attention (fp32: relative
 * error < 1e-5; o in bf16: < 1e-2), a block that sees nothing must leave o and lse bit for
 * bit, and the first block merged into the empty state must come out bit for bit. */
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "optimized/kernels/ops.h"
#include "reference/common/counter_rng.h"
#include "reference/common/error.h"

namespace pb::test {

using Positions = std::vector<int64_t>;

static Tensor randn(std::vector<int64_t> shape, const std::string& name) {
  Tensor t = Tensor::empty(std::move(shape), MemCategory::Workspace, DType::F32, Device::CPU);
  CounterRng rng(13, name);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = float(rng.normal(uint64_t(i)));
  return t;
}

static Tensor nans(std::vector<int64_t> shape) {
  Tensor t = Tensor::empty(std::move(shape), MemCategory::Workspace, DType::F32, Device::CPU);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = std::numeric_limits<float>::quiet_NaN();
  return t;
}

// Token rows of B sequences of T tokens (row b*T + t, as activations are laid out), at
// positions p of every sequence: (B*|p|, cols).
static Tensor gather_rows(const Tensor& x, int64_t B, int64_t T, const Positions& p) {
  const int64_t n = int64_t(p.size()), C = x.cols();
  Tensor y = Tensor::empty({B * n, C}, MemCategory::Workspace, DType::F32, Device::CPU);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < C; ++c) y.f32()[(b * n + i) * C + c] = x.f32()[(b * T + p[size_t(i)]) * C + c];
  return y;
}

// Columns p of an lse (rows, T): (rows, |p|).
static Tensor gather_cols(const Tensor& x, int64_t T, const Positions& p) {
  const int64_t R = x.numel() / T, n = int64_t(p.size());
  Tensor y = Tensor::empty({R, n}, MemCategory::Workspace, DType::F32, Device::CPU);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t i = 0; i < n; ++i) y.f32()[r * n + i] = x.f32()[r * T + p[size_t(i)]];
  return y;
}

// ||x - ref|| / ||ref|| over doubles; a non-finite x fails.
static double rel(const std::vector<double>& x, const Tensor& ref) {
  if (int64_t(x.size()) != ref.numel()) return INFINITY;
  double d = 0, n = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    if (!std::isfinite(x[size_t(i)])) return INFINITY;
    const double r = ref.f32()[i];
    d += (x[size_t(i)] - r) * (x[size_t(i)] - r);
    n += r * r;
  }
  return n > 0 ? std::sqrt(d / n) : std::sqrt(d);
}
static std::vector<double> values(const Tensor& t) { return std::vector<double>(t.f32(), t.f32() + t.numel()); }
static void add_to(std::vector<double>& acc, const Tensor& t) {
  if (acc.empty()) acc.assign(size_t(t.numel()), 0.0);
  for (int64_t i = 0; i < t.numel(); ++i) acc[size_t(i)] += t.f32()[i];
}

struct Layout {
  std::string name;
  int64_t T;                      // tokens per sequence
  std::vector<Positions> qsets;   // the query rows of each rank (union: 0..T-1)
  std::vector<Positions> kblocks; // the key/value blocks that travel round the ring (union: 0..T-1)
};

struct Errors {
  double o = 0, lse = 0, dq = 0, dk = 0, dv = 0;
  int64_t masked_rows = 0;  // (query row, head, block) triples that see nothing of the block
};

// Full attention over T tokens against the simulated ring over the layout's blocks.
static Errors ring_vs_full(const Layout& L, int64_t B, int64_t A, int64_t G, int64_t D) {
  const int64_t T = L.T;
  const Tensor Q = randn({B * T, A * D}, "q"), K = randn({B * T, G * D}, "k"), V = randn({B * T, G * D}, "v");
  const Tensor dO = randn({B * T, A * D}, "do");
  Tensor O = nans({B * T, A * D}), lse = nans({B * A, T});
  Tensor dQ = nans({B * T, A * D}), dK = nans({B * T, G * D}), dV = nans({B * T, G * D});
  const ops::AttnShape full{B, T, A, G, D};  // the model's call: causal over 0..T-1
  ops::attention_forward(O, lse, Q, K, V, full);
  ops::attention_backward(dQ, dK, dV, dO, Q, K, V, O, lse, full);

  Errors e;
  const size_t nk = L.kblocks.size();
  std::vector<Tensor> kb(nk), vb(nk);
  std::vector<std::vector<double>> dk_acc(nk), dv_acc(nk);
  for (size_t t = 0; t < nk; ++t) {
    kb[t] = gather_rows(K, B, T, L.kblocks[t]);
    vb[t] = gather_rows(V, B, T, L.kblocks[t]);
  }
  for (const Positions& qp : L.qsets) {
    const int64_t S = int64_t(qp.size());
    const Tensor q = gather_rows(Q, B, T, qp), dout = gather_rows(dO, B, T, qp);
    std::vector<ops::AttnShape> sh;
    std::vector<Tensor> o_t, l_t;
    for (size_t t = 0; t < nk; ++t) {
      sh.push_back(ops::AttnShape{.B = B, .S = S, .A = A, .G = G, .D = D, .Sk = int64_t(L.kblocks[t].size()),
                                  .qpos = qp, .kpos = L.kblocks[t]});
      o_t.push_back(nans({B * S, A * D}));
      l_t.push_back(nans({B * A, S}));
      ops::attention_forward(o_t[t], l_t[t], q, kb[t], vb[t], sh[t]);
      // Rows that see nothing of this block: lse = -inf and o = 0 exactly.
      for (int64_t r = 0; r < B * A; ++r)
        for (int64_t i = 0; i < S; ++i) {
          const float l = l_t[t].f32()[r * S + i];
          EXPECT_FALSE(std::isnan(l));
          if (!(std::isinf(l) && l < 0)) continue;
          ++e.masked_rows;
          const int64_t b = r / A, a = r % A;
          for (int64_t d = 0; d < D; ++d) EXPECT_EQ(o_t[t].f32()[(b * S + i) * A * D + a * D + d], 0.0f);
        }
    }
    // LSE merge in double, kept as the fp32 tensors that the backward saves.
    Tensor o = nans({B * S, A * D}), l = nans({B * A, S});
    std::vector<double> o_d(size_t(B * S * A * D)), l_d(size_t(B * A * S));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t a = 0; a < A; ++a)
        for (int64_t i = 0; i < S; ++i) {
          const int64_t h = (b * A + a) * S + i, row = (b * S + i) * A * D + a * D;
          double m = -INFINITY;
          for (size_t t = 0; t < nk; ++t) m = std::max(m, double(l_t[t].f32()[h]));
          if (!std::isfinite(m)) {
            ADD_FAILURE() << L.name << ": a query row sees no block (every query sees at least itself)";
            continue;
          }
          double wsum = 0;
          std::vector<double> acc(size_t(D), 0.0);
          for (size_t t = 0; t < nk; ++t) {
            const double w = std::exp(double(l_t[t].f32()[h]) - m);  // 0 for a block it does not see
            wsum += w;
            for (int64_t d = 0; d < D; ++d) acc[size_t(d)] += w * o_t[t].f32()[row + d];
          }
          l_d[size_t(h)] = m + std::log(wsum);
          l.f32()[h] = float(l_d[size_t(h)]);
          for (int64_t d = 0; d < D; ++d) {
            o_d[size_t(row + d)] = acc[size_t(d)] / wsum;
            o.f32()[row + d] = float(o_d[size_t(row + d)]);
          }
        }
    e.o = std::max(e.o, rel(o_d, gather_rows(O, B, T, qp)));
    e.lse = std::max(e.lse, rel(l_d, gather_cols(lse, T, qp)));
    // Backward: every block from the merged o and lse; dQ summed over blocks, dK and dV
    // over the query sets (the ring passes them back to the block's owner).
    std::vector<double> dq_acc;
    for (size_t t = 0; t < nk; ++t) {
      const int64_t Sk = sh[t].Sk;
      Tensor dq = nans({B * S, A * D}), dk = nans({B * Sk, G * D}), dv = nans({B * Sk, G * D});
      ops::attention_backward(dq, dk, dv, dout, q, kb[t], vb[t], o, l, sh[t]);
      add_to(dq_acc, dq);
      add_to(dk_acc[t], dk);
      add_to(dv_acc[t], dv);
    }
    e.dq = std::max(e.dq, rel(dq_acc, gather_rows(dQ, B, T, qp)));
  }
  for (size_t t = 0; t < nk; ++t) {
    e.dk = std::max(e.dk, rel(dk_acc[t], gather_rows(dK, B, T, L.kblocks[t])));
    e.dv = std::max(e.dv, rel(dv_acc[t], gather_rows(dV, B, T, L.kblocks[t])));
  }
  std::printf("[ measured ] %s: rel err o %.2e lse %.2e dq %.2e dk %.2e dv %.2e, %lld fully masked (row, head, block)\n",
              L.name.c_str(), e.o, e.lse, e.dq, e.dk, e.dv, static_cast<long long>(e.masked_rows));
  return e;
}

static Positions range(int64_t a, int64_t b) {  // a .. b-1
  Positions p;
  for (int64_t i = a; i < b; ++i) p.push_back(i);
  return p;
}
static Positions cat(Positions a, const Positions& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

static void expect_small(const Errors& e) {
  EXPECT_LT(e.o, 1e-5);
  EXPECT_LT(e.lse, 1e-5);
  EXPECT_LT(e.dq, 1e-5);
  EXPECT_LT(e.dk, 1e-5);
  EXPECT_LT(e.dv, 1e-5);
  EXPECT_GT(e.masked_rows, 0);
}

// CP = 2, load-balanced: 4 chunks of 4; rank 0 holds chunks 0 and 3, rank 1 chunks 1 and 2.
// Each rank's key block is its own chunks: rank 0's queries 0..3 see nothing of rank 1's
// block {4..11}.
TEST(AttentionPositions, LoadBalancedRingCp2EqualsFullAttention) {
  const Positions r0 = cat(range(0, 4), range(12, 16)), r1 = range(4, 12);
  const Layout L{"load-balanced CP=2, T=16", 16, {r0, r1}, {r0, r1}};
  expect_small(ring_vs_full(L, 2, 4, 2, 8));  // GQA, 2 query heads per kv head
}

// Key blocks of other lengths than the query blocks (Sk = 5, 3, 3 against S = 5, 6),
// one of them in no sorted order, over a prime number of tokens, MQA.
TEST(AttentionPositions, UnevenKeyBlocksEqualFullAttention) {
  const Positions r0 = cat(range(0, 3), range(9, 11)), r1 = range(3, 9);
  const Layout L{"uneven blocks, T=11", 11, {r0, r1}, {{9, 10, 0, 2, 1}, range(3, 6), range(6, 9)}};
  expect_small(ring_vs_full(L, 1, 3, 1, 4));
}

// CP = 3, load-balanced over 6 chunks of 3 (rank r: chunks r and 5-r), one key block per
// rank, MHA with an odd head dim.
TEST(AttentionPositions, LoadBalancedRingCp3EqualsFullAttention) {
  std::vector<Positions> ranks;
  for (int64_t r = 0; r < 3; ++r) ranks.push_back(cat(range(3 * r, 3 * r + 3), range(3 * (5 - r), 3 * (5 - r) + 3)));
  const Layout L{"load-balanced CP=3, T=18", 18, ranks, ranks};
  expect_small(ring_vs_full(L, 2, 2, 2, 5));
}

// Explicit positions 0..S-1 and Sk = S are the defaults, bit for bit.
TEST(AttentionPositions, ExplicitDefaultPositionsAreBitwiseTheDefault) {
  const int64_t B = 2, S = 7, A = 4, G = 2, D = 6;
  const Tensor q = randn({B * S, A * D}, "q"), k = randn({B * S, G * D}, "k"), v = randn({B * S, G * D}, "v");
  const Tensor dO = randn({B * S, A * D}, "do");
  const ops::AttnShape def{B, S, A, G, D};
  const ops::AttnShape expl{.B = B, .S = S, .A = A, .G = G, .D = D, .Sk = S, .qpos = range(0, S), .kpos = range(0, S)};
  Tensor o1 = nans({B * S, A * D}), l1 = nans({B * A, S}), o2 = nans({B * S, A * D}), l2 = nans({B * A, S});
  ops::attention_forward(o1, l1, q, k, v, def);
  ops::attention_forward(o2, l2, q, k, v, expl);
  EXPECT_EQ(values(o1), values(o2));
  EXPECT_EQ(values(l1), values(l2));
  Tensor dq1 = nans({B * S, A * D}), dk1 = nans({B * S, G * D}), dv1 = nans({B * S, G * D});
  Tensor dq2 = nans({B * S, A * D}), dk2 = nans({B * S, G * D}), dv2 = nans({B * S, G * D});
  ops::attention_backward(dq1, dk1, dv1, dO, q, k, v, o1, l1, def);
  ops::attention_backward(dq2, dk2, dv2, dO, q, k, v, o1, l1, expl);
  EXPECT_EQ(values(dq1), values(dq2));
  EXPECT_EQ(values(dk1), values(dk2));
  EXPECT_EQ(values(dv1), values(dv2));
}

// A key block entirely after the query block: every row sees nothing, o = 0, lse = -inf,
// and the backward (with any finite saved statistics of the merged result) gives zeros.
TEST(AttentionPositions, FullyMaskedBlockGivesZeroAndMinusInfinity) {
  const int64_t B = 1, S = 3, Sk = 4, A = 2, G = 1, D = 4;
  const ops::AttnShape sh{.B = B, .S = S, .A = A, .G = G, .D = D, .Sk = Sk, .qpos = {0, 1, 2}, .kpos = {3, 4, 5, 6}};
  const Tensor q = randn({B * S, A * D}, "q"), k = randn({B * Sk, G * D}, "k"), v = randn({B * Sk, G * D}, "v");
  Tensor o = nans({B * S, A * D}), l = nans({B * A, S});
  ops::attention_forward(o, l, q, k, v, sh);
  for (float x : values(o)) EXPECT_EQ(x, 0.0f);
  for (float x : values(l)) EXPECT_TRUE(std::isinf(x) && x < 0);
  const Tensor dO = randn({B * S, A * D}, "do"), om = randn({B * S, A * D}, "om"), lm = randn({B * A, S}, "lm");
  Tensor dq = nans({B * S, A * D}), dk = nans({B * Sk, G * D}), dv = nans({B * Sk, G * D});
  ops::attention_backward(dq, dk, dv, dO, q, k, v, om, lm, sh);
  for (const Tensor* t : {&dq, &dk, &dv})
    for (float x : values(*t)) EXPECT_EQ(x, 0.0f);
}

TEST(AttentionPositions, RejectsPositionListsOfTheWrongLength) {
  const int64_t B = 1, S = 3, A = 1, G = 1, D = 2;
  const Tensor q = randn({B * S, A * D}, "q"), k = randn({B * 2, G * D}, "k"), v = randn({B * 2, G * D}, "v");
  Tensor o = nans({B * S, A * D}), l = nans({B * A, S});
  EXPECT_THROW(ops::attention_forward(o, l, q, k, v, ops::AttnShape{.B = B, .S = S, .A = A, .G = G, .D = D, .Sk = 2,
                                                                     .qpos = {0, 1}, .kpos = {0, 1}}),
               Error);
  EXPECT_THROW(ops::attention_forward(o, l, q, k, v, ops::AttnShape{.B = B, .S = S, .A = A, .G = G, .D = D, .Sk = 2,
                                                                     .qpos = {0, 1, 2}, .kpos = {0, 1, 2}}),
               Error);
  EXPECT_THROW(ops::attention_forward(o, l, q, k, v, ops::AttnShape{B, S, A, G, D}), Error);  // k has 2 rows, not 3
}


// --- ops::attention_merge --------------------------------------------------------------

static Tensor minus_inf(std::vector<int64_t> shape) {
  Tensor t = Tensor::empty(std::move(shape), MemCategory::Workspace, DType::F32, Device::CPU);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = -INFINITY;
  return t;
}
static Tensor in_dtype(const Tensor& t, DType dt) {  // an fp32 tensor as fp32 or rounded to bf16
  if (dt == DType::F32) return t;
  Tensor y = Tensor::empty(t.shape(), MemCategory::Workspace, dt, Device::CPU);
  ops::cast(y, t);
  return y;
}
static std::vector<double> as_doubles(const Tensor& t) {  // fp32 or bf16
  std::vector<double> v(size_t(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i)
    v[size_t(i)] = t.dtype() == DType::BF16 ? bf16_to_float(t.bf16_bits()[i]) : t.f32()[i];
  return v;
}
static Tensor clone(const Tensor& t) {
  Tensor c = Tensor::empty(t.shape(), MemCategory::Workspace, t.dtype(), Device::CPU);
  std::memcpy(c.raw(), t.raw(), t.bytes());
  return c;
}
static bool same_bits(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.bytes() == b.bytes() && std::memcmp(a.raw(), b.raw(), a.bytes()) == 0;
}

struct MergeErrors {
  double o = 0, lse = 0;
  int64_t masked_rows = 0;  // (query row, head, block) triples that see nothing of the block
};

// Causal attention of every query 0..T-1 of B sequences, one attention_forward per key
// block (o of the block in dtype dt), merged block by block with ops::attention_merge from
// o = 0, lse = -inf, against one full attention_forward in fp32.
static MergeErrors merged_vs_full(const std::string& name, int64_t T, const std::vector<Positions>& kblocks, DType dt,
                                  int64_t B, int64_t A, int64_t G, int64_t D) {
  const Tensor Q = randn({B * T, A * D}, "q"), K = randn({B * T, G * D}, "k"), V = randn({B * T, G * D}, "v");
  Tensor O = nans({B * T, A * D}), lse = nans({B * A, T});
  ops::attention_forward(O, lse, Q, K, V, ops::AttnShape{B, T, A, G, D});

  MergeErrors e;
  Tensor o = Tensor::zeros({B * T, A * D}, MemCategory::Workspace, dt, Device::CPU), l = minus_inf({B * A, T});
  for (const Positions& kp : kblocks) {
    const ops::AttnShape sh{.B = B, .S = T, .A = A, .G = G, .D = D, .Sk = int64_t(kp.size()), .qpos = range(0, T),
                            .kpos = kp};
    Tensor ob = Tensor::empty({B * T, A * D}, MemCategory::Workspace, dt, Device::CPU), lb = nans({B * A, T});
    ops::attention_forward(ob, lb, Q, gather_rows(K, B, T, kp), gather_rows(V, B, T, kp), sh);
    for (float x : values(lb)) e.masked_rows += std::isinf(x) && x < 0;
    ops::attention_merge(o, l, ob, lb, B, A, D);
  }
  e.o = rel(as_doubles(o), O);
  e.lse = rel(values(l), lse);
  std::printf("[ measured ] merge, %s (%s): rel err o %.2e lse %.2e, %lld fully masked (row, head, block)\n",
              name.c_str(), dtype_name(dt), e.o, e.lse, static_cast<long long>(e.masked_rows));
  return e;
}

// Two load-balanced blocks (CP = 2 over 4 chunks) and four uneven ones, one unsorted;
// B = 2, GQA with 2 query heads per kv head.
TEST(AttentionMerge, MergedKeyBlocksEqualFullAttention) {
  const std::vector<Positions> two = {cat(range(0, 4), range(12, 16)), range(4, 12)};
  const std::vector<Positions> four = {{13, 2, 7, 0}, {1, 3, 4, 5, 6}, range(8, 13), {14, 15}};
  for (const auto& [name, blocks] : {std::pair{"2 blocks, T=16", two}, std::pair{"4 blocks, T=16", four}}) {
    const MergeErrors e = merged_vs_full(name, 16, blocks, DType::F32, 2, 4, 2, 8);
    EXPECT_LT(e.o, 1e-5) << name;
    EXPECT_LT(e.lse, 1e-5) << name;
    EXPECT_GT(e.masked_rows, 0) << name;
  }
}

// o and every block's o in bf16 (the emulation on the CPU); lse stays fp32.
TEST(AttentionMerge, MergedBf16KeyBlocksMatchFullAttention) {
  const std::vector<Positions> three = {range(0, 5), cat(range(5, 8), range(13, 16)), range(8, 13)};
  const MergeErrors e = merged_vs_full("3 blocks, T=16", 16, three, DType::BF16, 2, 4, 2, 8);
  EXPECT_LT(e.o, 1e-2);
  EXPECT_LT(e.lse, 1e-5);
  EXPECT_GT(e.masked_rows, 0);
}

// A block that sees nothing (lse -inf everywhere) leaves any state bit for bit, including
// its rows with lse = -inf; a block merged into o = 0, lse = -inf comes out bit for bit,
// its rows that see nothing included.
TEST(AttentionMerge, MaskedBlockLeavesStateAndEmptyStateTakesTheBlockBitwise) {
  const int64_t B = 2, n = 6, A = 4, G = 2, D = 8;
  for (DType dt : {DType::F32, DType::BF16}) {
    Tensor o = in_dtype(randn({B * n, A * D}, "o"), dt), l = randn({B * A, n}, "l");
    for (int64_t h = 0; h < l.numel(); h += 3) l.f32()[h] = -INFINITY;
    const Tensor o0 = clone(o), l0 = clone(l);
    ops::attention_merge(o, l, in_dtype(randn({B * n, A * D}, "ob"), dt), minus_inf({B * A, n}), B, A, D);
    EXPECT_TRUE(same_bits(o, o0)) << dtype_name(dt);
    EXPECT_TRUE(same_bits(l, l0)) << dtype_name(dt);

    // Queries at 0..5, keys at 3..6: queries 0..2 see nothing of the block.
    const ops::AttnShape sh{.B = B, .S = n, .A = A, .G = G, .D = D, .Sk = 4, .qpos = range(0, n), .kpos = range(3, 7)};
    Tensor ob = Tensor::empty({B * n, A * D}, MemCategory::Workspace, dt, Device::CPU), lb = nans({B * A, n});
    ops::attention_forward(ob, lb, randn({B * n, A * D}, "q"), randn({B * 4, G * D}, "k"), randn({B * 4, G * D}, "v"),
                           sh);
    Tensor e = Tensor::zeros({B * n, A * D}, MemCategory::Workspace, dt, Device::CPU), le = minus_inf({B * A, n});
    ops::attention_merge(e, le, ob, lb, B, A, D);
    EXPECT_TRUE(same_bits(e, ob)) << dtype_name(dt);
    EXPECT_TRUE(same_bits(le, lb)) << dtype_name(dt);
  }
}

TEST(AttentionMerge, RejectsMismatchedShapes) {
  const int64_t B = 2, n = 3, A = 2, D = 4;
  Tensor o = Tensor::zeros({B * n, A * D}, MemCategory::Workspace, DType::F32, Device::CPU), l = minus_inf({B * A, n});
  const Tensor ob = randn({B * n, A * D}, "ob"), lb = randn({B * A, n}, "lb");
  EXPECT_THROW(ops::attention_merge(o, l, ob, randn({B * A, n + 1}, "lb"), B, A, D), Error);
  EXPECT_THROW(ops::attention_merge(o, l, randn({B * n, A * D + 1}, "ob"), lb, B, A, D), Error);
  EXPECT_THROW(ops::attention_merge(o, l, ob, lb, B, A, D + 1), Error);
  EXPECT_THROW(ops::attention_merge(o, l, ob, lb, B, A + 1, D), Error);
}

}  // namespace pb::test
