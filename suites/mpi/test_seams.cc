/* The model's seams (optimized/model/strategies.h): for every seam a fake strategy plugs
 * in through DistModelConfig::strategies alone, without touching a block, and is called
 * where the layer says (counted), while the loss and every gradient stay bitwise those of
 * the default strategies. Also: the registry installs SP behind the TP-linear seam. One
 * rank (MPI_COMM_SELF); the TP group has size 1, so its collectives short-circuit. */
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstring>
#include <map>

#include "optimized/model/dist_model.h"
#include "optimized/parallel/mc2_linear.h"
#include "optimized/parallel/sp_linear.h"
#include "optimized/train/registry.h"
#include "reference/common/error.h"
#include "reference/model/data.h"
#include "reference/model/init.h"
#include "reference/model/transformer.h"

namespace pb::test {

namespace {

const ref::ModelConfig kModel = ref::ModelConfig::dense(32, 8, 4, 48, 64, 3);  // L = 3
constexpr int64_t kB = 2, kS = 8, kL = 3;

struct Counts {
  std::map<std::string, int> n;
};

// One forward and backward of one micro-batch; the loss and every gradient, as bits.
std::vector<uint32_t> run(const Strategies& st, double* loss) {
  ProcessGrid grid(MPI_COMM_SELF, Layout{});
  DistModel model({kModel, kB, kS, st, 7}, grid);
  const ref::Batch batch = ref::make_batch(7, 0, kB, kS, kModel.vocab_size);
  model.params().zero_grads();
  *loss = model.forward_backward(batch, 1.0f);
  const Tensor& g = model.params().grad_buffer();
  std::vector<uint32_t> bits(size_t(g.numel()));
  std::memcpy(bits.data(), g.raw(), g.bytes());
  return bits;
}

void expect_same_as_default(const Strategies& st) {
  double l0 = 0, l1 = 0;
  const auto g0 = run(Strategies::defaults(), &l0);
  const auto g1 = run(st, &l1);
  EXPECT_EQ(std::memcmp(&l0, &l1, sizeof(double)), 0) << l0 << " vs " << l1;
  EXPECT_EQ(g0, g1);
}

class CountingCore final : public AttentionCore {
 public:
  CountingCore(const BlockEnv& env, Counts& c) : inner_(env), c_(c) {}
  std::unique_ptr<Saved> forward(Tensor& o, const Tensor& q, const Tensor& k, const Tensor& v, int mb) override {
    ++c_.n["core.forward"];
    return inner_.forward(o, q, k, v, mb);
  }
  void backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, Saved& s) override {
    ++c_.n["core.backward"];
    inner_.backward(dq, dk, dv, dout, s);
  }

 private:
  LocalAttention inner_;
  Counts& c_;
};

class CountingMlp final : public Mlp {
 public:
  CountingMlp(const BlockEnv& env, int64_t layer, Counts& c) : inner_(env, layer), c_(c) {}
  std::unique_ptr<Saved> forward(Tensor& f, const Tensor& m, BlockCtx& ctx) override {
    ++c_.n["mlp.forward"];
    return inner_.forward(f, m, ctx);
  }
  void backward(Tensor& dm, const Tensor& df, Saved& s) override {
    ++c_.n["mlp.backward"];
    inner_.backward(dm, df, s);
  }
  std::vector<ShardedParam*> params() const override { return inner_.params(); }

 private:
  DenseSwiGlu inner_;
  Counts& c_;
};

class CountingParams final : public ParamProvider {
 public:
  explicit CountingParams(Counts& c) : c_(c) {}
  const Tensor& acquire(ShardedParam& p) override {
    ++c_.n["acquire"];
    ++c_.n["held"];
    return p.w;
  }
  void release(ShardedParam&) override { --c_.n["held"]; }

 private:
  Counts& c_;
};

class CountingPolicy final : public ActivationPolicy {
 public:
  explicit CountingPolicy(Counts& c) : c_(c) {}
  void after_forward(SavedState& s) override {
    ++c_.n[std::string("saved.") + s.block()];
    for (Tensor* t : s.tensors()) EXPECT_TRUE(t->defined()) << s.block();
  }
  void before_backward(SavedState& s) override { ++c_.n[std::string("restore.") + s.block()]; }

 private:
  Counts& c_;
};

class CountingSink final : public GradSink {
 public:
  explicit CountingSink(Counts& c) : c_(c) {}
  void linear_weight_grad(Tensor& dw, const Tensor& dy, const Tensor& x) override {
    ++c_.n["wgrad"];
    inner_.linear_weight_grad(dw, dy, x);
  }

 private:
  AccumulateGrads inner_;
  Counts& c_;
};

class CountingTp final : public TpLinear {
 public:
  CountingTp(Communicator& tp, GradSink& sink, Counts& c) : TpLinear(tp, sink), c_(c) {}
  int64_t outer_rows(int64_t N) const override { return N; }
  Tensor gather(const Tensor& x) override {
    ++c_.n["gather"];
    return x;
  }
  void reduce(Tensor& out, Tensor& partial) override {
    ++c_.n["reduce"];
    tp_.all_reduce(partial);
    ops::copy(out, partial);
  }
  bool replicated_grads_partial() const override { return false; }

 private:
  Counts& c_;
};

}  // namespace

TEST(Seams, DefaultStrategiesEqualTheReference) {
  double loss = 0;
  run(Strategies::defaults(), &loss);
  const auto p = ref::init_params<float>(kModel, 7);
  const ref::Batch batch = ref::make_batch(7, 0, kB, kS, kModel.vocab_size);
  const double want = ref::model_forward(p, kModel, batch, kB, kS).ce;
  EXPECT_NEAR(loss, want, 1e-5 * std::abs(want));
}

TEST(Seams, AttentionCoreAndMlp) {
  Counts c;
  Strategies st = Strategies::defaults();
  st.attention_core = [&](const BlockEnv& env, int64_t) { return std::make_unique<CountingCore>(env, c); };
  st.mlp = [&](const BlockEnv& env, int64_t l) { return std::make_unique<CountingMlp>(env, l, c); };
  expect_same_as_default(st);
  EXPECT_EQ(c.n["core.forward"], kL);
  EXPECT_EQ(c.n["core.backward"], kL);
  EXPECT_EQ(c.n["mlp.forward"], kL);
  EXPECT_EQ(c.n["mlp.backward"], kL);
}

TEST(Seams, ParameterProvider) {
  Counts c;
  Strategies st = Strategies::defaults();
  st.params = [&](DistParams&, ProcessGrid&) { return std::make_unique<CountingParams>(c); };
  expect_same_as_default(st);
  // forward and backward: per layer 5 (attention block) + 4 (MLP block), 1 embedding
  // (forward only), 2 head
  EXPECT_EQ(c.n["acquire"], 2 * 9 * kL + 1 + 2 * 2);
  EXPECT_EQ(c.n["held"], 0);  // every acquire released
}

TEST(Seams, ActivationPolicy) {
  Counts c;
  Strategies st = Strategies::defaults();
  st.activations = [&] { return std::make_unique<CountingPolicy>(c); };
  expect_same_as_default(st);
  for (const char* b : {"attention", "mlp"}) {
    EXPECT_EQ(c.n[std::string("saved.") + b], kL) << b;
    EXPECT_EQ(c.n[std::string("restore.") + b], kL) << b;
  }
  EXPECT_EQ(c.n["saved.head"], 1);
  EXPECT_EQ(c.n["restore.head"], 1);
}

TEST(Seams, GradientSink) {
  Counts c;
  Strategies st = Strategies::defaults();
  st.grad_sink = [&](DistParams&) { return std::make_unique<CountingSink>(c); };
  expect_same_as_default(st);
  EXPECT_EQ(c.n["wgrad"], 7 * kL + 1);  // q, k, v, o, gate, up, down per layer; the LM head
}

TEST(Seams, TpLinear) {
  Counts c;
  Strategies st = Strategies::defaults();
  st.tp_linear = [&](ProcessGrid& grid, GradSink& sink) { return std::make_unique<CountingTp>(grid.tp(), sink, c); };
  expect_same_as_default(st);
  // forward: gather per column linear (2 per layer + head), reduce per row linear (2 per
  // layer) and the embedding; backward: gather twice per column linear (the input
  // gradient's region, the weight gradient's re-gather: no, once) -- counted exactly:
  EXPECT_EQ(c.n["gather"], (2 * kL + 1) + (2 * kL + 1) + 2 * kL + 1);  // fwd col, bwd col, bwd row, embedding bwd
  EXPECT_EQ(c.n["reduce"], (2 * kL + 1) + (2 * kL + 1));              // fwd row + embedding, bwd col + head
}

TEST(Seams, RegistryInstallsSequenceParallel) {
  const Layout l{.tp = 2};
  ref::TrainConfig tc;
  tc.seq_length = 8;
  const std::string sched = "1f1b";
  const Features f = parse_features({"sp"});
  EXPECT_TRUE(f.sp);
  const Strategies st = strategies_for({kModel, tc, l, f, sched});
  ProcessGrid grid(MPI_COMM_SELF, Layout{});
  AccumulateGrads sink;
  const auto tp = st.tp_linear(grid, sink);
  EXPECT_NE(dynamic_cast<TpSequenceParallel*>(tp.get()), nullptr);
  EXPECT_EQ(st.tp_outer_rows(16, 2), 8);
  const Strategies plain = strategies_for({kModel, tc, l, Features{}, sched});
  EXPECT_NE(dynamic_cast<TpAllReduce*>(plain.tp_linear(grid, sink).get()), nullptr);
  EXPECT_THROW(parse_features({"tp"}), Error);       // a degree, not a feature
  EXPECT_THROW(parse_features({"nonsense"}), Error);
  // MC2 replaces SP's linears (installed after SP's entry), with its chunks.
  Features mf = parse_features({"sp", "mc2"});
  mf.mc2_chunks = 4;
  const auto mc2 = strategies_for({kModel, tc, l, mf, sched}).tp_linear(grid, sink);
  ASSERT_NE(dynamic_cast<TpMc2*>(mc2.get()), nullptr);
  EXPECT_EQ(dynamic_cast<TpMc2*>(mc2.get())->chunks(), 4);
}

}  // namespace pb::test
