/* Activation recompute (optimized/model/recompute.h), full (uniform and block) and
 * selective: every case equals the reference, its communication (the recomputed forward's
 * again in the backward phase) and every memory category of every rank equal the
 * prediction; the run is bitwise identical to the same case without recompute, its
 * activation peak lower by exactly the predicted amount; a checkpointed block runs its
 * forward exactly twice per micro-batch; bad input is one line.
 *
 * Recompute in advance (the interleaved schedule's R actions, pp_schedule.h): bitwise the
 * same training as recomputing in B, with its communication and every memory category of
 * every rank as predicted (the recomputed state held from R to B); a checkpointed block has
 * run its forward once after F, twice after R and still twice after B; the R actions run
 * while the batch before them is in flight (their spans between its post and its wait). */
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <tuple>
#include <mpi.h>

#include "case_expect.h"
#include "mpi_test_util.h"

#include "harness/analytic.h"
#include "harness/runner.h"
#include "optimized/model/attention_block.h"
#include "optimized/model/dist_model.h"
#include "optimized/model/recompute.h"
#include "optimized/parallel/process_grid.h"
#include "optimized/train/pp_schedule.h"
#include "optimized/train/registry.h"
#include "reference/common/error.h"
#include "reference/io/checkpoint.h"

namespace pb::test {

using harness::Case;

static Case make_case(const std::string& name, ref::ModelConfig m, const std::vector<std::string>& features,
                      int dp = 1, int tp = 1, int64_t mb = 2) {
  return small_case(name, m, features, dp, tp, mb);
}

static ref::ModelConfig dense(int64_t L) { return ref::ModelConfig::dense(16, 4, 2, 24, 32, L); }

static ref::ModelConfig moe(int64_t L) {
  auto m = dense(L);
  m.num_local_experts = 4, m.num_experts_per_tok = 2, m.moe_intermediate_size = 12, m.router_aux_loss_coef = 0.01;
  return m;
}

static const std::vector<std::string> kFull = {"recompute_full"}, kSelective = {"recompute_selective"};

static std::vector<Case> cases_for(int world) {
  std::vector<Case> all = {
      make_case("full_uniform1", dense(2), kFull),
      make_case("full_block1", dense(3), kFull),
      make_case("selective", dense(2), kSelective),
      make_case("full_dp2", dense(2), kFull, 2),
      make_case("full_tp2_sp", dense(2), kFull, 1, 2),
      make_case("selective_tp2_sp", dense(2), kSelective, 1, 2),
      make_case("full_dp2_tp2_sp", dense(2), kFull, 2, 2),
      make_case("selective_dp4", dense(2), kSelective, 4, 1, 1),
  };
  Case u2 = make_case("full_uniform2", dense(4), kFull);
  u2.recompute_num_layers = 2;
  all.push_back(u2);
  Case b2 = make_case("full_block2_of3", dense(3), kFull);
  b2.recompute_method = "block", b2.recompute_num_layers = 2;
  all.push_back(b2);
  for (auto& c : all)
    if (c.name == "full_block1") c.recompute_method = "block";
  // Pipelines: 1F1B over 2 stages of 2 layers (uniform 2, block 1), interleaved.
  auto pp = [&](const std::string& name, const std::vector<std::string>& f, int v, const std::string& kind,
                const std::string& method, int n) {
    Case c = make_case(name, dense(4), f, 1, 1, 4);
    c.layout.pp = 2, c.layout.vpp = v, c.schedule = kind;
    c.recompute_method = method, c.recompute_num_layers = n;
    all.push_back(c);
  };
  pp("pp2_full_uniform2", kFull, 1, "1f1b", "uniform", 2);
  pp("pp2_full_block1", kFull, 1, "1f1b", "block", 1);
  pp("pp2_vpp2_full", kFull, 2, "interleaved", "uniform", 1);
  pp("pp2_selective_gpipe", kSelective, 1, "gpipe", "uniform", 1);
  // Zero bubble: the recompute in B, what W needs of it kept until W.
  pp("pp2_zbh1_full_uniform1", kFull, 1, "zb-h1", "uniform", 1);
  pp("pp2_zbh1_full_block1", kFull, 1, "zb-h1", "block", 1);
  pp("pp2_zbh1_selective", kSelective, 1, "zb-h1", "uniform", 1);
  pp("pp2_zbv_full", kFull, 2, "zb-v", "uniform", 1);
  for (const auto& [name, L, tp] : {std::tuple<const char*, int, int>{"pp2_zbh1_full_tp2_sp", 4, 2}, {"pp2_zbh1_full_l2", 2, 1}}) {
    Case c = make_case(name, dense(L), kFull, 1, tp, 4);
    c.layout.pp = 2, c.schedule = "zb-h1";
    all.push_back(c);
  }
  // Context parallelism: ring and Ulysses cores, their communication again.
  for (const char* kind : {"ring", "ulysses"})
    for (const auto& f : {kFull, kSelective}) {
      Case c = make_case(std::string("cp2_") + kind + "_" + f[0], dense(2), f);
      c.layout.cp = 2, c.cp_kind = kind;
      all.push_back(c);
    }
  // MoE: routing logged once, the dispatcher's forward again in backward.
  for (const auto& f : {kFull, kSelective}) {
    Case c = make_case("moe_ep2_" + f[0], moe(2), f, 2);
    c.layout.ep = 2;
    all.push_back(c);
  }
  // ZeRO-2 and 3: the gradients bound and the weights gathered per block of a group, in the
  // recompute as well (block_chain.h).
  auto zero = [&](const std::string& name, int stage, ref::ModelConfig m, std::vector<std::string> f, int dp, int tp,
                  const std::string& method, int n, int pp = 1) {
    f.push_back("distributed_optimizer");
    Case c = make_case(name, m, f, dp, tp, pp > 1 ? 4 : 2);
    c.zero_stage = stage, c.recompute_method = method, c.recompute_num_layers = n;
    if (pp > 1) c.layout.pp = pp, c.schedule = "1f1b";
    all.push_back(c);
  };
  zero("zero2_full_dp2", 2, dense(2), kFull, 2, 1, "uniform", 1);
  zero("zero3_full_dp2", 3, dense(2), kFull, 2, 1, "uniform", 1);
  zero("zero3_full_dp2_tp2_sp", 3, dense(2), kFull, 2, 2, "uniform", 1);
  zero("zero3_full_uniform2_dp4", 3, dense(4), kFull, 4, 1, "uniform", 2);
  zero("zero3_full_block1_of3_dp2", 3, dense(3), kFull, 2, 1, "block", 1);
  zero("zero3_selective_dp2", 3, dense(2), kSelective, 2, 1, "uniform", 1);
  zero("zero2_full_pp2_dp2", 2, dense(4), kFull, 2, 1, "uniform", 2, 2);
  zero("zero3_full_pp2_dp2", 3, dense(4), kFull, 2, 1, "block", 1, 2);
  add_bf16_copies(all, {"full_uniform1", "selective", "full_dp2_tp2_sp", "cp2_ring_recompute_full", "zero3_full_dp2_tp2_sp",
                        "pp2_zbh1_full_l2"});  // (L = 4 in bf16: the one-rank baseline itself above
                                               // the parameters' 3e-2 cap, 3.2e-2)
  return cases_of_world(all, world);
}

static Case without_recompute(Case c) {
  std::erase_if(c.features, [](const std::string& f) { return f.starts_with("recompute"); });
  return c;
}

TEST(Recompute, EqualsTheReferenceAndTheRunWithoutItBitwiseWithExactCommAndMemory) {
  const auto cases = cases_for(world_size());
  ASSERT_FALSE(cases.empty());
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const auto [o, plain] = run_beside_plain(c, without_recompute(c), world_rank());
    if (world_rank() != 0) continue;
    const auto& r = o.result;
    // The recomputed forward's communication: more backward bytes than without, where the
    // recomputed layers communicate (TP, CP, EP, ZeRO-3's weight gathers).
    auto backward_bytes = [](const nlohmann::json& res) {
      int64_t b = 0;
      for (const auto& row : res["comm"])
        if (row["phase"] == "backward" && row["group"] != "pp") b += row["bytes"].get<int64_t>();
      return b;
    };
    const bool full = c.typed_features().recompute_full;  // selective: the core's own (CP) only
    const bool zero3 = c.typed_features().distributed_optimizer && c.zero_stage == 3 && c.layout.dp > 1;  // its gathers
    const bool communicates = c.layout.cp > 1 || (full && (c.layout.tp > 1 || c.layout.ep > 1 || zero3));
    if (communicates) EXPECT_GT(backward_bytes(r), backward_bytes(plain.result));
    else EXPECT_EQ(backward_bytes(r), backward_bytes(plain.result));
    // Every rank's activation peak lower than without, by the predicted difference.
    expect_saving_as_predicted(r, plain.result, "activations");
  }
}

// Which blocks ran their forward how often: once per micro-batch, twice in a checkpointed
// group; a recomputing core once more per micro-batch in backward.
TEST(Recompute, ACheckpointedBlockRunsItsForwardExactlyTwice) {
  if (world_size() != 1) GTEST_SKIP() << "one rank";
  for (const auto& f : {kFull, kSelective}) {
    Case c = make_case("count", dense(3), f);
    c.recompute_method = "block", c.recompute_num_layers = 2;  // layers 0 and 1 checkpointed, 2 kept
    const Features feats = c.typed_features();
    const CaseSpec spec{c.model, c.train, c.layout, feats, c.schedule};
    ProcessGrid grid(MPI_COMM_WORLD, c.layout);
    DistModelConfig mc{c.model, 2, 8, strategies_for(spec), 5};
    DistModel m(mc, grid);
    const int runs = 3;
    for (int i = 0; i < runs; ++i) m.forward_backward(ref::make_batch(5, i, 2, 8, 32), 1.0f);
    int checkpointed = 0, kept = 0, cores = 0;
    for (const auto& b : m.blocks(0)) {
      if (auto* g = dynamic_cast<CheckpointedBlocks*>(b.get())) {
        EXPECT_EQ(g->forwards(), runs);
        for (const auto& inner : g->blocks()) {
          EXPECT_EQ(inner->forwards(), 2 * runs);
          ++checkpointed;
        }
        continue;
      }
      EXPECT_EQ(b->forwards(), runs);
      ++kept;
      if (auto* a = dynamic_cast<AttentionBlock*>(b.get()))
        if (auto* core = dynamic_cast<RecomputedCore*>(&a->core())) {
          EXPECT_EQ(core->recomputes(), runs);
          ++cores;
        }
    }
    if (f == kFull) {
      EXPECT_EQ(checkpointed, 4);  // two layers of two blocks
      EXPECT_EQ(kept, 4);          // embedding, layer 2's two blocks, head
    } else {
      EXPECT_EQ(checkpointed, 0);
      EXPECT_EQ(cores, 3);
    }
  }
}

TEST(Recompute, BadInputIsOneLine) {
  Case c = make_case("too_many", dense(4), kFull);
  c.layout.pp = 2, c.schedule = "1f1b";
  c.recompute_method = "block", c.recompute_num_layers = 3;
  expect_invalid(c, "recompute_num_layers 3 is more than the 2 layers a pipeline stage holds");
  c.recompute_method = "uniform";
  expect_invalid(c, "recompute_num_layers 3 is more than the 2 layers a pipeline stage holds");
  Case odd = make_case("uniform_odd", dense(3), kFull);
  odd.recompute_num_layers = 2;
  expect_invalid(odd, "recompute_method uniform needs recompute_num_layers 2 to divide the 3 layers");
  odd.recompute_method = "random";
  expect_invalid(odd, "unknown recompute_method 'random' (uniform, block)");
  odd.recompute_method = "block", odd.recompute_num_layers = 0;
  expect_invalid(odd, "recompute_num_layers 0 (at least 1)");
  Case both = make_case("both", dense(2), {"recompute_full", "recompute_selective"});
  expect_invalid(both, "recompute_full and recompute_selective together");
}

// Recompute in advance over pp2 x vpp2 (one layer a stage, block 1: each chunk's layer
// checkpointed), 4 and 8 micro-batches, uniform over two layers a stage, with TP2 + SP,
// DP2 and ZeRO-1/2, the gradient buckets overlapped, CP2, MoE with EP2, pp4 (bf16: below,
// on the model; a 4-layer model's bf16 one-rank baseline is itself above the reference cap).
static std::vector<Case> ahead_cases(int world) {
  const std::vector<std::string> f = {"recompute_full", "recompute_in_advance"};
  std::vector<Case> all;
  auto add = [&](const std::string& name, ref::ModelConfig m, std::vector<std::string> more, int dp, int tp,
                 int64_t mb, const std::string& method, int n, int pp = 2) {
    for (const auto& x : f) more.push_back(x);
    Case c = make_case(name, m, more, dp, tp, mb);
    c.layout.pp = pp, c.layout.vpp = 2, c.schedule = "interleaved";
    c.recompute_method = method, c.recompute_num_layers = n;
    all.push_back(c);
  };
  add("pp2_vpp2_block1", dense(4), {}, 1, 1, 4, "block", 1);
  add("pp2_vpp2_block1_m8", dense(4), {}, 1, 1, 8, "block", 1);
  add("pp2_vpp2_uniform2", dense(8), {}, 1, 1, 4, "uniform", 2);
  add("pp2_vpp2_block1_of2", dense(8), {}, 1, 1, 4, "block", 1);
  add("pp2_vpp2_tp2_sp", dense(4), {}, 1, 2, 4, "uniform", 1);
  add("pp2_vpp2_dp2_zero1", dense(4), {"distributed_optimizer"}, 2, 1, 4, "block", 1);
  add("pp2_vpp2_dp2_overlap", dense(4), {"overlap_grad_reduce"}, 2, 1, 4, "block", 1);
  add("pp2_vpp2_moe_dp2_ep2", moe(4), {}, 2, 1, 4, "uniform", 1);
  add("pp4_vpp2", dense(8), {}, 1, 1, 4, "block", 1, 4);
  Case z2 = all[5];
  z2.name = "pp2_vpp2_dp2_zero2", z2.zero_stage = 2;
  all.push_back(z2);
  Case cp = all[0];
  cp.name = "pp2_vpp2_cp2", cp.layout.cp = 2;
  all.push_back(cp);
  for (auto& c : all)
    if (c.name.find("moe") != std::string::npos) c.layout.ep = 2;
  return cases_of_world(all, world);
}

TEST(RecomputeInAdvance, IsTheSameTrainingWithItsCommunicationAndMemory) {
  const auto cases = ahead_cases(world_size());
  if (world_size() == 1) GTEST_SKIP() << "a pipeline";
  ASSERT_FALSE(cases.empty());
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const auto [o, plain] = run_beside_plain(c, without_feature(c, "recompute_in_advance"), world_rank());
    if (world_rank() != 0) continue;
    // The same collectives, calls and bytes (the recompute's own, in the backward phase).
    auto rows = [](const nlohmann::json& res) {
      std::vector<std::tuple<std::string, std::string, std::string, int64_t, int64_t>> v;
      for (const auto& row : res["comm"])
        v.emplace_back(row["group"], row["op"], row["phase"], row["calls"], row["bytes"]);
      std::sort(v.begin(), v.end());
      return v;
    };
    EXPECT_EQ(rows(o.result), rows(plain.result));
    // The measured pipeline timeline (the last step) has every R of the schedule.
    const pp::Schedule s = pp::make_schedule(c.schedule, c.layout.pp, c.layout.vpp, int(c.train.num_micro_batches), true);
    std::vector<int> measured(size_t(c.layout.pp), 0);
    for (const auto& e : o.result["pipeline"]["trace"]["traceEvents"])
      if (e.value("cat", "") == "R") ++measured.at(e["tid"].get<size_t>());
    // On every rank a recompute ran between the post of a pipeline receive and the wait for
    // it (the first wait after that post): a structural property of the recorded spans.
    for (int r = 0; r < c.layout.world(); ++r) {
      std::vector<double> posts, waits;
      std::vector<std::pair<double, double>> again;
      for (const auto& e : o.result["overlap"]["trace"]["traceEvents"]) {
        if (e["pid"] != r) continue;
        const std::string name = e["name"];
        const double t0 = e["ts"], t1 = t0 + e["dur"].get<double>();
        if (e["cat"] == "comm_async" && name == "pp recv") posts.push_back(t0);
        if (e["cat"] == "wait" && name == "pp recv wait") waits.push_back(t0);
        if (e["cat"] == "compute" && name.ends_with("forward again")) again.emplace_back(t0, t1);
      }
      std::sort(waits.begin(), waits.end());
      int between = 0;
      for (const double p : posts) {
        const auto w = std::lower_bound(waits.begin(), waits.end(), p);
        if (w == waits.end()) continue;
        for (const auto& [a0, a1] : again) between += p <= a0 && a1 <= *w;
      }
      EXPECT_GT(between, 0) << "rank " << r;
    }
    for (int r = 0; r < c.layout.pp; ++r) {
      int predicted = 0;
      for (const auto& a : s.ranks[size_t(r)]) predicted += a.op == pp::Op::R;
      EXPECT_GT(predicted, 0);
      EXPECT_EQ(measured[size_t(r)], predicted) << "stage " << r;
    }
  }
}

// Forward counts of a checkpointed block: 1 after F, 2 after the recompute ahead, 2 after
// B; the gradients bitwise those of recomputing in B (fp32 and bf16).
TEST(RecomputeInAdvance, ForwardCountIsOneThenTwoAfterTheRecomputeAndStillTwoAfterBackward) {
  if (world_size() != 1) GTEST_SKIP() << "one rank";
  for (DType dt : {DType::F32, DType::BF16}) {
  SCOPED_TRACE(dt == DType::F32 ? "fp32" : "bf16");
  Case c = make_case("count", dense(2), kFull);
  const CaseSpec spec{c.model, c.train, c.layout, c.typed_features(), c.schedule};
  ProcessGrid grid(MPI_COMM_WORLD, c.layout);
  DistModelConfig mc{c.model, 2, 8, strategies_for(spec), 5};
  mc.dtype = dt;
  DistModel ahead(mc, grid), plain(mc, grid);
  const ref::Batch batch = ref::make_batch(5, 0, 2, 8, 32);
  auto inner = [](DistModel& m) {
    std::vector<const Block*> v;
    for (const auto& b : m.blocks(0))
      if (auto* g = dynamic_cast<CheckpointedBlocks*>(b.get()))
        for (const auto& x : g->blocks()) v.push_back(x.get());
    return v;
  };
  ASSERT_EQ(inner(ahead).size(), 4u);  // two layers of two blocks
  double loss = 0;
  ahead.forward_chunk(0, 0, batch, Tensor(), 1.0f, &loss);
  for (const Block* b : inner(ahead)) EXPECT_EQ(b->forwards(), 1);
  ahead.recompute_chunk(0, 0);
  for (const Block* b : inner(ahead)) EXPECT_EQ(b->forwards(), 2);
  ahead.backward_chunk(0, 0, Tensor(), false);
  for (const Block* b : inner(ahead)) EXPECT_EQ(b->forwards(), 2);
  EXPECT_THROW(ahead.recompute_chunk(0, 0), Error);  // its backward is done
  plain.forward_backward(batch, 1.0f);
  for (const Block* b : inner(plain)) EXPECT_EQ(b->forwards(), 2);
  const Tensor& g1 = ahead.params().grad_buffer();
  const Tensor& g2 = plain.params().grad_buffer();
  ASSERT_EQ(g1.bytes(), g2.bytes());
  EXPECT_EQ(std::memcmp(g1.raw(), g2.raw(), g1.bytes()), 0);
  }
}

TEST(RecomputeInAdvance, BadInputIsOneLine) {
  Case c = make_case("ahead", dense(4), {"recompute_full", "recompute_in_advance"}, 1, 1, 4);
  c.layout.pp = 2, c.layout.vpp = 2, c.schedule = "interleaved";
  Case no_full = c;
  std::erase(no_full.features, "recompute_full");
  expect_invalid(no_full, "recompute_in_advance moves full recompute's forward again: it needs the feature recompute_full");
  Case one_f = c;
  one_f.layout.vpp = 1, one_f.schedule = "1f1b";
  expect_invalid(one_f, "runs in the interleaved pipeline schedule's waits for gradients");
  Case sel = c;
  sel.features.push_back("recompute_selective");
  expect_invalid(sel, "recompute_full and recompute_selective together");
  Case swap = c;  // two layers a stage: one checkpointed, one to swap
  swap.model = dense(8), swap.model_json = io::hf_config_json(swap.model);
  swap.recompute_method = "block";
  swap.features.push_back("swap_attention");
  expect_invalid(swap, "recompute_in_advance with swap_attention is not available");
  Case z3 = c;
  z3.features.push_back("distributed_optimizer");
  z3.zero_stage = 3;
  z3.layout.dp = 2;
  expect_invalid(z3, "recompute_in_advance with zero_stage 3 is not available");
}

}  // namespace pb::test
