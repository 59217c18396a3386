/* The gradient sinks (optimized/parallel/grad_sink.h): the default matmul-add and the
 * separate add of no_gradient_accumulation_fusion (parallel/grad_separate_add.h).
 *
 * The kernels: with bf16 dy and x the matmul-add accumulates the fp32 product (its error
 * against the exact sum of products is fp32 rounding), the separate add accumulates the
 * product rounded to bf16 first -- bitwise: each product, rounded, then added -- and is
 * further from the exact sum (over 100 times). The model: over m micro-batches every linear weight's
 * gradient gets exactly m calls of the sink, for either sink. Training: cases with the
 * separate add pass the reference checks with their communication and every memory
 * category of every rank as predicted (its products in the workspace, at W under a split
 * backward), and the workspace peak is the matmul-add's plus the predicted product. */
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <cstring>
#include <map>
#include <random>

#include "case_expect.h"
#include "mpi_test_util.h"

#include "harness/runner.h"
#include "optimized/kernels/ops.h"
#include "optimized/model/dist_model.h"
#include "optimized/parallel/grad_separate_add.h"
#include "optimized/parallel/process_grid.h"
#include "optimized/train/registry.h"
#include "reference/model/data.h"

namespace pb::test {

using harness::Case;

namespace {

Tensor random_bf16(std::vector<int64_t> shape, uint64_t seed) {
  Tensor f = Tensor::empty(shape, MemCategory::Activations, DType::F32);
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> normal;
  for (int64_t i = 0; i < f.numel(); ++i) f.f32()[i] = normal(gen);
  Tensor b = Tensor::empty(shape, MemCategory::Activations, DType::BF16);
  ops::cast(b, f);
  return b;
}
Tensor to_f32(const Tensor& t) {
  Tensor f = Tensor::empty(t.shape(), MemCategory::Activations, DType::F32);
  ops::cast(f, t);
  return f;
}

}  // namespace

TEST(GradSink, MatmulAddKeepsTheProductInFp32TheSeparateAddRoundsItFirst) {
  const int64_t N = 64, out = 24, in = 40, m = 4;
  AccumulateGrads fused;
  SeparateAddGrads separate;
  Tensor a = Tensor::zeros({out, in}, MemCategory::Grads), b = Tensor::zeros({out, in}, MemCategory::Grads);
  Tensor want = Tensor::zeros({out, in}, MemCategory::Grads);  // each product rounded to bf16, added in fp32
  std::vector<double> exact(size_t(out * in), 0.0);
  for (int64_t k = 0; k < m; ++k) {
    const Tensor dy = random_bf16({N, out}, 10 + uint64_t(k)), x = random_bf16({N, in}, 20 + uint64_t(k));
    fused.linear_weight_grad(a, dy, x);
    separate.linear_weight_grad(b, dy, x);
    Tensor p = Tensor::zeros({out, in}, MemCategory::Workspace);
    ops::linear_backward_weight(p, dy, x);  // the fp32 product
    Tensor pb = Tensor::empty({out, in}, MemCategory::Workspace, DType::BF16);
    ops::cast(pb, p);
    ops::add_(want, to_f32(pb));
    const Tensor fy = to_f32(dy), fx = to_f32(x);
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < in; ++i)
        for (int64_t n = 0; n < N; ++n)
          exact[size_t(o * in + i)] += double(fy.f32()[n * out + o]) * double(fx.f32()[n * in + i]);
  }
  EXPECT_EQ(std::memcmp(b.raw(), want.raw(), b.bytes()), 0);  // the separate add, exactly
  double err_fused = 0, err_separate = 0, scale = 0;
  for (int64_t e = 0; e < out * in; ++e) {
    err_fused = std::max(err_fused, std::abs(a.f32()[e] - exact[size_t(e)]));
    err_separate = std::max(err_separate, std::abs(b.f32()[e] - exact[size_t(e)]));
    scale = std::max(scale, std::abs(exact[size_t(e)]));
  }
  // fp32 rounding of sums of 256 products against bf16's 2^-9 relative rounding per product.
  EXPECT_LT(err_fused, 1e-5 * scale);
  EXPECT_GT(err_separate, 100 * err_fused);  // (measured: 9.4e-2 against 5.4e-6, the sums up to 59)
  EXPECT_LT(err_separate, m * std::ldexp(1.0, -8) * scale);
}

// A sink that counts its calls per gradient tensor.
class CountingSink final : public GradSink {
 public:
  CountingSink(std::unique_ptr<GradSink> inner, std::map<const void*, int>& n) : inner_(std::move(inner)), n_(n) {}
  void linear_weight_grad(Tensor& dw, const Tensor& dy, const Tensor& x) override {
    ++n_[dw.raw()];
    inner_->linear_weight_grad(dw, dy, x);
  }

 private:
  std::unique_ptr<GradSink> inner_;
  std::map<const void*, int>& n_;
};

static ref::ModelConfig dense(int64_t L) { return ref::ModelConfig::dense(16, 4, 2, 24, 32, L); }

TEST(GradSink, EveryWeightGradientCountedOncePerMicroBatch) {
  const int64_t L = 2, m = 3;
  for (const bool separate : {false, true}) {
    SCOPED_TRACE(separate ? "separate add" : "matmul-add");
    Case c = small_case("count", dense(L), separate ? std::vector<std::string>{"no_gradient_accumulation_fusion"}
                                                    : std::vector<std::string>{});
    c.layout = Layout{};
    Strategies st = strategies_for({c.model, c.train, c.layout, c.typed_features(), c.schedule});
    std::map<const void*, int> n;
    const auto inner = st.grad_sink;
    st.grad_sink = [&](DistParams& p) { return std::make_unique<CountingSink>(inner(p), n); };
    ProcessGrid grid(MPI_COMM_SELF, c.layout);
    DistModel model({c.model, 2, 8, st, 5}, grid);
    for (int64_t k = 0; k < m; ++k) model.forward_backward(ref::make_batch(5, k, 2, 8, 32), 1.0f / float(m), int(k));
    EXPECT_EQ(int64_t(n.size()), 7 * L + 1);  // q, k, v, o, gate, up, down per layer; the LM head
    for (const auto& [dw, calls] : n) EXPECT_EQ(calls, m);
  }
}

// Training with the separate add (TP2 + SP, DP, AR TP, 1F1B, zero bubble with the products
// at W, recompute, ZeRO-3, bf16): the reference checks pass, communication and memory as
// predicted; without zero bubble the workspace peak is above the matmul-add's.
static std::vector<Case> separate_cases(int world) {
  const std::vector<std::string> f = {"no_gradient_accumulation_fusion"};
  std::vector<Case> all = {small_case("dp2", dense(2), f, 2), small_case("dp2_tp2_sp", dense(2), f, 2, 2),
                           small_case("dp4", dense(2), f, 4, 1, 1)};
  Case ar = small_case("tp2_allreduce", dense(2), f, 1, 2);
  std::erase(ar.features, "sp");
  all.push_back(ar);
  for (const char* s : {"1f1b", "zb-h1"}) {
    Case c = small_case(std::string("pp2_dp2_") + s, dense(2), f, 2, 1, 4);
    c.layout.pp = 2, c.schedule = s;
    all.push_back(c);
  }
  all.push_back(small_case("recompute_dp2", dense(2), {"no_gradient_accumulation_fusion", "recompute_full"}, 2));
  Case z3 = small_case("zero3_dp4", dense(2), {"no_gradient_accumulation_fusion", "distributed_optimizer"}, 4, 1, 1);
  z3.zero_stage = 3;
  all.push_back(z3);
  add_bf16_copies(all, {"dp2", "dp2_tp2_sp"});
  return cases_of_world(all, world);
}

TEST(GradSink, SeparateAddTrainsWithItsMemory) {
  const auto cases = separate_cases(world_size());
  ASSERT_FALSE(cases.empty());
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    harness::validate_case(c, c.layout.world());
    const auto o = harness::run_case(c, MPI_COMM_WORLD, {});
    const auto fused = harness::run_case(without_feature(c, "no_gradient_accumulation_fusion"), MPI_COMM_WORLD, {});
    if (world_rank() != 0) continue;
    expect_pass(o.result);
    expect_exact_comm(o.result);
    expect_exact_memory(o.result, c);
    if (c.dtype == "bf16" || c.schedule == "zb-h1") continue;  // (bf16: the emulation's copies; zb: W)
    std::vector<int64_t> with, without;
    for (const auto& row : o.result["memory"])
      if (row["category"] == "workspace") with.push_back(row["measured_bytes"]);
    for (const auto& row : fused.result["memory"])
      if (row["category"] == "workspace") without.push_back(row["measured_bytes"]);
    ASSERT_EQ(with.size(), without.size());
    for (size_t r = 0; r < with.size(); ++r) EXPECT_GT(with[r], without[r]) << "rank " << r;
  }
}

TEST(GradSink, SeparateAddRefusedWithExperts) {
  auto moe = dense(2);
  moe.num_local_experts = 4, moe.num_experts_per_tok = 2;
  Case c = small_case("moe", moe, {"no_gradient_accumulation_fusion"}, 2);
  c.layout.ep = 2;
  expect_invalid(c, "no_gradient_accumulation_fusion with an MoE model is not available in this build yet");
}

}  // namespace pb::test
