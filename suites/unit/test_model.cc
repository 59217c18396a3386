/* The whole reference model: float64 gradient check of every parameter on a tiny config
 * with one dense and one MoE layer; gradient accumulation; AdamW against its formula;
 * training on a fixed batch lowers the loss; determinism; counter-based init and data
 * generate any slice alone; parameter count against the analytic formula. */
#include <tuple>
#include <cstring>

#include "reference/model/flops.h"
#include "reference/model/train.h"
#include "test_util.h"

namespace pb::test {

static ref::ModelConfig tiny_config() {
  auto c = ref::ModelConfig::dense(12, 3, 1, 10, 13, 2);  // H=12, A=3 -> D=4
  c.num_local_experts = 3;
  c.num_experts_per_tok = 2;
  c.moe_intermediate_size = 6;
  c.moe_layers = {1};  // layer 0 dense, layer 1 MoE
  c.router_aux_loss_coef = 0.01;
  c.initializer_range = 0.3;  // large enough that every path carries signal
  return c;
}

TEST(Model, GradientOfEveryParameterMatchesFiniteDifferences) {
  const auto cfg = tiny_config();
  cfg.validate();
  const Index B = 2, S = 5;
  auto p = ref::init_params<double>(cfg, 3);
  // Non-trivial norm weights so that their use in backward is exercised.
  ref::for_each_param(p, [&](const std::string& name, MatD& m, bool vec) {
    if (vec) m = MatD::Ones(1, m.cols()) + randn(1, m.cols(), name, 0.3);
  });
  const auto batch = ref::make_batch(5, 0, B, S, cfg.vocab_size);
  auto g = ref::zero_params<double>(cfg);
  const auto loss = ref::model_forward_backward(g, p, cfg, batch, B, S, 1.0);
  EXPECT_GT(loss.aux, 0.0);
  EXPECT_NEAR(loss.total, loss.ce + loss.aux, 1e-15);
  EXPECT_NEAR(ref::model_forward(p, cfg, batch, B, S).total, loss.total, 1e-14);
  std::vector<MatD*> gs;
  ref::for_each_param(g, [&](const std::string&, MatD& m, bool) { gs.push_back(&m); });
  size_t i = 0;
  int checked = 0;
  ref::for_each_param(p, [&](const std::string& name, MatD& m, bool) {
    auto f = [&] { return ref::model_forward(p, cfg, batch, B, S).total; };
    EXPECT_LT(fd_rel_error(f, m, *gs[i]), kFdTol) << name;
    ++i;
    ++checked;
  });
  EXPECT_EQ(checked, 1 + 6 + 3 + 6 + 1 + 3 * 3 + 2);  // every tensor of the dense and MoE layers
}

TEST(Model, MicroBatchAccumulationEqualsOneBigBatch) {
  auto cfg = tiny_config();
  cfg.router_aux_loss_coef = 0;  // the aux loss is per micro-batch by definition
  const Index S = 6;
  const auto p = ref::init_params<double>(cfg, 11);
  const auto big = ref::make_batch(4, 0, 4, S, cfg.vocab_size);
  auto g1 = ref::zero_params<double>(cfg), g2 = ref::zero_params<double>(cfg);
  const double l1 = ref::model_forward_backward(g1, p, cfg, big, 4, S, 1.0).total;
  double l2 = 0;
  for (int j = 0; j < 2; ++j)
    l2 += 0.5 * ref::model_forward_backward(g2, p, cfg, ref::make_batch(4, 2 * j, 2, S, cfg.vocab_size), 2, S, 0.5).total;
  EXPECT_NEAR(l1, l2, 1e-13);
  std::vector<const MatD*> a;
  ref::for_each_param(g1, [&](const std::string&, const MatD& m, bool) { a.push_back(&m); });
  size_t i = 0;
  ref::for_each_param(g2, [&](const std::string& name, const MatD& m, bool) {
    EXPECT_LT((m - *a[i]).norm(), 1e-12 * (1 + a[i]->norm())) << name;
    ++i;
  });
}

TEST(AdamW, OneStepMatchesFormulaWithClipping) {
  const auto cfg = ref::ModelConfig::dense(4, 2, 2, 3, 5, 1);
  ref::TrainConfig tc;
  tc.lr = 0.1;
  tc.weight_decay = 0.2;
  tc.clip_grad = 0.5;
  auto p = ref::init_params<double>(cfg, 1), p0 = p, g = ref::zero_params<double>(cfg);
  ref::for_each_param(g, [&](const std::string& name, MatD& m, bool) { m = randn(m.rows(), m.cols(), name); });
  auto st = ref::adam_init<double>(cfg);
  const double norm = ref::adamw_step(p, g, st, tc);
  double sq = 0;
  ref::for_each_param(g, [&](const std::string&, const MatD& m, bool) { sq += m.squaredNorm(); });
  EXPECT_NEAR(norm, std::sqrt(sq), 1e-12);
  ASSERT_GT(norm, tc.clip_grad);  // the clipping path is exercised
  const double c = tc.clip_grad / (norm + 1e-6);
  std::vector<const MatD*> w0, gr;
  ref::for_each_param(p0, [&](const std::string&, const MatD& m, bool) { w0.push_back(&m); });
  ref::for_each_param(g, [&](const std::string&, const MatD& m, bool) { gr.push_back(&m); });
  size_t i = 0;
  ref::for_each_param(p, [&](const std::string& name, const MatD& m, bool is_norm) {
    for (Index k = 0; k < m.size(); ++k) {
      const double gk = c * gr[i]->data()[k], w = w0[i]->data()[k];
      const double mk = 0.1 * gk, vk = 0.05 * gk * gk;  // (1-b1) g, (1-b2) g^2
      const double expect = w * (1 - (is_norm ? 0.0 : 0.1 * 0.2)) - 0.1 * (mk / 0.1) / (std::sqrt(vk / 0.05) + 1e-8);
      EXPECT_NEAR(m.data()[k], expect, 1e-14) << name << "[" << k << "]";
    }
    ++i;
  });
}

static ref::TrainConfig tiny_train() {
  ref::TrainConfig tc;
  tc.micro_batch_size = 2;
  tc.seq_length = 8;
  tc.num_micro_batches = 2;
  tc.steps = 20;
  tc.fixed_batch = true;
  tc.lr = 1e-2;
  return tc;
}

TEST(Training, LossDecreasesOverTwentyStepsOnAFixedBatch) {
  auto cfg = tiny_config();
  cfg.initializer_range = 0.02;
  const auto tc = tiny_train();
  ref::Trainer<float> tr(cfg, tc, ref::init_params<float>(cfg, tc.seed));
  std::vector<double> loss;
  for (int s = 0; s < tc.steps; ++s) loss.push_back(tr.step().loss);
  // Memorizing 32 tokens: the loss must fall well below its start (ln 13 = 2.56).
  EXPECT_LT(loss.back(), loss.front() - 0.5) << loss.front() << " -> " << loss.back();
  EXPECT_LT(loss.back(), loss[10]);
}

TEST(Training, TwoIdenticalRunsAreBitwiseIdentical) {
  const auto cfg = tiny_config();
  auto tc = tiny_train();
  tc.steps = 3;
  tc.fixed_batch = false;
  auto run = [&] {
    ref::Trainer<float> tr(cfg, tc, ref::init_params<float>(cfg, tc.seed));
    std::vector<double> losses;
    for (int s = 0; s < tc.steps; ++s) losses.push_back(tr.step().loss);
    return std::pair{losses, tr.params()};
  };
  const auto [l1, p1] = run();
  const auto [l2, p2] = run();
  EXPECT_EQ(std::memcmp(l1.data(), l2.data(), l1.size() * sizeof(double)), 0);
  std::vector<const Mat<float>*> a;
  ref::for_each_param(p1, [&](const std::string&, const Mat<float>& m, bool) { a.push_back(&m); });
  size_t i = 0;
  ref::for_each_param(p2, [&](const std::string& name, const Mat<float>& m, bool) {
    EXPECT_EQ(std::memcmp(m.data(), a[i]->data(), size_t(m.size()) * sizeof(float)), 0) << name;
    ++i;
  });
}

TEST(Init, AnyShardEqualsTheSliceOfTheWholeTensor) {
  const auto cfg = tiny_config();
  const auto p = ref::init_params<double>(cfg, 99);
  const auto& wq = p.layers[0].wq;  // (A*D, H): rows 4..7, columns 3..8 as a rank would own them
  for (Index r = 4; r < 8; ++r)
    for (Index c = 3; c < 9; ++c)
      EXPECT_EQ(ref::init_value(99, "model.layers.0.self_attn.q_proj.weight", uint64_t(r * wq.cols() + c), false,
                                cfg.initializer_range),
                wq(r, c));
  EXPECT_NE(p.layers[0].wq(0, 0), p.layers[1].wq(0, 0));  // names give independent streams
  const auto all = ref::make_batch(8, 0, 6, 9, 50), part = ref::make_batch(8, 2, 3, 9, 50);
  for (size_t t = 0; t < part.tokens.size(); ++t) {
    EXPECT_EQ(part.tokens[t], all.tokens[t + 2 * 9]);
    EXPECT_EQ(part.labels[t], all.labels[t + 2 * 9]);
  }
  for (size_t t = 0; t + 1 < 9; ++t) EXPECT_EQ(all.labels[t], all.tokens[t + 1]);  // labels are the next token
}

TEST(Flops, ParameterCountMatchesFormula) {
  auto cfg = tiny_config();
  EXPECT_EQ(ref::count_params(ref::zero_params<float>(cfg)), ref::analytic_param_count(cfg));
  cfg.num_local_experts = 0;
  cfg.moe_layers.clear();
  EXPECT_EQ(ref::count_params(ref::zero_params<float>(cfg)), ref::analytic_param_count(cfg));
  ref::ModelConfig def;  // the default config of parabench-ref
  EXPECT_EQ(ref::count_params(ref::zero_params<float>(def)), ref::analytic_param_count(def));
}

}  // namespace pb::test

// The shape-only walk (what DistParams and the analytic model size shards from, without
// allocating) lists the same names, shapes and kinds in the same order as the parameters.
TEST(Params, ShapeWalkEqualsTheParameterList) {
  namespace ref = pb::ref;
  const auto dense = ref::ModelConfig::dense(24, 6, 2, 22, 26, 3);
  auto moe = ref::ModelConfig::dense(16, 4, 2, 24, 32, 3);
  moe.num_local_experts = 4, moe.num_experts_per_tok = 2, moe.moe_intermediate_size = 12, moe.moe_layers = {0, 2};
  for (const ref::ModelConfig& cfg : std::vector<ref::ModelConfig>{dense, moe}) {
    std::vector<std::tuple<std::string, int64_t, int64_t, bool>> a, b;
    const auto p = ref::zero_params<float>(cfg);
    ref::for_each_param(p, [&](const std::string& n, const ref::Mat<float>& m, bool v) { a.emplace_back(n, m.rows(), m.cols(), v); });
    ref::for_each_param_shape(cfg, [&](const std::string& n, int64_t r, int64_t c, bool v) { b.emplace_back(n, r, c, v); });
    EXPECT_EQ(a, b);
    EXPECT_GT(a.size(), 20u);
  }
}
