/* The asynchronous pipelines' reference (reference/model/async_pipeline.h): one stage with
 * one update per step is Trainer bit for bit; p stages with one update per step and no
 * clipping too; PipeDream's first step against a hand-written emulation with explicit weight
 * snapshots (and different from the synchronous step: the staleness is real); 2BW with DP
 * against the same emulation; the weight versions and the stash sizes against their closed
 * forms; bad input. */
#include <cmath>
#include <functional>

#include "reference/model/async_pipeline.h"
#include "reference/model/init.h"
#include "test_util.h"

namespace pb::test {

namespace {

// Four dense layers of tiny sizes (H=8, A=2 -> D=4, G=1, F=12, V=11).
ref::ModelConfig tiny_model() {
  auto c = ref::ModelConfig::dense(8, 2, 1, 12, 11, 4);
  c.initializer_range = 0.3;  // large enough that every path carries signal
  return c;
}

ref::TrainConfig tiny_train(int64_t num_micro_batches) {
  ref::TrainConfig tc;
  tc.micro_batch_size = 2;
  tc.seq_length = 5;
  tc.num_micro_batches = num_micro_batches;
  tc.steps = 3;
  tc.lr = 1e-2;
  tc.clip_grad = 0.05;  // below the gradient norms here: the clipping path runs
  return tc;
}

template <class T>
std::vector<const Mat<T>*> tensors(const ref::ModelParams<T>& p) {
  std::vector<const Mat<T>*> out;
  ref::for_each_param(p, [&](const std::string&, const Mat<T>& m, bool) { out.push_back(&m); });
  return out;
}

// Every element equal (==), tensor by tensor.
template <class T>
void expect_identical(const ref::ModelParams<T>& a, const ref::ModelParams<T>& b, const std::string& what) {
  const auto ta = tensors(a);
  size_t i = 0;
  ref::for_each_param(b, [&](const std::string& name, const Mat<T>& m, bool) {
    ASSERT_LT(i, ta.size());
    ASSERT_EQ(m.rows(), ta[i]->rows()) << what << " " << name;
    ASSERT_EQ(m.cols(), ta[i]->cols()) << what << " " << name;
    int64_t differ = 0;
    for (Index k = 0; k < m.size(); ++k) differ += !(m.data()[k] == ta[i]->data()[k]);
    EXPECT_EQ(differ, 0) << what << " " << name;
    ++i;
  });
  EXPECT_EQ(i, ta.size());
}

template <class T>
double max_abs_diff(const ref::ModelParams<T>& a, const ref::ModelParams<T>& b) {
  const auto ta = tensors(a), tb = tensors(b);
  double d = 0;
  for (size_t i = 0; i < ta.size(); ++i) d = std::max(d, double((*ta[i] - *tb[i]).cwiseAbs().maxCoeff()));
  return d;
}

// ---- An independent emulation (no stage parts): every stage's weights are whole-model
// snapshots of which only the stage's tensors are read; the stage's AdamW is adamw_step on
// the whole model with the other stages' gradients zeroed (their zeros add nothing to the
// norm; the other tensors it changes are never read).

// The stage that owns each tensor, in for_each_param's order.
std::vector<int64_t> owners(const ref::ModelConfig& mc, const std::vector<int64_t>& bounds) {
  const int64_t p = int64_t(bounds.size()) - 1;
  std::vector<int64_t> out;
  ref::for_each_param_shape(mc, [&](const std::string& name, Index, Index, bool) {
    if (name.rfind("model.embed_tokens.", 0) == 0) {
      out.push_back(0);
    } else if (name.rfind("model.layers.", 0) == 0) {
      const int64_t l = std::stoll(name.substr(13));
      int64_t s = 0;
      while (l >= bounds[size_t(s) + 1]) ++s;
      out.push_back(s);
    } else {
      out.push_back(p - 1);
    }
  });
  return out;
}

// The model whose tensors of stage s come from snapshots[s] (for every s).
ref::ModelParams<double> mixed(const std::vector<const ref::ModelParams<double>*>& snapshots,
                               const std::vector<int64_t>& owner) {
  ref::ModelParams<double> out = *snapshots[0];
  std::vector<std::vector<const MatD*>> src;
  for (const auto* snap : snapshots) src.push_back(tensors(*snap));
  size_t i = 0;
  ref::for_each_param(out, [&](const std::string&, MatD& m, bool) {
    m = *src[size_t(owner[i])][i];
    ++i;
  });
  return out;
}

// g with every tensor not owned by stage s zeroed.
ref::ModelParams<double> only_stage(ref::ModelParams<double> g, const std::vector<int64_t>& owner, int64_t s) {
  size_t i = 0;
  ref::for_each_param(g, [&](const std::string&, MatD& m, bool) {
    if (owner[i++] != s) m.setZero();
  });
  return g;
}

struct HandStep {
  double loss = 0, grad_norm = 0;
  ref::ModelParams<double> params, last_grads;
};

// One step of p = bounds.size()-1 stages from `init`: m micro-batches per replica, dp
// replicas, an update of every stage after every g micro-batches; micro-batch j runs on
// version version(s, j) of stage s.
HandStep hand_step(const ref::ModelConfig& mc, const ref::TrainConfig& tc, const std::vector<int64_t>& bounds,
                   int64_t dp, int64_t g, const ref::ModelParams<double>& init,
                   const std::function<int64_t(int64_t, int64_t)>& version) {
  const int64_t p = int64_t(bounds.size()) - 1, M = tc.num_micro_batches, m = M / dp;
  const auto owner = owners(mc, bounds);
  std::vector<std::vector<ref::ModelParams<double>>> W(size_t(p), {init});  // W[s][k]
  std::vector<ref::AdamState<double>> st(size_t(p), ref::adam_init<double>(mc));
  std::vector<double> loss(static_cast<size_t>(M));
  HandStep out;
  double sq = 0;
  for (int64_t u = 0; u < m / g; ++u) {
    auto grads = ref::zero_params<double>(mc);
    for (int64_t d = 0; d < dp; ++d)
      for (int64_t j = u * g; j < (u + 1) * g; ++j) {
        std::vector<const ref::ModelParams<double>*> snaps;
        for (int64_t s = 0; s < p; ++s) snaps.push_back(&W[size_t(s)][size_t(version(s, j))]);
        loss[size_t(d * m + j)] =
            ref::model_forward_backward(grads, mixed(snaps, owner), mc, ref::train_batch(mc, tc, 0, d * m + j),
                                        tc.micro_batch_size, tc.seq_length, 1.0 / double(g * dp))
                .total;
      }
    for (int64_t s = 0; s < p; ++s) {
      auto w = W[size_t(s)].back();
      const double norm = ref::adamw_step(w, only_stage(grads, owner, s), st[size_t(s)], tc);
      sq += norm * norm;
      W[size_t(s)].push_back(std::move(w));
    }
    out.last_grads = grads;
  }
  for (double l : loss) out.loss += l / double(M);
  out.grad_norm = std::sqrt(sq);
  std::vector<const ref::ModelParams<double>*> last;
  for (const auto& v : W) last.push_back(&v.back());
  out.params = mixed(last, owner);
  return out;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

// 1. One stage, one update per step: the step of Trainer, bit for bit (clipping included:
// the stage's norm is the global one), with and without data parallelism.
TEST(AsyncPipeline, OneStageOneUpdateIsTrainerBitForBit) {
  const auto mc = tiny_model();
  for (int64_t dp : {1, 2}) {
    auto tc = tiny_train(2 * dp);
    ref::Trainer<float> sync(mc, tc, ref::init_params<float>(mc, tc.seed));
    ref::AsyncPipelineTrainer<float> async(mc, tc, ref::init_params<float>(mc, tc.seed), {{0, 4}, 2, dp});
    for (int step = 0; step < 3; ++step) {
      const auto a = sync.step(), b = async.step();
      EXPECT_EQ(a.loss, b.loss) << "dp " << dp << " step " << step;
      EXPECT_EQ(a.ce, b.ce);
      EXPECT_EQ(a.aux, b.aux);
      EXPECT_EQ(a.grad_norm, b.grad_norm);
      EXPECT_GT(a.grad_norm, tc.clip_grad);  // clipped
      expect_identical(sync.params(), async.params(), "params");
      expect_identical(sync.last_grads(), async.last_grads(), "grads");
    }
  }
}

// 2. Four stages, one update per step (every micro-batch on version 0), no clipping: per-stage
// AdamW is element-wise the global one, so the weights are Trainer's bit for bit.
TEST(AsyncPipeline, OneUpdatePerStepWithoutClippingIsTrainerBitForBit) {
  const auto mc = tiny_model();
  for (int64_t dp : {1, 2}) {
    auto tc = tiny_train(2 * dp);
    tc.clip_grad = 0;
    ref::Trainer<float> sync(mc, tc, ref::init_params<float>(mc, tc.seed));
    ref::AsyncPipelineTrainer<float> async(mc, tc, ref::init_params<float>(mc, tc.seed), {{0, 1, 2, 3, 4}, 2, dp});
    EXPECT_EQ(async.stages(), 4);
    EXPECT_EQ(async.micro_batches_per_replica(), 2);
    for (int step = 0; step < 3; ++step) {
      const auto a = sync.step(), b = async.step();
      EXPECT_EQ(a.loss, b.loss) << "dp " << dp << " step " << step;
      EXPECT_EQ(a.ce, b.ce);
      // sqrt(sum_s norm_s^2): the global norm, summed in another grouping.
      EXPECT_NEAR(a.grad_norm, b.grad_norm, 1e-6 * a.grad_norm);
      expect_identical(sync.params(), async.params(), "params");
      expect_identical(sync.last_grads(), async.last_grads(), "grads");
    }
  }
}

// 3. PipeDream (g = 1), p = 3, m = 4: the first step by hand, with the snapshots of this case
// written out. Warm-ups w = (2, 1, 0), so micro-batch j runs on versions (of stages 0, 1, 2)
//   j = 0: (0, 0, 0)   j = 1: (0, 0, 1)   j = 2: (0, 1, 2)   j = 3: (1, 2, 3)
// and every stage updates after every micro-batch, clipped by its own norm.
TEST(AsyncPipeline, PipeDreamFirstStepByHand) {
  const auto mc = tiny_model();
  const auto tc = tiny_train(4);
  const std::vector<int64_t> bounds = {0, 1, 3, 4};
  const int64_t version_table[4][3] = {{0, 0, 0}, {0, 0, 1}, {0, 1, 2}, {1, 2, 3}};
  for (int64_t j = 0; j < 4; ++j)
    for (int64_t s = 0; s < 3; ++s) EXPECT_EQ(ref::async_version(3, s, 4, 1, j), version_table[j][s]) << s << " " << j;
  const auto init = ref::init_params<double>(mc, tc.seed);

  // By hand: W[s][k] is stage s's weights after k updates (a whole-model snapshot of which
  // only stage s's tensors are read).
  const auto owner = owners(mc, bounds);
  std::vector<std::vector<ref::ModelParams<double>>> W(3, {init});
  std::vector<ref::AdamState<double>> st(3, ref::adam_init<double>(mc));
  double loss = 0, sq = 0;
  ref::ModelParams<double> grads;
  for (int64_t j = 0; j < 4; ++j) {
    const auto model = mixed({&W[0][size_t(version_table[j][0])], &W[1][size_t(version_table[j][1])],
                              &W[2][size_t(version_table[j][2])]}, owner);
    grads = ref::zero_params<double>(mc);
    loss += ref::model_forward_backward(grads, model, mc, ref::train_batch(mc, tc, 0, j), tc.micro_batch_size,
                                        tc.seq_length, 1.0).total / 4.0;
    for (size_t s = 0; s < 3; ++s) {
      W[s].push_back(W[s].back());  // version j+1 of stage s
      const double norm = ref::adamw_step(W[s].back(), only_stage(grads, owner, int64_t(s)), st[s], tc);
      EXPECT_GT(norm, tc.clip_grad) << "stage " << s << " micro-batch " << j;  // each stage clipped
      sq += norm * norm;
    }
  }
  const auto by_hand = mixed({&W[0][4], &W[1][4], &W[2][4]}, owner);

  ref::AsyncPipelineTrainer<double> async(mc, tc, init, {bounds, 1, 1});
  const auto rec = async.step();
  EXPECT_EQ(rec.loss, loss);
  EXPECT_EQ(rec.grad_norm, std::sqrt(sq));
  expect_identical(by_hand, async.params(), "params");
  expect_identical(grads, async.last_grads(), "grads of micro-batch 3");
  for (size_t s = 0; s < 3; ++s) EXPECT_EQ(st[s].t, 4);

  // The generic emulation below (used for 2BW) agrees with the table.
  const auto generic = hand_step(mc, tc, bounds, 1, 1, init, [](int64_t s, int64_t j) {
    return std::max<int64_t>(0, j - (2 - s));
  });
  expect_identical(generic.params, async.params(), "generic emulation");

  // The staleness is real: the synchronous step (one update of the mean gradient) and the
  // step where every micro-batch runs on the newest weights of every stage both differ.
  ref::Trainer<double> sync(mc, tc, init);
  const auto srec = sync.step();
  EXPECT_NE(srec.loss, rec.loss);
  EXPECT_GT(max_abs_diff(sync.params(), async.params()), 1e-4);
  const auto fresh = hand_step(mc, tc, bounds, 1, 1, init, [](int64_t, int64_t j) { return j; });
  EXPECT_NE(fresh.loss, rec.loss);
  EXPECT_GT(max_abs_diff(fresh.params, async.params()), 1e-6);
}

// PipeDream-2BW against the emulation, with g >= p-1 (two versions) and g < p-1 (three on
// stage 0), with and without data parallelism.
TEST(AsyncPipeline, TwoBwWithDataParallelismMatchesTheEmulation) {
  const auto mc = tiny_model();
  struct Case { std::vector<int64_t> bounds; int64_t g, dp, M; };
  // (bounds, g, dp, num_micro_batches): p = 2, 3, 4 with g >= p-1; p = 4 with g = 2 < p-1.
  for (const Case& c : {Case{{0, 2, 4}, 2, 2, 8}, Case{{0, 1, 2, 4}, 2, 2, 8}, Case{{0, 1, 2, 3, 4}, 3, 1, 6},
                        Case{{0, 1, 2, 3, 4}, 2, 1, 8}}) {
    const auto tc = tiny_train(c.M);
    const int64_t p = int64_t(c.bounds.size()) - 1, m = c.M / c.dp;
    const auto init = ref::init_params<double>(mc, tc.seed);
    ref::AsyncPipelineTrainer<double> async(mc, tc, init, {c.bounds, c.g, c.dp});
    const auto rec = async.step();
    const auto by_hand = hand_step(mc, tc, c.bounds, c.dp, c.g, init, [&](int64_t s, int64_t j) {
      return ref::async_version(p, s, m, c.g, j);
    });
    EXPECT_EQ(rec.loss, by_hand.loss) << "p " << p << " g " << c.g;
    EXPECT_EQ(rec.grad_norm, by_hand.grad_norm);
    expect_identical(by_hand.params, async.params(), "params");
    expect_identical(by_hand.last_grads, async.last_grads(), "grads");
  }
}

// An MoE model trains through a 2BW pipeline (routing groups passed as Trainer does).
TEST(AsyncPipeline, MoeModelLearnsAFixedBatch) {
  auto mc = tiny_model();
  mc.num_local_experts = 3;
  mc.num_experts_per_tok = 2;
  mc.moe_intermediate_size = 6;
  mc.moe_layers = {1, 3};
  mc.router_aux_loss_coef = 0.01;
  mc.initializer_range = 0.02;
  auto tc = tiny_train(4);
  tc.fixed_batch = true;
  tc.clip_grad = 1.0;
  ref::AsyncPipelineTrainer<float> async(mc, tc, ref::init_params<float>(mc, tc.seed), {{0, 2, 4}, 2, 2});
  std::vector<double> loss;
  for (int step = 0; step < 12; ++step) loss.push_back(async.step().loss);
  EXPECT_LT(loss.back(), loss.front() - 0.3) << loss.front() << " -> " << loss.back();
  EXPECT_GT(async.step().aux, 0.0);
}

// 4. Versions and stash sizes: the walk through 1F1B's order against the closed forms.
TEST(AsyncPipeline, VersionsAndStashedVersionsClosedForms) {
  int64_t cases = 0;
  for (int64_t p = 1; p <= 8; ++p)
    for (int64_t s = 0; s < p; ++s)
      for (int64_t g = 1; g <= 24; ++g)
        for (int64_t m = g; m <= 24; m += g) {
          const int64_t w = std::min(p - s - 1, m);
          for (int64_t j = 0; j < m; ++j) {
            const int64_t k = ref::async_version(p, s, m, g, j);
            EXPECT_LE(k * g, j);  // ready when micro-batches are processed in order
            EXPECT_EQ(k, j < w ? 0 : (j - w) / g);
          }
          const int64_t stashed = ref::async_stashed_versions(p, s, m, g);  // walks (and checks k) itself
          const int64_t w1 = std::min(p - s - 1, m - 1);
          EXPECT_EQ(stashed, m == g ? 0 : std::min(ceil_div(w1, g), ceil_div(m - w1, g)))
              << "p " << p << " s " << s << " m " << m << " g " << g;
          if (g == 1) {  // PipeDream
            EXPECT_EQ(stashed, std::min(w1, m - w1));
          }
          if (m >= 2 * (p - s - 1) && m > g) {  // long steps
            EXPECT_EQ(stashed, ceil_div(p - s - 1, g));
          }
          if (g == 1 && m >= 2 * (p - s - 1)) {  // the paper's p-s versions
            EXPECT_EQ(stashed + 1, p - s);
          }
          if (g >= p - 1 && m > g) {  // 2BW: two versions at most
            EXPECT_EQ(stashed, s < p - 1 ? 1 : 0);
          }
          ++cases;
        }
  EXPECT_GT(cases, 1000);
  // Fewer than the paper's p-s on a short step: p = 8, m = 8.
  std::vector<int64_t> short_step;
  for (int64_t s = 0; s < 8; ++s) short_step.push_back(ref::async_stashed_versions(8, s, 8, 1));
  EXPECT_EQ(short_step, (std::vector<int64_t>{1, 2, 3, 4, 3, 2, 1, 0}));
  EXPECT_EQ(ref::async_stashed_versions(8, 0, 14, 1), 7);
  // 2BW with g < p-1 stashes more than one: p = 4, stage 0, g = 2.
  EXPECT_EQ(ref::async_stashed_versions(4, 0, 8, 2), 2);
  EXPECT_EQ(ref::async_stashed_versions(4, 0, 8, 4), 1);
  EXPECT_EQ(ref::async_stashed_versions(4, 0, 4, 4), 0);  // one update per step: nothing stashed
  EXPECT_THROW(ref::async_version(4, 0, 8, 3, 0), Error);  // g does not divide m
  EXPECT_THROW(ref::async_version(4, 4, 8, 1, 0), Error);  // no stage 4
  EXPECT_THROW(ref::async_version(4, 0, 8, 1, 8), Error);  // no micro-batch 8
}

// 5. Bad input: one pb::Error each.
TEST(AsyncPipeline, BadInputThrows) {
  const auto mc = tiny_model();
  const auto init = ref::init_params<float>(mc, 1);
  auto make = [&](std::vector<int64_t> bounds, int64_t g, int64_t dp, int64_t M) {
    ref::AsyncPipelineTrainer<float> t(mc, tiny_train(M), init, {std::move(bounds), g, dp});
  };
  EXPECT_NO_THROW(make({0, 2, 4}, 2, 2, 4));
  EXPECT_THROW(make({0, 2, 3}, 1, 1, 4), Error);     // bounds end before L = 4
  EXPECT_THROW(make({1, 2, 4}, 1, 1, 4), Error);     // bounds do not start at 0
  EXPECT_THROW(make({4}, 1, 1, 4), Error);           // no stage
  EXPECT_THROW(make({0, 2, 2, 4}, 1, 1, 4), Error);  // stage 1 holds no layer
  EXPECT_THROW(make({0, 3, 2, 4}, 1, 1, 4), Error);  // decreasing
  EXPECT_THROW(make({0, 4}, 3, 1, 4), Error);        // m % g != 0
  EXPECT_THROW(make({0, 4}, 0, 1, 4), Error);        // g < 1
  EXPECT_THROW(make({0, 4}, 1, 2, 3), Error);        // num_micro_batches % dp != 0
  EXPECT_THROW(make({0, 4}, 1, 0, 4), Error);        // dp < 1
  EXPECT_THROW(make({0, 4}, 4, 2, 4), Error);        // m = 2 per replica, g = 4
  try {
    make({0, 2, 2, 4}, 1, 1, 4);
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "async pipeline: stage 1 holds no layer (bounds 2, 2)");
  }
}

}  // namespace pb::test
