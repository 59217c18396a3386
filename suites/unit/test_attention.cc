/* Causal GQA attention: forward against an independent matrix formulation, LSE merging
 * of key blocks (what ring attention relies on), and backward against central finite
 * differences (float64), including GQA and awkward sizes (S=7, H=12, A=3). */
#include <limits>

#include "reference/ops/attention.h"
#include "test_util.h"

namespace pb::test {

using ref::AttentionShape;

// softmax(scale Q K^T + causal mask) V per (b, a), with whole matrices.
static void naive_attention(MatD& o, MatD& lse, const MatD& q, const MatD& k, const MatD& v, const AttentionShape& s) {
  o = MatD::Zero(s.B * s.Sq, s.A * s.D);
  lse.resize(s.B * s.A, s.Sq);
  for (Index b = 0; b < s.B; ++b)
    for (Index a = 0; a < s.A; ++a) {
      const Index g = a / (s.A / s.G);
      MatD Q = q.block(b * s.Sq, a * s.D, s.Sq, s.D), K = k.block(b * s.Sk, g * s.D, s.Sk, s.D),
           V = v.block(b * s.Sk, g * s.D, s.Sk, s.D);
      MatD sc = Q * K.transpose() / std::sqrt(double(s.D));
      for (Index i = 0; i < s.Sq; ++i)
        for (Index j = i + 1; j < s.Sk; ++j) sc(i, j) = -std::numeric_limits<double>::infinity();
      for (Index i = 0; i < s.Sq; ++i) {
        const double m = sc.row(i).maxCoeff();
        const double l = (sc.row(i).array() - m).exp().sum();
        lse(b * s.A + a, i) = m + std::log(l);
        sc.row(i) = (sc.row(i).array() - lse(b * s.A + a, i)).exp().matrix();
      }
      o.block(b * s.Sq, a * s.D, s.Sq, s.D) = sc * V;
    }
}

struct Case {
  Index B, S, A, G, D;
};

class AttentionTest : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionTest, ForwardMatchesMatrixFormulation) {
  const auto c = GetParam();
  const AttentionShape sh{c.B, c.S, c.S, c.A, c.G, c.D};
  MatD q = randn(c.B * c.S, c.A * c.D, "q"), k = randn(c.B * c.S, c.G * c.D, "k"), v = randn(c.B * c.S, c.G * c.D, "v");
  MatD o = ref::nan_mat<double>(1, 1), lse, o2, lse2;
  const auto pos = ref::iota_positions(c.S);
  ref::attention_forward(o, lse, q, k, v, sh, pos, pos);
  naive_attention(o2, lse2, q, k, v, sh);
  EXPECT_LT((o - o2).norm() / o2.norm(), 1e-13);
  EXPECT_LT((lse - lse2).norm() / lse2.norm(), 1e-13);
}

TEST_P(AttentionTest, BackwardMatchesFiniteDifferences) {
  const auto c = GetParam();
  const AttentionShape sh{c.B, c.S, c.S, c.A, c.G, c.D};
  MatD q = randn(c.B * c.S, c.A * c.D, "q"), k = randn(c.B * c.S, c.G * c.D, "k"), v = randn(c.B * c.S, c.G * c.D, "v");
  MatD r = randn(c.B * c.S, c.A * c.D, "r");
  const auto pos = ref::iota_positions(c.S);
  auto loss = [&] {
    MatD o, lse;
    ref::attention_forward(o, lse, q, k, v, sh, pos, pos);
    return dot(o, r);
  };
  MatD o, lse, dq = ref::nan_mat<double>(1, 1), dk = dq, dv = dq;
  ref::attention_forward(o, lse, q, k, v, sh, pos, pos);
  ref::attention_backward(dq, dk, dv, r, q, k, v, o, lse, sh, pos, pos);
  EXPECT_LT(fd_rel_error(loss, q, dq), kFdTol);
  EXPECT_LT(fd_rel_error(loss, k, dk), kFdTol);
  EXPECT_LT(fd_rel_error(loss, v, dv), kFdTol);
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionTest,
                         ::testing::Values(Case{2, 7, 3, 3, 4},   // S=7, H=12, A=3 (MHA)
                                           Case{2, 7, 3, 1, 4},   // MQA
                                           Case{1, 5, 4, 2, 6},   // GQA 2 query heads per kv head
                                           Case{1, 1, 2, 1, 2},   // one token
                                           Case{3, 4, 6, 2, 2}),  // GQA 3 per kv head
                         [](const auto& info) {
                           const Case& c = info.param;
                           return "B" + std::to_string(c.B) + "S" + std::to_string(c.S) + "A" + std::to_string(c.A) +
                                  "G" + std::to_string(c.G) + "D" + std::to_string(c.D);
                         });

// Splitting the keys into two blocks and merging the partial results with their LSE
// (m = max(l1, l2); O = (e^(l1-m) O1 + e^(l2-m) O2) / (e^(l1-m) + e^(l2-m))) gives full
// attention, including rows that see nothing of one block (lse = -inf there).
TEST(Attention, LseMergeOfKeyBlocksEqualsFullAttention) {
  const Index S = 9, A = 2, G = 1, D = 4, split = 4;
  MatD q = randn(S, A * D, "q"), k = randn(S, G * D, "k"), v = randn(S, G * D, "v");
  const auto pos = ref::iota_positions(S);
  MatD o, lse;
  ref::attention_forward(o, lse, q, k, v, AttentionShape{1, S, S, A, G, D}, pos, pos);
  const std::vector<int64_t> p1(pos.begin(), pos.begin() + split), p2(pos.begin() + split, pos.end());
  MatD o1, l1, o2, l2;
  ref::attention_forward(o1, l1, q, MatD(k.topRows(split)), MatD(v.topRows(split)), AttentionShape{1, S, split, A, G, D}, pos, p1);
  ref::attention_forward(o2, l2, q, MatD(k.bottomRows(S - split)), MatD(v.bottomRows(S - split)),
                         AttentionShape{1, S, S - split, A, G, D}, pos, p2);
  EXPECT_TRUE(std::isinf(l2(0, 0)) && l2(0, 0) < 0);  // query 0 sees nothing of the second block
  EXPECT_EQ(o2.row(0).norm(), 0.0);
  for (Index a = 0; a < A; ++a)
    for (Index i = 0; i < S; ++i) {
      const double m = std::max(l1(a, i), l2(a, i));
      const double w1 = std::exp(l1(a, i) - m), w2 = std::exp(l2(a, i) - m);
      EXPECT_NEAR(m + std::log(w1 + w2), lse(a, i), 1e-13);
      const auto merged = (w1 * o1.row(i).segment(a * D, D) + w2 * o2.row(i).segment(a * D, D)) / (w1 + w2);
      EXPECT_LT((merged - o.row(i).segment(a * D, D)).norm(), 1e-13);
    }
}

}  // namespace pb::test
