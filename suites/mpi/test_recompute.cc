/* Activation recompute (optimized/model/recompute.h), full (uniform and block) and
 * selective: every case equals the reference, its communication (the recomputed forward's
 * again in the backward phase) and every memory category of every rank equal the
 * prediction; the run is bitwise identical to the same case without recompute, its
 * activation peak lower by exactly the predicted amount; a checkpointed block runs its
 * forward exactly twice per micro-batch; bad input is one line. */
#include <gtest/gtest.h>

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

}  // namespace pb::test
