/* The distributed model against the reference: every case's per-step loss, step-1
 * gradients and final parameters within the fp32 tolerance; communication bytes and
 * calls equal to the analytic model for every (group, op, phase); params, grads and
 * optimizer-state bytes within 1% of predicted (they are exact); the same case twice
 * bitwise identical. Each test runs the cases that fit the world size (1, 2 or 4). */
#include <gtest/gtest.h>
#include <mpi.h>

#include "case_expect.h"
#include "mpi_test_util.h"

#include <cstring>

#include "harness/analytic.h"
#include "harness/runner.h"
#include "optimized/parallel/cp_ring.h"
#include "optimized/parallel/process_grid.h"
#include "optimized/model/dist_optimizer.h"
#include "optimized/model/zero_params.h"
#include "optimized/train/registry.h"
#include "optimized/core/device.h"
#include "reference/common/error.h"
#include "reference/io/checkpoint.h"

namespace pb::test {

using harness::Case;


static ref::ModelConfig model(int64_t H, int64_t A, int64_t G, int64_t F, int64_t V, int64_t L) {
  return ref::ModelConfig::dense(H, A, G, F, V, L);
}

static Case make_case(const std::string& name, ref::ModelConfig m, int dp, int tp, bool sp, int64_t B = 2,
                      int64_t S = 8, int64_t mb = 2, int64_t steps = 3) {
  Case c;
  c.name = name;
  c.model = m;
  c.model_json = io::hf_config_json(m);
  c.layout.dp = dp;
  c.layout.tp = tp;
  if (sp) c.features = {"sp"};
  c.train.micro_batch_size = B;
  c.train.seq_length = S;
  c.train.num_micro_batches = mb;
  c.train.steps = steps;
  c.train.lr = 3e-3;
  return c;
}

// The cases of the issue: dp2, tp2, tp4, tp2+sp, dp2 x tp2 + sp, GQA with G < A, odd sizes.
static std::vector<Case> cases_for(int world) {
  const auto gqa = model(32, 8, 4, 48, 64, 2);        // G < A
  const auto odd = model(24, 6, 2, 22, 26, 3);        // D = 4, non-power-of-two sizes
  const auto mqa = model(20, 5, 1, 14, 17, 2);        // one kv head, prime vocab
  std::vector<Case> all = {
      make_case("single_gqa", gqa, 1, 1, false),
      make_case("single_odd", odd, 1, 1, false, 3, 7, 1),
      make_case("single_mqa", mqa, 1, 1, false, 1, 5, 3),
      make_case("dp2", gqa, 2, 1, false),
      make_case("tp2", gqa, 1, 2, false),
      make_case("tp2_sp", gqa, 1, 2, true),
      make_case("tp2_odd", odd, 1, 2, false, 3, 7, 1),
      make_case("tp2_sp_odd", odd, 1, 2, true, 3, 6, 2),
      make_case("dp2_odd", odd, 2, 1, false, 1, 7, 3),
      make_case("tp4", gqa, 1, 4, false),
      make_case("tp4_sp", gqa, 1, 4, true),
      make_case("dp2_tp2_sp", gqa, 2, 2, true),
      make_case("dp2_tp2", odd, 2, 2, false, 2, 6, 1),
      make_case("dp4", gqa, 4, 1, false, 1, 8, 1),
      make_case("tp2_sp_clip", gqa, 1, 2, true),
      make_case("dp2_tp2_sp_clip", odd, 2, 2, true, 2, 6, 1),
  };
  // Context parallelism, ring attention (zigzag unless named contiguous), with GQA.
  auto cp = [&](const std::string& name, const ref::ModelConfig& m, int c, int dp, int tp, bool sp, int64_t B,
                int64_t S, int64_t mb) {
    Case k = make_case(name, m, dp, tp, sp, B, S, mb);
    k.layout.cp = c;
    if (name.find("contiguous") != std::string::npos) k.cp_balance = "contiguous";
    all.push_back(k);
  };
  cp("cp2", gqa, 2, 1, 1, false, 2, 8, 2);
  cp("cp4", gqa, 4, 1, 1, false, 2, 16, 1);
  cp("cp4_contiguous", gqa, 4, 1, 1, false, 1, 16, 1);
  cp("cp2_odd", odd, 2, 1, 1, false, 3, 12, 1);   // D = 4, S = 12
  cp("cp2_mqa", mqa, 2, 1, 1, false, 1, 20, 2);   // one kv head, chunks of 5
  cp("cp2_tp2_sp", gqa, 2, 1, 2, true, 2, 8, 2);
  cp("cp2_dp2", gqa, 2, 2, 1, false, 1, 8, 2);
  // Ulysses: heads split by all-to-all; kv heads repeated where the CP degree exceeds them.
  const auto g2 = model(32, 8, 2, 48, 64, 2);
  cp("ulysses2", gqa, 2, 1, 1, false, 2, 6, 2);    // S = 6: divisible by c only
  cp("ulysses4", gqa, 4, 1, 1, false, 1, 8, 1);
  cp("ulysses4_repeat", g2, 4, 1, 1, false, 2, 8, 1);  // G = 2 < c = 4: each kv head twice
  cp("ulysses2_tp2_sp", gqa, 2, 1, 2, true, 2, 8, 2);
  cp("ulysses2_dp2", odd, 2, 2, 1, false, 1, 10, 2);  // A = 6, G = 2, D = 4
  for (auto& c : all)
    if (c.name.starts_with("ulysses")) c.cp_kind = "ulysses";
  // Hybrid (USP): Ulysses over u = 2 inside a ring of r = 2.
  const auto g1 = model(32, 8, 1, 48, 64, 2);
  cp("hybrid2x2", gqa, 4, 1, 1, false, 2, 16, 1);
  cp("hybrid2x2_repeat", g1, 4, 1, 1, false, 1, 8, 2);  // one kv head, repeated for u = 2
  cp("hybrid2x2_tp2_sp", gqa, 4, 1, 2, true, 1, 16, 2);  // 8 ranks (mpi.dist_model.np8)
  cp("hybrid2x2_dp2", gqa, 4, 2, 1, false, 1, 16, 2);
  for (auto& c : all)
    if (c.name.starts_with("hybrid")) c.cp_kind = "hybrid", c.cp_ulysses = 2;
  for (auto& c : all)
    if (c.name.ends_with("_clip")) c.train.clip_grad = 0.05;  // below the norm: clipping active
  // The distributed optimizer (ZeRO-1): shards over DP, over DP x CP, with TP + SP; a model
  // of 378 parameters padded to 380 for 4 ranks (H = 6 = 2 x odd, F even: H (2L+1 + 2V +
  // L (2H + 2GD + 3F)) = 6 x 63).
  all.push_back(make_case("dp4_pad", model(6, 3, 1, 8, 10, 1), 4, 1, false, 1, 8, 1));
  add_variants(all, {"dp2", "dp4", "dp2_tp2_sp", "dp2_odd", "cp2_dp2", "dp2_tp2", "dp4_pad"}, "zero1_",
               [](Case& c) { c.features.push_back("distributed_optimizer"); });
  // ZeRO-2: every parameter padded and sliced on its own, the gradients reduce-scattered
  // after each block's backward (dp4_pad: the norms of H = 6 pad to 8).
  // ZeRO-1 in buckets of at least 1500 elements (a dozen or so per rank, each padded).
  add_variants(all, {"zero1_dp2", "zero1_dp4", "zero1_dp2_tp2_sp", "zero1_cp2_dp2", "zero1_dp4_pad"}, "buckets_",
               [](Case& c) { c.bucket_size = c.name == "zero1_dp4_pad" ? 40 : 1500; });
  // ZeRO-3: the weights are slices too, gathered per block where used.
  for (int stage : {2, 3})
    add_variants(all, {"dp2", "dp4", "dp2_tp2_sp", "dp2_odd", "cp2_dp2", "dp4_pad", "ulysses2_dp2"},
                 "zero" + std::to_string(stage) + "_", [stage](Case& c) {
                   c.features.push_back("distributed_optimizer");
                   c.zero_stage = stage;
                 });
  add_bf16_copies(all, {"single_gqa", "tp2_sp", "dp2_tp2_sp", "tp4_sp", "cp2", "cp2_tp2_sp", "ulysses4_repeat", "hybrid2x2",
                        "zero1_dp2_tp2_sp", "zero1_dp4", "zero2_dp2_tp2_sp", "zero2_dp4", "zero3_dp2_tp2_sp", "zero3_dp4"});
  add_bf16_copies(all, {"buckets_zero1_dp2_tp2_sp"});
  add_variants(all, {"bf16_single_gqa", "bf16_tp2_sp", "bf16_dp2_tp2_sp", "bf16_zero1_dp2_tp2_sp", "bf16_zero1_dp4",
                     "bf16_buckets_zero1_dp2_tp2_sp", "bf16_zero2_dp2_tp2_sp", "bf16_zero3_dp2_tp2_sp", "bf16_zero3_dp4"},
               "reuse_",  // reuse-fp32-param, without and with the distributed optimizer (ZeRO-1, 2, 3)
               [](Case& c) { c.features.push_back("reuse_fp32_param"); });
  // The memory techniques over a pipeline of two stages (1F1B, a layer each).
  auto pp2 = [&](const std::string& name, int dp, const std::vector<std::string>& f, int zero_stage, const char* dtype) {
    Case c = make_case(name, gqa, dp, 1, false, 2, 8, 3);
    c.layout.pp = 2, c.schedule = "1f1b", c.features = f, c.zero_stage = zero_stage, c.dtype = dtype;
    all.push_back(c);
  };
  pp2("pp2_dp2_zero1", 2, {"distributed_optimizer"}, 1, "fp32");
  pp2("pp2_dp2_zero2", 2, {"distributed_optimizer"}, 2, "bf16");
  pp2("pp2_dp2_zero3", 2, {"distributed_optimizer"}, 3, "fp32");
  pp2("pp2_offload", 1, {"offload_optimizer"}, 1, "bf16");
  pp2("pp2_reuse", 1, {"reuse_fp32_param"}, 1, "bf16");
  pp2("pp2_dp2_zero1_reuse", 2, {"distributed_optimizer", "reuse_fp32_param"}, 1, "bf16");
  // Zero bubble: a chunk's whole gradients of a micro-batch stay from its B to its W (ZeRO-2/3).
  add_variants(all, {"pp2_dp2_zero2", "pp2_dp2_zero3"}, "zbh1_", [](Case& c) { c.schedule = "zb-h1"; });
  for (int stage : {2, 3}) {
    Case c = make_case("zbv_pp2_dp2_zero" + std::to_string(stage), model(32, 8, 4, 48, 64, 4), 2, 1, false, 2, 8, 4);
    c.layout.pp = 2, c.layout.vpp = 2, c.schedule = "zb-v", c.features = {"distributed_optimizer"}, c.zero_stage = stage;
    all.push_back(c);
  }
  // ZeRO-Offload: the optimizer state and step on the host, whole or the range of ZeRO-1, 2, 3.
  add_variants(all, {"single_gqa", "dp2", "tp2_sp", "bf16_single_gqa", "zero1_dp2", "bf16_zero1_dp2_tp2_sp", "bf16_dp2_tp2_sp",
                     "buckets_zero1_dp2", "bf16_buckets_zero1_dp2_tp2_sp", "cp2", "zero1_cp2_dp2", "zero2_dp2",
                     "zero3_dp2", "bf16_zero2_dp2_tp2_sp", "bf16_zero3_dp2_tp2_sp", "zero3_cp2_dp2"},
               "offload_", [](Case& c) { c.features.push_back("offload_optimizer"); });
  return cases_of_world(all, world);
}

// Offloading moves where the step runs, not what it computes: bitwise the same training as
// the case without it, the optimizer state in the host category, and per step the range's
// fp32 gradients out and its weights back over the host link.
TEST(DistModel, OffloadIsTheSameTrainingWithTheStateOnTheHost) {
  int ran = 0;
  for (const auto& c : cases_for(world_size())) {
    if (!c.name.starts_with("offload_")) continue;
    SCOPED_TRACE(c.name);
    ++ran;
    const Case plain = without_feature(c, "offload_optimizer");
    const auto a = harness::run_case(c, MPI_COMM_WORLD, {}), b = harness::run_case(plain, MPI_COMM_WORLD, {});
    expect_bitwise_equal(a, b, world_rank() == 0);
    if (world_rank() != 0) continue;
    auto peak = [](const nlohmann::json& r, const char* cat, int rank) {
      for (const auto& row : r["memory"])
        if (row["category"] == cat && row["rank"] == rank) return row["measured_bytes"].get<int64_t>();
      return int64_t(-1);
    };
    // One transfer each way per step, or per bucket of the distributed optimizer (each its
    // slice; the bf16 staging then one slice at a time).
    const bool bucketed = c.bucket_size > 0;
    for (int rank = 0; rank < c.layout.world(); ++rank) {
      EXPECT_EQ(peak(a.result, "optimizer", rank), 0);
      // 16 bytes per element of the range on the host against 8 (fp32) or 12 on the device,
      // plus the cast weights in the step (bf16: 2 bytes).
      const int64_t opt = peak(b.result, "optimizer", rank), per = c.dtype == "bf16" ? 12 : 8;
      const int64_t staged = c.dtype == "bf16" ? 2 : 0;
      if (bucketed)
        EXPECT_LT(peak(a.result, "host", rank), opt / per * (16 + staged) + (staged ? 0 : 1));
      else
        EXPECT_EQ(peak(a.result, "host", rank), opt / per * (16 + staged));
      EXPECT_GE(peak(a.result, "host", rank), opt / per * 16);
    }
    int rows = 0;
    int64_t calls = 0;
    for (const auto& row : a.result["comm"])
      if (row["group"] == "host") {
        ++rows;
        EXPECT_EQ(row["phase"], "optimizer");
        calls += row["calls"].get<int64_t>();
      }
    if (bucketed) {
      EXPECT_GT(calls, 2 * c.train.steps);
      EXPECT_EQ(calls % (2 * c.train.steps), 0);
    } else {
      EXPECT_EQ(rows, 2);
      EXPECT_EQ(calls, 2 * c.train.steps);
    }
  }
  if (world_size() <= 4) EXPECT_GT(ran, 0);
}

TEST(DistModel, EveryCaseEqualsTheReferenceWithExactCommAndMemory) {
  const auto cases = cases_for(world_size());
  ASSERT_FALSE(cases.empty());
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    harness::validate_case(c, world_size());
    const auto o = harness::run_case(c, MPI_COMM_WORLD, {});
    if (world_rank() != 0) continue;
    const auto& r = o.result;
    expect_pass(r);
    expect_exact_comm(r);
    EXPECT_EQ(int(r["checks"].size()), 2 * int(c.train.steps) + 2 * (3 + 9 * int(c.model.num_hidden_layers)) + 1);
    if (c.name.ends_with("_clip")) {  // the clipping path really ran
      EXPECT_GT(o.grad_norms.at(0), 2 * c.train.clip_grad);
    }
    bool saw_tp = false, saw_dp = false, saw_cp = false;
    for (const auto& row : r["comm"]) {
      saw_tp = saw_tp || row["group"] == "tp";
      saw_dp = saw_dp || row["group"] == (c.layout.cp > 1 ? "dp_cp" : "dp");
      saw_cp = saw_cp || row["group"].get<std::string>().starts_with("cp");  // cp, or cp_ulysses and cp_ring
    }
    EXPECT_EQ(saw_tp, c.layout.tp > 1);
    EXPECT_EQ(saw_dp, c.layout.dp * c.layout.cp > 1);
    EXPECT_EQ(saw_cp, c.layout.cp > 1);
    if (c.layout.cp > 1) {  // every rank's attention work: all causal pairs of its queries
      const int64_t per_query = 2 * c.train.steps * c.train.num_micro_batches * c.model.num_hidden_layers *
                                c.model.num_attention_heads / c.layout.tp * c.train.micro_batch_size;  // fwd + bwd
      const auto& pairs = r["cp"]["attention_pairs"];
      ASSERT_EQ(int(pairs.size()), c.layout.world());
      const bool ulysses = c.cp_kind == "ulysses";  // every query of the sequence, a/c heads
      for (int rank = 0; rank < c.layout.world(); ++rank) {
        const int cr = ProcessGrid::coords_of(c.layout, rank).cp;
        int64_t sum = 0;
        if (ulysses) {  // a/c heads: c times fewer heads than per_query counts
          for (int64_t q = 0; q < c.train.seq_length; ++q) sum += q + 1;
          EXPECT_EQ(pairs[size_t(rank)].get<int64_t>() * c.layout.cp, per_query * sum) << "rank " << rank;
          continue;
        }
        if (c.cp_kind == "hybrid") {  // a/u heads over the whole chunks of its ring rank
          const int u = c.cp_ulysses, ring = c.layout.cp / u;
          for (const int64_t q : cp_positions(c.train.seq_length, ring, cr / u, false)) sum += q + 1;
          EXPECT_EQ(pairs[size_t(rank)].get<int64_t>() * u, per_query * sum) << "rank " << rank;
          continue;
        } else {
          for (const int64_t q : cp_positions(c.train.seq_length, c.layout.cp, cr, c.cp_balance == "contiguous"))
            sum += q + 1;
        }
        EXPECT_EQ(pairs[size_t(rank)].get<int64_t>(), per_query * sum) << "rank " << rank;
      }
      if (c.cp_balance == "contiguous" && !ulysses) {  // rank c-1 does about 2c-1 times rank 0's work
        EXPECT_GT(r["cp"]["attention_pairs_max_over_min"].get<double>(), 1.5 * c.layout.cp - 1);
      } else {
        EXPECT_EQ(r["cp"]["attention_pairs_max_over_min"].get<double>(), 1.0);
      }
      // The activations of a ring rank are 1/c of the same case's without CP (every saved
      // tensor has one row per token), as predicted and (above) measured; Ulysses adds its
      // whole-sequence copies of q, k, v, o (a/c and g'/c heads of all S tokens).
      Case whole = c;
      whole.layout.cp = 1;
      const auto act = [](const Case& k) { return harness::predict(k).memory.at(MemCategory::Activations); };
      if (!ulysses && c.cp_kind != "hybrid") {
        EXPECT_EQ(act(c) * c.layout.cp, act(whole));
      } else {
        EXPECT_LT(act(c), act(whole));
      }
    }
    // Every category on every rank to the byte (bf16 workspace: at least it), and every
    // category but the transfer buffers predicted to hold something.
    expect_exact_memory(r, c);
    // Reuse-fp32-param: no parameter buffer (the master's bytes hold the weights), or with
    // the distributed optimizer a 2-byte residual instead of the range's 4-byte master.
    const bool zero = c.typed_features().distributed_optimizer;
    const bool reuse = c.typed_features().reuse_fp32_param && !zero;
    // The gradients: the rank's slices and one block's whole ones, not all (under a split
    // backward each micro-batch's whole ones pending W: more, as predicted and measured).
    if (c.zero_stage >= 2 && zero && !c.schedule.starts_with("zb")) {
      const auto p = harness::predict(c);
      for (const auto& row : r["memory"])
        if (row["category"] == "grads") EXPECT_LT(row["measured_bytes"].get<int64_t>(), 4 * p.params_local) << row.dump();
    }
    if (c.typed_features().reuse_fp32_param && zero) {
      const Case plain = without_feature(c, "reuse_fp32_param");
      const auto with = harness::predict(c), without = harness::predict(plain);
      // Without it 12 bytes per element of the range (master, m, v): 2 of them saved.
      const int64_t opt = without.memory.at(MemCategory::Optimizer);
      EXPECT_EQ(opt % 12, 0);
      EXPECT_EQ(opt - with.memory.at(MemCategory::Optimizer), opt / 6);
      EXPECT_EQ(without.memory.at(MemCategory::Params), with.memory.at(MemCategory::Params));
    }
    for (const auto& row : r["memory"]) {
      const std::string cat = row["category"];
      if (cat == "params" && reuse) {
        EXPECT_EQ(row["measured_bytes"].get<int64_t>(), 0) << row.dump();
      } else if (cat == "optimizer" && c.typed_features().offload_optimizer) {
        EXPECT_EQ(row["measured_bytes"].get<int64_t>(), 0) << row.dump();
      } else if (cat != "comm_buffers" && cat != "host") {
        EXPECT_GT(row["predicted_bytes"].get<int64_t>(), 0) << row.dump();
      }
    }
  }
}

TEST(DistModel, TheSameCaseTwiceIsBitwiseIdentical) {
  const auto cases = cases_for(world_size());
  const Case& c = cases.back();
  SCOPED_TRACE(c.name);
  const auto a = harness::run_case(c, MPI_COMM_WORLD, {});
  const auto b = harness::run_case(c, MPI_COMM_WORLD, {});
  ASSERT_EQ(a.losses.size(), b.losses.size());
  EXPECT_EQ(std::memcmp(a.losses.data(), b.losses.data(), a.losses.size() * sizeof(double)), 0);
  if (world_rank() != 0) return;
  ASSERT_EQ(a.params.size(), b.params.size());
  for (size_t i = 0; i < a.params.size(); ++i)
    EXPECT_EQ(std::memcmp(a.params[i].data(), b.params[i].data(), a.params[i].size() * sizeof(float)), 0) << i;
}

// Mixed precision: after every step the bf16 weights are exactly the master weights rounded
// to nearest even, the gradients stay fp32, and the bytes are those of FEATURES.md
// (2 + 4 + 4 + 8 = 18 per parameter).
TEST(DistModel, Bf16WeightsAreTheRoundedMasterAfterEveryStep) {
  Layout l;
  l.tp = world_size() >= 2 ? 2 : 1;
  l.dp = world_size() / l.tp;
  ProcessGrid grid(MPI_COMM_WORLD, l);
  DistModelConfig mc{model(32, 8, 4, 48, 64, 2), 2, 8, Strategies::defaults(), 9, DType::BF16};
  DistModel m(mc, grid);
  ref::TrainConfig tc;
  tc.lr = 1e-2;
  DistOptimizer opt(m, grid, tc);
  const auto mem0 = TrackingAllocator::host().stats().current;
  const int64_t n = m.params().grad_buffer().numel();
  EXPECT_EQ(m.params().weight_buffer().dtype(), DType::BF16);
  EXPECT_EQ(m.params().grad_buffer().dtype(), DType::F32);
  EXPECT_GE(mem0[size_t(int(MemCategory::Params))], 2 * n);
  EXPECT_GE(mem0[size_t(int(MemCategory::Optimizer))], 12 * n);
  for (int step = 0; step < 2; ++step) {
    m.params().zero_grads();
    m.forward_backward(ref::make_batch(9, 2 * grid.dp_rank(), 2, 8, 64), 1.0f);
    opt.step();
    for (const auto& p : m.params().all())
      for (int64_t i = 0; i < p.w.numel(); ++i)
        ASSERT_EQ(p.w.bf16_bits()[i], float_to_bf16(p.master.f32()[i])) << p.name << "[" << i << "] step " << step;
  }
}

// Reuse-fp32-param: no bf16 buffer (2 bytes per parameter less), and after every step the
// bf16 weights are the master rounded to nearest with ties away from zero, read from the
// same bytes that give back every bit of the fp32 master.
TEST(DistModel, ReuseFp32ParamKeepsTheWeightsInTheMastersBytes) {
  Layout l;
  l.tp = world_size() >= 2 ? 2 : 1;
  l.dp = world_size() / l.tp;
  ProcessGrid grid(MPI_COMM_WORLD, l);
  auto bytes_of = [](MemCategory c) { return TrackingAllocator::host().stats().current[size_t(int(c))]; };
  const int64_t params0 = bytes_of(MemCategory::Params), opt0 = bytes_of(MemCategory::Optimizer);
  DistModelConfig mc{model(32, 8, 4, 48, 64, 2), 2, 8, Strategies::defaults(), 9, DType::BF16};
  mc.reuse_fp32_param = true;
  DistModel m(mc, grid);
  const int64_t n = m.params().grad_buffer().numel();
  EXPECT_EQ(bytes_of(MemCategory::Params) - params0, 0);
  EXPECT_EQ(bytes_of(MemCategory::Optimizer) - opt0, 12 * n);  // master (holding the weights), m, v
  ref::TrainConfig tc;
  tc.lr = 1e-2;
  DistOptimizer opt(m, grid, tc);
  for (int step = 0; step < 2; ++step) {
    m.params().zero_grads();
    m.forward_backward(ref::make_batch(9, 2 * grid.dp_rank(), 2, 8, 64), 1.0f);
    opt.step();
    for (const auto& p : m.params().all()) {
      const std::vector<float> master = m.params().master_values(p);
      ASSERT_EQ(int64_t(master.size()), p.w.numel());
      for (int64_t i = 0; i < p.w.numel(); ++i) {
        uint32_t bits;
        std::memcpy(&bits, &master[size_t(i)], 4);
        ASSERT_EQ(p.w.bf16_bits()[i], uint16_t((bits + 0x8000u) >> 16)) << p.name << "[" << i << "] step " << step;
      }
    }
  }
}

// ZeRO-3: between blocks no weight stays whole; a step's forward and backward gathered
// every parameter where it was used and released it.
TEST(DistModel, Zero3KeepsNoWholeWeightBetweenSteps) {
  if (world_size() != 2) GTEST_SKIP() << "two DP ranks";
  Case c = make_case("zero3", model(32, 8, 4, 48, 64, 2), 2, 1, false);
  c.features = {"distributed_optimizer"}, c.zero_stage = 3;
  ProcessGrid grid(MPI_COMM_WORLD, c.layout);
  DistModel m(model_config(c, 9), grid);
  auto* gathered = dynamic_cast<GatheredParams*>(&m.param_provider());
  ASSERT_NE(gathered, nullptr);
  ASSERT_TRUE(m.params().params_sharded());
  DistOptimizer opt(m, grid, c.train);
  for (int step = 0; step < 2; ++step) {
    m.params().zero_grads();
    m.forward_backward(ref::make_batch(9, 2 * grid.dp_rank(), 2, 8, 64), 1.0f);
    EXPECT_EQ(gathered->gathered(), 0);
    for (const auto& p : m.params().all()) EXPECT_FALSE(p.w.defined() || p.g.defined()) << p.name;
    opt.step();
  }
}

TEST(DistModel, ImpossibleLayoutsAreRejectedWithOneLine) {
  const auto gqa = model(32, 8, 4, 48, 64, 2);
  auto expect_error = [&](const Case& c, const std::string& needle) {
    try {
      harness::validate_case(c, world_size());
      ADD_FAILURE() << c.name << " accepted";
    } catch (const pb::Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(needle), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  };
  expect_error(make_case("tp3", gqa, 1, 3, false), "tp 3 does not divide num_attention_heads 8");
  expect_error(make_case("tp8", gqa, 1, 8, false), "tp 8 does not divide num_key_value_heads 4");
  expect_error(make_case("sp_odd_seq", gqa, 1, 2, true, 2, 7), "tp 2 does not divide seq_length 7");
  expect_error(make_case("sp_no_tp", gqa, 1, 1, true), "sequence parallelism needs tp > 1");
  expect_error(make_case("too_big", gqa, 16, 1, false), "needs 16 ranks, only");
  auto unknown = make_case("warp", gqa, 1, 1, false);
  unknown.features = {"warp_drive"};
  expect_error(unknown, "unknown feature 'warp_drive'");
  auto cuda = make_case("cuda", gqa, 1, 1, false);
  cuda.backend = "cuda";
  if (!cuda_built())
    expect_error(cuda, "this build has no CUDA backend");
  else if (cuda_device_count() == 0)
    expect_error(cuda, "no CUDA device is visible on this machine");
  auto fp8 = make_case("fp8", gqa, 1, 1, false);
  fp8.dtype = "fp8";
  expect_error(fp8, "unknown dtype 'fp8'");
  auto cp = make_case("cp_seq", gqa, 1, 1, false, 2, 12);  // S = 12: not divisible by 2c = 8
  cp.layout.cp = 4;
  expect_error(cp, "ring attention over cp 4 needs seq_length divisible by 2cp = 8, got 12");
  cp.train.seq_length = 16;
  cp.cp_kind = "spiral";
  expect_error(cp, "unknown CP kind 'spiral'");
  cp.cp_kind = "ulysses";
  cp.train.seq_length = 18;  // not divisible by c = 4
  expect_error(cp, "Ulysses over cp 4 needs seq_length divisible by cp, got 18");
  cp.layout.cp = 3;  // S = 18 divides, the 8 heads do not
  expect_error(cp, "Ulysses needs num_attention_heads 8 divisible by tp x cp = 3");
  auto kv = make_case("ulysses_kv", model(36, 6, 3, 48, 64, 2), 1, 1, false, 1, 12);  // 3 kv heads over cp 2
  kv.layout.cp = 2;
  kv.cp_kind = "ulysses";
  expect_error(kv, "Ulysses needs cp 2 and the kv heads per tp rank 3 to divide one another");
  auto hy = make_case("hybrid_bad", gqa, 1, 1, false, 1, 16);
  hy.layout.cp = 4, hy.cp_kind = "hybrid", hy.cp_ulysses = 3;
  expect_error(hy, "hybrid CP needs cp_ulysses u with 1 < u < cp 4 and u dividing cp, got 3");
  hy.cp_ulysses = 4;
  expect_error(hy, "hybrid CP needs cp_ulysses u with 1 < u < cp 4 and u dividing cp, got 4");
  hy.cp_ulysses = 2, hy.model = model(36, 3, 3, 48, 64, 2);  // 3 heads over u = 2
  expect_error(hy, "hybrid CP needs num_attention_heads 3 divisible by tp x u = 2");
  auto cp_sp = make_case("cp_sp", gqa, 1, 2, true, 2, 12);  // S/cp = 6 rows, not divisible by tp 4
  cp_sp.layout.cp = 2, cp_sp.layout.tp = 4;
  expect_error(cp_sp, "needs seq_length / cp = 6 divisible by tp");
  auto buckets = make_case("zero2_buckets", gqa, 2, 1, false);
  buckets.features = {"distributed_optimizer"}, buckets.zero_stage = 2, buckets.bucket_size = 100;
  expect_error(buckets, "bucket_size with zero_stage 2 (stages 2 and 3 shard every parameter on its own)");
  buckets.zero_stage = 1, buckets.bucket_size = -5;
  expect_error(buckets, "bucket_size -5 (elements, >= 0)");
  auto reuse = make_case("reuse_fp32", gqa, 1, 1, false);
  reuse.features = {"reuse_fp32_param"};
  expect_error(reuse, "reuse_fp32_param needs dtype bf16");
  reuse.dtype = "bf16", reuse.features.push_back("offload_optimizer");
  expect_error(reuse, "offload_optimizer with reuse_fp32_param (the master is in host memory: no device bytes to "
                      "share with the weights)");
  auto tpu = make_case("tpu", gqa, 1, 1, false);
  tpu.backend = "tpu";
  expect_error(tpu, "unknown backend 'tpu'");
}

}  // namespace pb::test
