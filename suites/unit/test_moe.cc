/* MoE: the top-K router (with and without renormalization, with the aux loss) and the
 * whole block with top-2 over 4 experts, against central finite differences (float64),
 * and the block's output against the per-token sum_k w_k Expert_k(x). Expert capacity
 * with token dropping: a large factor changes nothing, hand-checked drops, ties to the
 * lower row, routing groups, gradients with dropping active, config errors, and the
 * groups reaching the MoE layers of the whole model. */
#include <limits>

#include "reference/model/moe.h"
#include "reference/model/train.h"
#include "test_util.h"

namespace pb::test {

static ref::LayerParams<double> zero_grads(Index H, Index F, Index E) {
  ref::LayerParams<double> g;
  g.router = MatD::Zero(E, H);
  for (Index e = 0; e < E; ++e) g.experts.push_back({MatD::Zero(F, H), MatD::Zero(F, H), MatD::Zero(H, F)});
  return g;
}

// The input's, the router's and every expert's gradient against central finite differences.
static void expect_grads_match_fd(const std::function<double()>& loss, MatD& x, const MatD& dx,
                                  ref::LayerParams<double>& p, const ref::LayerParams<double>& g) {
  EXPECT_LT(fd_rel_error(loss, x, dx), kFdTol);
  EXPECT_LT(fd_rel_error(loss, p.router, g.router), kFdTol);
  for (size_t e = 0; e < p.experts.size(); ++e) {
    EXPECT_LT(fd_rel_error(loss, p.experts[e].w1, g.experts[e].w1), kFdTol) << "expert " << e;
    EXPECT_LT(fd_rel_error(loss, p.experts[e].w2, g.experts[e].w2), kFdTol) << "expert " << e;
    EXPECT_LT(fd_rel_error(loss, p.experts[e].w3, g.experts[e].w3), kFdTol) << "expert " << e;
  }
}

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
  auto g = zero_grads(H, F, E);
  ref::moe_backward(dx, g, r, 1.0, c, p, K, renorm, coef);
  expect_grads_match_fd(loss, x, dx, p, g);
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

// ---- Expert capacity with token dropping --------------------------------------------

// Expert_e(x_t) of one row, written out: w2 (silu(w1 x) * (w3 x)).
static MatD expert_of_row(const ref::LayerParams<double>& p, int e, const MatD& xt) {
  const auto& ex = p.experts[size_t(e)];
  MatD g = xt * ex.w1.transpose(), u = xt * ex.w3.transpose(), h(1, g.cols());
  for (Index j = 0; j < g.cols(); ++j) h(0, j) = g(0, j) / (1 + std::exp(-g(0, j))) * u(0, j);
  return h * ex.w2.transpose();
}

TEST(Capacity, FormulaIsMegatronsGetCapacity) {
  EXPECT_EQ(ref::expert_capacity(4, 1, 2, 1.0), 2);    // ceil(4*1/2*1)
  EXPECT_EQ(ref::expert_capacity(7, 2, 4, 0.5), 2);    // ceil(1.75)
  EXPECT_EQ(ref::expert_capacity(8, 2, 4, 1.0), 4);    // exact: no rounding up
  EXPECT_EQ(ref::expert_capacity(10, 2, 3, 1.25), 9);  // ceil(8.33)
  EXPECT_EQ(ref::expert_capacity(3, 2, 8, 0.1), 1);    // ceil(0.075)
}

// (a) A factor large enough that no expert overflows is bit-for-bit the dropless block.
TEST(Capacity, LargeFactorDropsNothingAndChangesNothing) {
  const Index n = 9, H = 8, F = 5, E = 4;
  const int K = 2;
  auto p = moe_params(H, F, E);
  MatD x = randn(n, H, "x"), dy = randn(n, H, "dy");
  for (bool renorm : {false, true}) {
    MatD y0, y1, dx0, dx1;
    ref::MoeCache<double> c0, c1;
    ref::moe_forward(y0, c0, x, p, K, renorm, 0.01);
    // cap = ceil(n K / E * E/K) = n: every row routes to an expert at most once.
    ref::moe_forward(y1, c1, x, p, K, renorm, 0.01, double(E) / K, std::vector<int64_t>{});
    EXPECT_EQ(c1.r.kept, std::vector<char>(size_t(n * K), 1));
    EXPECT_EQ(c1.r.dropped_count, std::vector<int64_t>(size_t(E), 0));
    EXPECT_TRUE(y0 == y1);
    EXPECT_EQ(c0.r.aux, c1.r.aux);
    auto g0 = zero_grads(H, F, E), g1 = zero_grads(H, F, E);
    ref::moe_backward(dx0, g0, dy, 1.0, c0, p, K, renorm, 0.01);
    ref::moe_backward(dx1, g1, dy, 1.0, c1, p, K, renorm, 0.01);
    EXPECT_TRUE(dx0 == dx1);
    EXPECT_TRUE(g0.router == g1.router);
    for (Index e = 0; e < E; ++e) EXPECT_TRUE(g0.experts[size_t(e)].w2 == g1.experts[size_t(e)].w2);
  }
}

// E = 2, K = 1, four rows that all prefer expert 0: p_t0 = sigmoid(x_t0) with the router
// [[1, 0], [0, 0]], and x_t0 = 0.5, 2, 1, 3.
struct FourTokens {
  static constexpr Index n = 4, H = 2, F = 3, E = 2;
  ref::LayerParams<double> p = moe_params(H, F, E);
  MatD x = MatD(n, H);
  FourTokens() {
    p.router << 1, 0, 0, 0;
    x << 0.5, -0.7, 2.0, 0.3, 1.0, 0.9, 3.0, -0.2;
  }
};

// (b) cf = 1: cap = ceil(4 * 1 / 2 * 1) = 2 copies for expert 0, which gets all 4; the two
// of largest weight (rows 3 and 1) are kept, rows 0 and 2 get 0 from the block.
TEST(Capacity, KeepsTheHighestWeightCopies) {
  FourTokens c4;
  MatD y, y_free;
  ref::MoeCache<double> c, c_free;
  ref::moe_forward(y, c, c4.x, c4.p, 1, false, 0.1, 1.0);
  ref::moe_forward(y_free, c_free, c4.x, c4.p, 1, false, 0.1);
  EXPECT_EQ(c.r.idx, (std::vector<int>{0, 0, 0, 0}));
  EXPECT_EQ(c.r.kept, (std::vector<char>{0, 1, 0, 1}));
  EXPECT_EQ(c.r.dropped_count, (std::vector<int64_t>{2, 0}));
  EXPECT_EQ(c.r.count, (std::vector<int64_t>{4, 0}));  // before the drop
  EXPECT_EQ(c.r.aux, c_free.r.aux);                     // so the aux loss is the dropless one
  EXPECT_EQ(c.rows[0], (std::vector<Index>{1, 3}));
  EXPECT_TRUE(c.rows[1].empty());
  EXPECT_TRUE(y.row(0).isZero(0.0));
  EXPECT_TRUE(y.row(2).isZero(0.0));
  for (Index t : {1, 3}) {
    const double w = 1 / (1 + std::exp(-c4.x(t, 0)));
    EXPECT_NEAR(c.r.weights(t, 0), w, 1e-15);
    EXPECT_LT((y.row(t) - w * expert_of_row(c4.p, 0, c4.x.row(t))).norm(), 1e-14) << "row " << t;
    EXPECT_TRUE(y.row(t) == y_free.row(t));
  }
  // The dropped rows send no gradient to the expert, and dw = 0 for them: with dy only on
  // the dropped rows, every gradient of the block is exactly 0 but the aux loss's.
  MatD dy = MatD::Zero(4, 2), dx;
  dy.row(0) << 1.0, -2.0;
  dy.row(2) << 0.5, 3.0;
  auto g = zero_grads(2, 3, 2);
  ref::moe_backward(dx, g, dy, 0.0, c, c4.p, 1, false, 0.1);
  EXPECT_TRUE(dx.isZero(0.0));
  EXPECT_TRUE(g.router.isZero(0.0));
  EXPECT_TRUE(g.experts[0].w1.isZero(0.0));
  EXPECT_TRUE(g.experts[0].w2.isZero(0.0));
}

// (c) Renormalized top-1 gives every copy the weight 1 exactly: all tie, the lower rows win.
TEST(Capacity, TiesGoToTheLowerRow) {
  FourTokens c4;
  MatD y;
  ref::MoeCache<double> c;
  ref::moe_forward(y, c, c4.x, c4.p, 1, true, 0.0, 1.0);
  for (Index t = 0; t < 4; ++t) EXPECT_EQ(c.r.weights(t, 0), 1.0);
  EXPECT_EQ(c.r.kept, (std::vector<char>{1, 1, 0, 0}));
  EXPECT_TRUE(y.row(2).isZero(0.0));
  EXPECT_TRUE(y.row(3).isZero(0.0));
  // The same on a hand-made router output: equal weights, the lower row is kept.
  ref::RouterOut<double> r;
  ref::router_forward(r, MatD(MatD::Zero(3, 2)), 1, false, 0.0);  // p = 1/2, 1/2: idx 0 (ties to expert 0)
  ref::apply_capacity(r, {}, 0.5, 2, 1);                      // cap = ceil(3/2 * 0.5) = 1
  EXPECT_EQ(r.kept, (std::vector<char>{1, 0, 0}));
  EXPECT_EQ(r.dropped_count, (std::vector<int64_t>{2, 0}));
}

// (d) Groups {rows 0, 2} and {rows 1, 3}, n_g = 2: cap = ceil(2 * 1 / 2 * 1) = 1 each. Row 2
// (dropped in one group of 4) is kept as the best of its group; row 1 (kept in one group)
// is now dropped behind row 3. Group ids are labels only: 7 and 2 act like 0 and 1.
TEST(Capacity, AppliesPerRoutingGroup) {
  FourTokens c4;
  MatD y_one, y_two;
  ref::MoeCache<double> c_one, c_two;
  ref::moe_forward(y_one, c_one, c4.x, c4.p, 1, false, 0.0, 1.0);
  ref::moe_forward(y_two, c_two, c4.x, c4.p, 1, false, 0.0, 1.0, std::vector<int64_t>{7, 2, 7, 2});
  EXPECT_EQ(c_one.r.kept, (std::vector<char>{0, 1, 0, 1}));
  EXPECT_EQ(c_two.r.kept, (std::vector<char>{0, 0, 1, 1}));
  EXPECT_EQ(c_two.r.dropped_count, (std::vector<int64_t>{2, 0}));
  EXPECT_TRUE(y_two.row(1).isZero(0.0));
  EXPECT_FALSE(y_two.row(2).isZero(0.0));
  EXPECT_LT((y_two.row(2) - c_two.r.weights(2, 0) * expert_of_row(c4.p, 0, c4.x.row(2))).norm(), 1e-14);
  EXPECT_TRUE(y_two.row(3) == y_one.row(3));
  // One group per row: cap = ceil(1/2) = 1, nothing is dropped.
  MatD y_each;
  ref::MoeCache<double> c_each;
  ref::moe_forward(y_each, c_each, c4.x, c4.p, 1, false, 0.0, 1.0, std::vector<int64_t>{0, 1, 2, 3});
  EXPECT_EQ(c_each.r.kept, (std::vector<char>{1, 1, 1, 1}));
  // A wrong number of group ids is refused.
  EXPECT_THROW(ref::moe_forward(y_each, c_each, c4.x, c4.p, 1, false, 0.0, 1.0, std::vector<int64_t>{0, 1}),
               pb::Error);
}

// (e) Top-2 of 4 experts with drops in two groups of 4 rows, cf = 0.75: cap = ceil(4 * 2 /
// 4 * 0.75) = 2. Output against the per-row sum over the kept copies, and the backward
// against finite differences (the drop pattern is piecewise constant in the inputs and the
// random data keep every weight far from a tie).
class CapacityBlockTest : public ::testing::TestWithParam<bool> {};

TEST_P(CapacityBlockTest, DroppingBackwardMatchesFiniteDifferences) {
  const bool renorm = GetParam();
  const Index n = 8, H = 10, F = 4, E = 4;
  const int K = 2;
  const double coef = 0.02, cf = 0.75;
  const std::vector<int64_t> groups = {0, 0, 0, 0, 1, 1, 1, 1};
  auto p = moe_params(H, F, E);
  MatD x = randn(n, H, "x"), r = randn(n, H, "r");
  auto loss = [&] {
    MatD y;
    ref::MoeCache<double> c;
    ref::moe_forward(y, c, x, p, K, renorm, coef, cf, groups);
    return dot(y, r) + c.r.aux;
  };
  MatD y, dx;
  ref::MoeCache<double> c;
  ref::moe_forward(y, c, x, p, K, renorm, coef, cf, groups);
  int64_t dropped = 0, kept = 0;
  for (auto d : c.r.dropped_count) dropped += d;
  for (auto k : c.r.kept) kept += k;
  EXPECT_GT(dropped, 0) << "the test needs drops";
  EXPECT_EQ(kept + dropped, n * K);
  for (int g = 0; g < 2; ++g)
    for (int e = 0; e < E; ++e) {
      int64_t in_group = 0;
      for (Index t = 4 * g; t < 4 * g + 4; ++t)
        for (int k = 0; k < K; ++k) in_group += c.r.kept[size_t(t * K + k)] && c.r.idx[size_t(t * K + k)] == e;
      EXPECT_LE(in_group, 2) << "group " << g << " expert " << e;
    }
  for (Index t = 0; t < n; ++t) {
    MatD acc = MatD::Zero(1, H);
    for (int k = 0; k < K; ++k)
      if (c.r.kept[size_t(t * K + k)])
        acc += c.r.weights(t, k) * expert_of_row(p, c.r.idx[size_t(t * K + k)], x.row(t));
    EXPECT_LT((acc - y.row(t)).norm(), 1e-13) << "row " << t;
  }
  auto g = zero_grads(H, F, E);
  ref::moe_backward(dx, g, r, 1.0, c, p, K, renorm, coef);
  expect_grads_match_fd(loss, x, dx, p, g);
}

INSTANTIATE_TEST_SUITE_P(Renormalize, CapacityBlockTest, ::testing::Bool());

static std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const pb::Error& e) {
    return e.what();
  }
  return "(no error)";
}

// (f) The factor must be > 0 and finite, and only on a model with experts.
TEST(Capacity, ConfigRejectsNonPositiveFactor) {
  ref::ModelConfig c;
  c.num_local_experts = 4;
  c.moe_expert_capacity_factor = 1.0;
  EXPECT_NO_THROW(c.validate());
  c.moe_expert_capacity_factor = 0.0;
  EXPECT_EQ(error_of([&] { c.validate(); }), "invalid model config: moe_expert_capacity_factor must be > 0, got 0");
  c.moe_expert_capacity_factor = -1.0;
  EXPECT_EQ(error_of([&] { c.validate(); }), "invalid model config: moe_expert_capacity_factor must be > 0, got -1");
  c.moe_expert_capacity_factor = std::numeric_limits<double>::infinity();
  EXPECT_NE(error_of([&] { c.validate(); }).find("moe_expert_capacity_factor must be > 0"), std::string::npos);
  c = {};
  c.moe_expert_capacity_factor = 1.0;
  EXPECT_EQ(error_of([&] { c.validate(); }),
            "invalid model config: moe_expert_capacity_factor given but num_local_experts is 0");
}

// (g) The groups hold one id >= 0 per token row of a micro-batch.
TEST(Capacity, TrainConfigRejectsBadGroups) {
  ref::TrainConfig t;
  t.micro_batch_size = 2;
  t.seq_length = 3;
  t.moe_token_groups = {0, 0, 0, 1, 1, 1};
  EXPECT_NO_THROW(t.validate());
  t.moe_token_groups = {0, 0, 0, 1, 1};
  EXPECT_EQ(error_of([&] { t.validate(); }),
            "invalid train config: moe_token_groups holds 5 ids, expected micro_batch_size*seq_length = 6");
  t.moe_token_groups = {0, 0, 0, 1, -1, 1};
  EXPECT_EQ(error_of([&] { t.validate(); }), "invalid train config: moe_token_groups[4] must be >= 0, got -1");
}

// The groups reach every MoE layer of the model, forward and backward, and the trainer
// passes TrainConfig::moe_token_groups.
TEST(Capacity, GroupsReachTheModelLayers) {
  auto cfg = ref::ModelConfig::dense(12, 3, 1, 10, 13, 2);
  cfg.num_local_experts = 3;
  cfg.num_experts_per_tok = 2;
  cfg.moe_intermediate_size = 6;
  cfg.router_aux_loss_coef = 0.01;
  cfg.initializer_range = 0.3;
  const Index B = 2, S = 5;
  const std::vector<int64_t> per_sequence = {0, 0, 0, 0, 0, 1, 1, 1, 1, 1};
  const auto p = ref::init_params<double>(cfg, 3);
  const auto batch = ref::make_batch(5, 0, B, S, cfg.vocab_size);
  auto loss_of = [&](const ref::ModelConfig& mc, const std::vector<int64_t>& groups) {
    auto g = ref::zero_params<double>(mc);
    const double l = ref::model_forward_backward(g, p, mc, batch, B, S, 1.0, groups).total;
    EXPECT_NEAR(ref::model_forward(p, mc, batch, B, S, groups).total, l, 1e-14);
    return l;
  };
  const double dropless = loss_of(cfg, {});
  auto capped = cfg;
  capped.moe_expert_capacity_factor = 0.5;  // cap = ceil(10 * 2 / 3 * 0.5) = 4 of ~6.7 copies
  capped.validate();
  const double one_group = loss_of(capped, {}), two_groups = loss_of(capped, per_sequence);
  EXPECT_NE(one_group, dropless);
  EXPECT_NE(two_groups, one_group);
  EXPECT_NEAR(ref::model_forward(p, capped, batch, B, S).total, one_group, 1e-14);
  auto big = cfg;
  big.moe_expert_capacity_factor = 1.5;  // cap = ceil(10 * 2 / 3 * 1.5) = 10 = n: no drop
  EXPECT_EQ(loss_of(big, per_sequence), dropless);
  ref::TrainConfig tc;
  tc.micro_batch_size = B;
  tc.seq_length = S;
  tc.moe_token_groups = per_sequence;
  tc.validate();
  ref::Trainer<double> trainer(capped, tc, p);
  const auto rec = trainer.step();
  auto g = ref::zero_params<double>(capped);
  EXPECT_EQ(rec.loss,
            ref::model_forward_backward(g, p, capped, ref::train_batch(capped, tc, 0, 0), B, S, 1.0, per_sequence).total);
  EXPECT_NE(rec.loss, one_group);
}

}  // namespace pb::test
