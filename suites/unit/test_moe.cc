/* MoE: the top-K router (with and without renormalization, with the aux loss) and the
 * whole block with top-2 over 4 experts, against central finite differences (float64),
 * and the block's output against the per-token sum_k w_k Expert_k(x). */
#include "reference/model/moe.h"
#include "test_util.h"

namespace pb::test {

static ref::LayerParams<double> moe_params(Index H, Index F, Index E) {
  ref::LayerParams<double> p;
  p.router = randn(E, H, "router", 0.7);
  for (Index e = 0; e < E; ++e) {
    const std::string s = std::to_string(e);
    p.experts.push_back({randn(F, H, "w1." + s, 0.4), randn(F, H, "w3." + s, 0.4), randn(H, F, "w2." + s, 0.4)});
  }
  return p;
}

class RouterTest : public ::testing::TestWithParam<bool> {};

TEST_P(RouterTest, BackwardMatchesFiniteDifferences) {
  const bool renorm = GetParam();
  const Index n = 7, E = 5;
  const int K = 2;
  const double coef = 0.05;
  MatD logits = randn(n, E, "logits", 2.0), r = randn(n, K, "r");
  auto loss = [&] {
    ref::RouterOut<double> out;
    ref::router_forward(out, logits, K, renorm, coef);
    return dot(out.weights, r) + out.aux;
  };
  ref::RouterOut<double> out;
  ref::router_forward(out, logits, K, renorm, coef);
  EXPECT_GT(out.aux, 0.0);
  int64_t routed = 0;
  for (auto c : out.count) routed += c;
  EXPECT_EQ(routed, n * K);
  if (renorm) {
    for (Index t = 0; t < n; ++t) EXPECT_NEAR(out.weights.row(t).sum(), 1.0, 1e-14);
  }
  MatD dlogits = ref::nan_mat<double>(n, E);
  ref::router_backward(dlogits, r, 1.0, out, K, renorm, coef);
  EXPECT_LT(fd_rel_error(loss, logits, dlogits), kFdTol);
}

INSTANTIATE_TEST_SUITE_P(Renormalize, RouterTest, ::testing::Bool());

TEST(Router, TopKPicksLargestWithTiesToLowerIndex) {
  MatD logits(1, 4);
  logits << 1.0, 3.0, 3.0, 2.0;
  ref::RouterOut<double> out;
  ref::router_forward(out, logits, 3, false, 0.0);
  EXPECT_EQ(out.idx, (std::vector<int>{1, 2, 3}));
}

class MoeBlockTest : public ::testing::TestWithParam<bool> {};

TEST_P(MoeBlockTest, Top2BackwardMatchesFiniteDifferences) {
  const bool renorm = GetParam();
  const Index n = 7, H = 12, F = 5, E = 4;
  const int K = 2;
  const double coef = 0.02;
  auto p = moe_params(H, F, E);
  MatD x = randn(n, H, "x"), r = randn(n, H, "r");
  auto loss = [&] {
    MatD y;
    ref::MoeCache<double> c;
    ref::moe_forward(y, c, x, p, K, renorm, coef);
    return dot(y, r) + c.r.aux;
  };
  MatD y, dx = ref::nan_mat<double>(1, 1);
  ref::MoeCache<double> c;
  ref::moe_forward(y, c, x, p, K, renorm, coef);
  ref::LayerParams<double> g;
  g.router = MatD::Zero(E, H);
  for (Index e = 0; e < E; ++e) g.experts.push_back({MatD::Zero(F, H), MatD::Zero(F, H), MatD::Zero(H, F)});
  ref::moe_backward(dx, g, r, 1.0, c, p, K, renorm, coef);
  EXPECT_LT(fd_rel_error(loss, x, dx), kFdTol);
  EXPECT_LT(fd_rel_error(loss, p.router, g.router), kFdTol);
  for (Index e = 0; e < E; ++e) {
    EXPECT_LT(fd_rel_error(loss, p.experts[size_t(e)].w1, g.experts[size_t(e)].w1), kFdTol) << "expert " << e;
    EXPECT_LT(fd_rel_error(loss, p.experts[size_t(e)].w2, g.experts[size_t(e)].w2), kFdTol) << "expert " << e;
    EXPECT_LT(fd_rel_error(loss, p.experts[size_t(e)].w3, g.experts[size_t(e)].w3), kFdTol) << "expert " << e;
  }
}

INSTANTIATE_TEST_SUITE_P(Renormalize, MoeBlockTest, ::testing::Bool());

// y_t = sum_k w_tk Expert_{idx_tk}(x_t), computed one token at a time.
TEST(MoeBlock, EqualsWeightedSumOfSelectedExperts) {
  const Index n = 6, H = 8, F = 3, E = 4;
  const int K = 2;
  auto p = moe_params(H, F, E);
  MatD x = randn(n, H, "x"), y;
  ref::MoeCache<double> c;
  ref::moe_forward(y, c, x, p, K, true, 0.0);
  for (Index t = 0; t < n; ++t) {
    MatD xt = x.row(t), acc = MatD::Zero(1, H);
    MatD logits = xt * p.router.transpose();
    ref::Vec<double> prob = (logits.row(0).array() - logits.maxCoeff()).exp();
    prob /= prob.sum();
    std::vector<int> order(E);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return prob(a) > prob(b); });
    const double norm = prob(order[0]) + prob(order[1]);
    for (int k = 0; k < K; ++k) {
      const auto& ex = p.experts[size_t(order[size_t(k)])];
      MatD g = xt * ex.w1.transpose(), u = xt * ex.w3.transpose(), h(1, F);
      for (Index j = 0; j < F; ++j) h(0, j) = g(0, j) / (1 + std::exp(-g(0, j))) * u(0, j);
      acc += prob(order[size_t(k)]) / norm * (h * ex.w2.transpose());
    }
    EXPECT_LT((acc - y.row(t)).norm(), 1e-13) << "token " << t;
  }
}

}  // namespace pb::test
