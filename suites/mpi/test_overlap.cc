/* Communication overlap (optimized/core/timeline.h): every case's results carry each
 * rank's communication time, the part its compute thread waited on, the hidden fraction
 * and the ranks' timelines of the last step. A case with only blocking collectives hides
 * nothing; ZeRO-3's prefetched gathers run on the communicator's thread while blocks
 * compute (a structural check of the spans, not a speed threshold).
 *
 * overlap_grad_reduce (optimized/model/grad_overlap.h): bitwise the training of the same
 * buckets reduced at the step, with every case's communication and memory as predicted;
 * one all-reduce (ZeRO-1: reduce-scatter) per bucket per step, in the backward, every
 * gradient element in exactly one of them; the bucket collectives run while blocks compute.
 *
 * With ZeRO-2/3 each block's reduce-scatters run under the next block's backward: bitwise
 * the training without overlap, the same reduce-scatters, two consecutive blocks' whole
 * gradients at once (the grads peak above one block's by the predicted amount).
 *
 * overlap_param_gather (optimized/model/param_gather_overlap.h): bitwise the training that
 * gathers at the step, one all-gather per bucket per step; after a step every bucket is in
 * flight, after the next forward none is. */
#include <gtest/gtest.h>
#include <mpi.h>

#include "case_expect.h"
#include "mpi_test_util.h"

#include "harness/analytic.h"
#include "harness/runner.h"
#include "optimized/model/dist_model.h"
#include "optimized/model/dist_optimizer.h"
#include "optimized/model/param_gather_overlap.h"
#include "optimized/parallel/process_grid.h"
#include "optimized/train/registry.h"
#include "reference/io/checkpoint.h"
#include "reference/model/flops.h"

namespace pb::test {

using harness::Case;

static ref::ModelConfig dense(int64_t L) { return ref::ModelConfig::dense(16, 4, 2, 24, 32, L); }

// The spans of rank r in the trace: (kind, start, end) in microseconds.
struct Ev {
  std::string cat;
  double start, end;
};
static std::vector<Ev> events_of(const nlohmann::json& overlap, int r) {
  std::vector<Ev> out;
  for (const auto& e : overlap["trace"]["traceEvents"])
    if (e["pid"] == r) out.push_back({e["cat"], e["ts"].get<double>(), e["ts"].get<double>() + e["dur"].get<double>()});
  return out;
}

// How many (in-flight call, compute span) pairs of rank r's trace overlap in time (r < 0:
// of every rank of the world).
static int async_under_compute(const nlohmann::json& overlap, int r, int world = 0) {
  if (r < 0) {
    int n = 0;
    for (int k = 0; k < world; ++k) n += async_under_compute(overlap, k);
    return n;
  }
  int n = 0;
  const auto ev = events_of(overlap, r);
  for (const Ev& a : ev)
    if (a.cat == "comm_async")
      for (const Ev& b : ev)
        if (b.cat == "compute" && a.start < b.end && b.start < a.end) ++n;
  return n;
}

TEST(Overlap, BlockingCollectivesHideNothing) {
  const int n = world_size();
  Case c = small_case("dp_tp", dense(2), {}, n / 2, 2);  // TP + SP and DP: blocking collectives only
  const auto o = harness::run_case(c, MPI_COMM_WORLD, {});
  if (world_rank() != 0) return;
  const auto& ov = o.result["overlap"];
  ASSERT_EQ(int(ov["ranks"].size()), n);
  EXPECT_GT(ov["comm_ms"].get<double>(), 0);
  EXPECT_EQ(ov["exposed_ms"].get<double>(), ov["comm_ms"].get<double>());
  EXPECT_EQ(ov["hidden_fraction"].get<double>(), 0.0);
  for (int r = 0; r < n; ++r) {
    int compute = 0, comm = 0, async = 0;
    for (const Ev& e : events_of(ov, r)) {
      EXPECT_LE(e.start, e.end);
      compute += e.cat == "compute", comm += e.cat == "comm", async += e.cat == "comm_async";
    }
    // Every block's forward and backward per micro-batch, and the optimizer step.
    EXPECT_EQ(compute, int(c.train.num_micro_batches) * 2 * (2 * 2 + 2) + 1) << "rank " << r;
    EXPECT_GT(comm, 0) << "rank " << r;
    EXPECT_EQ(async, 0) << "rank " << r;
  }
}

TEST(Overlap, Zero3GathersRunWhileBlocksCompute) {
  const int n = world_size();
  Case c = small_case("zero3", dense(2), {"distributed_optimizer"}, n);
  c.zero_stage = 3;
  const auto o = harness::run_case(c, MPI_COMM_WORLD, {});
  if (world_rank() != 0) return;
  const auto& ov = o.result["overlap"];
  EXPECT_GT(ov["comm_ms"].get<double>(), 0);
  EXPECT_LE(ov["exposed_ms"].get<double>(), ov["comm_ms"].get<double>());
  for (int r = 0; r < n; ++r)
    EXPECT_GT(async_under_compute(ov, r), 0) << "rank " << r << ": no prefetched gather under a block's compute";
}

// The overlapped cases of this world size (dp x the rest = world): DP alone, with TP + SP,
// CP, 1F1B and zero bubble, MoE, full recompute; buckets of 300 elements (a dozen or so).
static std::vector<Case> overlap_cases(int world) {
  const std::vector<std::string> ov = {"overlap_grad_reduce"};
  auto moe = dense(2);
  moe.num_local_experts = 4, moe.num_experts_per_tok = 2;
  std::vector<Case> all = {small_case("dp2", dense(2), ov, 2), small_case("dp4", dense(2), ov, 4, 1, 1),
                           small_case("dp2_tp2_sp", dense(2), ov, 2, 2)};
  for (const char* s : {"1f1b", "zb-h1"}) {
    Case c = small_case(std::string("pp2_dp2_") + s, dense(2), ov, 2, 1, 4);
    c.layout.pp = 2, c.schedule = s;
    all.push_back(c);
  }
  Case cp = small_case("cp2_dp2", dense(2), ov, 2);
  cp.layout.cp = 2;
  all.push_back(cp);
  Case e = small_case("moe_dp4_ep2", moe, ov, 4, 1, 1);
  e.layout.ep = 2, e.model_json = io::hf_config_json(moe);
  all.push_back(e);
  all.push_back(small_case("recompute_dp2", dense(2), {"overlap_grad_reduce", "recompute_full"}, 2));
  // ZeRO-1: the buckets reduce-scattered in the backward (dense and the experts').
  for (const char* name : {"dp2", "dp4", "dp2_tp2_sp", "moe_dp4_ep2", "pp2_dp2_1f1b"}) {
    for (const Case& c : std::vector<Case>(all))
      if (c.name == name) {
        Case z = c;
        z.name = "zero1_" + c.name;
        z.features.push_back("distributed_optimizer");
        all.push_back(z);
      }
  }
  Case bf = small_case("bf16_zero1_dp2", dense(2), {"overlap_grad_reduce", "distributed_optimizer"}, 2);
  bf.dtype = "bf16";
  all.push_back(bf);
  for (auto& c : all) c.bucket_size = 300;
  Case one = small_case("dp2_one_bucket", dense(2), ov, 2);  // bucket_size 0: the whole buffer
  all.push_back(one);
  return cases_of_world(all, world);
}

TEST(Overlap, GradReduceIsTheSameTrainingWithOneAllReducePerBucketInTheBackward) {
  const auto cases = overlap_cases(world_size());
  ASSERT_FALSE(cases.empty());
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    // The same buckets, reduced at the step.
    const auto [o, plain] = run_beside_plain(c, without_feature(c, "overlap_grad_reduce"), world_rank());
    if (world_rank() != 0) continue;
    // The DP group's gradient all-reduces: all in the backward, their bytes 4 per gradient
    // element of the dense parameters per step (each element in exactly one bucket).
    const std::string group = c.layout.cp > 1 ? "dp_cp" : "dp";
    const bool zero = c.typed_features().distributed_optimizer;  // its reduce-scatters, of the padded buckets
    const std::string op = zero ? "reduce_scatter" : "all_reduce";
    int64_t calls = 0, bytes = 0, plain_calls = 0;
    for (const auto& row : o.result["comm"])
      if (row["group"] == group && row["op"] == op && row["bytes_per_call"] != 8) {
        EXPECT_EQ(row["phase"], "backward") << row.dump();
        calls += row["calls"].get<int64_t>(), bytes += row["bytes"].get<int64_t>();
      }
    for (const auto& row : plain.result["comm"])
      if (row["group"] == group && row["op"] == op && row["bytes_per_call"] != 8) {
        EXPECT_EQ(row["phase"], "optimizer") << row.dump();
        plain_calls += row["calls"].get<int64_t>();
      }
    EXPECT_EQ(calls, plain_calls);  // one per bucket per step, with or without overlap
    EXPECT_EQ(calls > c.train.steps, c.bucket_size > 0) << calls;
    // Without PP and TP every rank holds all the dense parameters (the model's less its experts).
    int64_t experts = 0;
    for (int64_t l = 0; l < c.model.num_hidden_layers; ++l)
      if (c.model.num_local_experts > 0 && c.model.is_moe_layer(l))
        experts += c.model.num_local_experts * 3 * c.model.hidden_size * c.model.expert_ffn();
    const int64_t exact = 4 * c.train.steps * (ref::analytic_param_count(c.model) - experts);
    if (c.layout.pp == 1 && c.layout.tp == 1 && !zero) EXPECT_EQ(bytes, exact);
    if (c.layout.pp == 1 && c.layout.tp == 1 && zero) {  // each bucket padded to a multiple of the ranks
      EXPECT_GE(bytes, exact);
      EXPECT_LT(bytes, exact + 4 * c.train.steps * calls / c.train.steps * c.layout.dp * c.layout.cp);
    }
    // The bucket all-reduces on the communicator's thread while blocks compute.
    const int overlapping = async_under_compute(o.result["overlap"], -1, c.layout.world());
    // (Under zero bubble a chunk's gradients are complete at its last W, the rank's last
    // compute: the buckets start together, with nothing left to hide them under.)
    if (c.bucket_size > 0 && !c.schedule.starts_with("zb"))
      EXPECT_GT(overlapping, 0) << "no bucket all-reduce under a block's compute";
  }
}

// ZeRO-2/3 with overlap_grad_reduce: each block's reduce-scatters in flight under the next
// block's backward (model/zero_grads.h). DP 2 and 4, TP2+SP, 1F1B, ZB-H1 (reduced at W, as
// without), full recompute, MoE with EP 2, CP 2, bf16.
static std::vector<Case> zero_overlap_cases(int world) {
  auto moe = dense(2);
  moe.num_local_experts = 4, moe.num_experts_per_tok = 2;
  std::vector<Case> all;
  for (int stage : {2, 3}) {
    const std::string z = "zero" + std::to_string(stage) + "_";
    const std::vector<std::string> f = {"overlap_grad_reduce", "distributed_optimizer"};
    std::vector<Case> some = {small_case(z + "dp2", dense(2), f, 2), small_case(z + "dp4", dense(2), f, 4, 1, 1),
                              small_case(z + "dp2_tp2_sp", dense(2), f, 2, 2)};
    for (const char* s : {"1f1b", "zb-h1"}) {
      Case c = small_case(z + "pp2_dp2_" + s, dense(2), f, 2, 1, 4);
      c.layout.pp = 2, c.schedule = s;
      some.push_back(c);
    }
    Case r = small_case(z + "recompute_dp4", dense(2), f, 4, 1, 1);
    r.features.push_back("recompute_full");
    some.push_back(r);
    Case e = small_case(z + "moe_dp4_ep2", moe, f, 4, 1, 1);
    e.layout.ep = 2, e.model_json = io::hf_config_json(moe);
    some.push_back(e);
    Case cp = small_case(z + "cp2_dp2", dense(2), f, 2);
    cp.layout.cp = 2;
    some.push_back(cp);
    for (auto& c : some) c.zero_stage = stage;
    all.insert(all.end(), some.begin(), some.end());
  }
  add_bf16_copies(all, {"zero2_dp2", "zero3_dp4"});
  return cases_of_world(all, world);
}

TEST(Overlap, ZeroStage2And3ReduceScattersRunUnderTheNextBlocksBackward) {
  const auto cases = zero_overlap_cases(world_size());
  ASSERT_FALSE(cases.empty());
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const auto [o, plain] = run_beside_plain(c, without_feature(c, "overlap_grad_reduce"), world_rank());
    if (world_rank() != 0) continue;
    // The same reduce-scatters (per parameter, every micro-batch, in the backward).
    auto rows = [](const nlohmann::json& r) {
      nlohmann::json v = nlohmann::json::array();
      for (const auto& row : r["comm"])
        if (row["op"] == "reduce_scatter") v.push_back(row);
      return v;
    };
    EXPECT_EQ(rows(o.result), rows(plain.result));
    if (c.schedule == "zb-h1") continue;  // (reduced at W, as without)
    // Two consecutive blocks' whole gradients at once: more than one block's, as predicted.
    expect_saving_as_predicted(plain.result, o.result, "grads");
    EXPECT_GT(async_under_compute(o.result["overlap"], -1, c.layout.world()), 0);  // a reduce-scatter under a backward
  }
}

static std::vector<Case> param_gather_cases(int world) {
  const std::vector<std::string> f = {"overlap_param_gather", "distributed_optimizer"};
  auto moe = dense(2);
  moe.num_local_experts = 4, moe.num_experts_per_tok = 2;
  std::vector<Case> all = {small_case("dp2", dense(2), f, 2), small_case("dp4", dense(2), f, 4, 1, 1),
                           small_case("dp2_tp2_sp", dense(2), f, 2, 2)};
  Case pp = small_case("pp2_dp2", dense(2), f, 2, 1, 4);
  pp.layout.pp = 2, pp.schedule = "1f1b";
  all.push_back(pp);
  Case e = small_case("moe_dp4_ep2", moe, f, 4, 1, 1);
  e.layout.ep = 2, e.model_json = io::hf_config_json(moe);
  all.push_back(e);
  Case both = small_case("with_grad_reduce_dp4", dense(2), f, 4, 1, 1);
  both.features.push_back("overlap_grad_reduce");
  all.push_back(both);
  Case bf = small_case("bf16_dp2", dense(2), f, 2);
  bf.dtype = "bf16";
  all.push_back(bf);
  for (auto& c : all) c.bucket_size = 300;
  return cases_of_world(all, world);
}

TEST(Overlap, ParamGatherIsTheSameTrainingWithOneAllGatherPerBucket) {
  const auto cases = param_gather_cases(world_size());
  ASSERT_FALSE(cases.empty());
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const auto [o, plain] = run_beside_plain(c, without_feature(c, "overlap_param_gather"), world_rank());
    if (world_rank() != 0) continue;
    // The weights' all-gathers: posted at the step either way, one per bucket (the same rows).
    auto gathers = [](const nlohmann::json& r) {
      nlohmann::json rows = nlohmann::json::array();
      for (const auto& row : r["comm"])
        if (row["op"] == "all_gather" && row["phase"] == "optimizer") rows.push_back(row);
      return rows;
    };
    EXPECT_EQ(gathers(o.result), gathers(plain.result));
    EXPECT_FALSE(gathers(o.result).empty());
  }
}

TEST(Overlap, ParamGatherBucketsAreInFlightUntilTheNextForwardUsesThem) {
  if (world_size() != 2) GTEST_SKIP() << "two DP ranks";
  Case c = small_case("dp2", dense(2), {"overlap_param_gather", "distributed_optimizer"}, 2);
  c.bucket_size = 300;
  ProcessGrid grid(MPI_COMM_WORLD, c.layout);
  DistModel m(model_config(c, 9), grid);
  auto* gather = dynamic_cast<OverlappedGather*>(&m.param_provider());
  ASSERT_NE(gather, nullptr);
  const int64_t buckets = int64_t(m.params().buckets().size());
  ASSERT_GT(buckets, 2);
  DistOptimizer opt(m, grid, c.train);
  for (int step = 0; step < 3; ++step) {
    m.params().zero_grads();
    m.forward_backward(ref::make_batch(9, 2 * grid.dp_rank() + step, 2, 8, 32), 1.0f);
    EXPECT_EQ(gather->in_flight(), 0) << "step " << step;  // every weight was acquired, so waited for
    opt.step();
    EXPECT_EQ(gather->in_flight(), buckets) << "step " << step;
  }
}

}  // namespace pb::test
