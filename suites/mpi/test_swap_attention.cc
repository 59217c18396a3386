/* Swap attention (optimized/memory/swap_attention.h): every case equals the reference and
 * the same case without swapping bitwise; every memory category of every rank equals the
 * prediction, the device activation peak lower by exactly the predicted amount and the host
 * category holding what left the device; nothing is left in the pool or in flight after a
 * step; bad input is one line. */
#include <gtest/gtest.h>

#include <tuple>
#include <mpi.h>

#include "case_expect.h"
#include "mpi_test_util.h"

#include "harness/analytic.h"
#include "harness/runner.h"
#include "optimized/memory/swap_attention.h"
#include "optimized/model/attention_block.h"
#include "optimized/model/attention_core.h"
#include "optimized/model/dist_model.h"
#include "optimized/parallel/process_grid.h"
#include "optimized/train/registry.h"
#include "reference/common/error.h"
#include "reference/io/checkpoint.h"

namespace pb::test {

using harness::Case;

static Case make_case(const std::string& name, ref::ModelConfig m, int dp = 1, int tp = 1, int64_t mb = 2) {
  return small_case(name, m, {"swap_attention"}, dp, tp, mb);
}

static ref::ModelConfig dense(int64_t L) { return ref::ModelConfig::dense(16, 4, 2, 24, 32, L); }

static std::vector<Case> cases_for(int world) {
  std::vector<Case> all = {
      make_case("single", dense(2)),
      make_case("single_l3", dense(3)),
      make_case("dp2", dense(2), 2),
      make_case("tp2_sp", dense(2), 1, 2),
      make_case("dp2_tp2_sp", dense(2), 2, 2),
      make_case("dp4", dense(2), 4, 1, 1),
  };
  for (const auto& [kind, v] :
       {std::pair<const char*, int>{"1f1b", 1}, {"gpipe", 1}, {"interleaved", 2}, {"zb-h1", 1}, {"zb-v", 2}}) {
    Case c = make_case(std::string("pp2_") + kind, dense(4), 1, 1, 4);
    c.layout.pp = 2, c.layout.vpp = v, c.schedule = kind;
    all.push_back(c);
  }
  for (const char* kind : {"ring", "ulysses"}) {
    Case c = make_case(std::string("cp2_") + kind, dense(2));
    c.layout.cp = 2, c.cp_kind = kind;
    all.push_back(c);
  }
  auto moe = dense(2);
  moe.num_local_experts = 4, moe.num_experts_per_tok = 2, moe.moe_intermediate_size = 12;
  Case e = make_case("moe_ep2", moe, 2);
  e.layout.ep = 2;
  all.push_back(e);
  // Zero bubble with TP + SP (the gathered copies the W queue keeps, over swapped layers),
  // and with one layer per stage (bf16: with L = 4 the one-rank baseline itself is above
  // the parameters' 3e-2 cap, 3.2e-2).
  for (const auto& [name, L, tp] : {std::tuple<const char*, int, int>{"pp2_zb-h1_tp2_sp", 4, 2}, {"pp2_zb-h1_l2", 2, 1}}) {
    Case c = make_case(name, dense(L), 1, tp, 4);
    c.layout.pp = 2, c.schedule = "zb-h1";
    all.push_back(c);
  }
  add_bf16_copies(all, {"single", "dp2_tp2_sp", "cp2_ring", "pp2_zb-h1_l2"});
  // With recompute: selective (the core keeps nothing, the block's state is swapped), and
  // full with method block (the first layer of a stage checkpointed, the others swapped).
  add_variants(all, {"single", "tp2_sp", "pp2_1f1b", "pp2_zb-h1_l2", "cp2_ring", "bf16_single"}, "selective_",
               [](Case& c) { c.features.push_back("recompute_selective"); });
  add_variants(all, {"single_l3", "tp2_sp", "pp2_1f1b", "pp2_zb-h1_tp2_sp"}, "full_block1_", [](Case& c) {
    c.features.push_back("recompute_full");
    c.recompute_method = "block", c.recompute_num_layers = 1;
  });
  return cases_of_world(all, world);
}

TEST(SwapAttention, EqualsTheReferenceAndTheRunWithoutItBitwiseWithExactMemory) {
  const auto cases = cases_for(world_size());
  ASSERT_FALSE(cases.empty());
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const auto [o, plain] = run_beside_plain(c, without_feature(c, "swap_attention"), world_rank());
    if (world_rank() != 0) continue;
    const auto& r = o.result;
    // No collective moves more; the host link carries each layer's attention state out in
    // the forward and back in the backward, once per micro-batch.
    auto collectives = [](const nlohmann::json& res) {
      nlohmann::json rows = nlohmann::json::array();
      for (const auto& row : res["comm"])
        if (row["group"] != "host") rows.push_back(row);
      return rows;
    };
    EXPECT_EQ(collectives(r), collectives(plain.result));
    int host_rows = 0;
    for (const auto& row : r["comm"])
      if (row["group"] == "host") {
        ++host_rows;
        EXPECT_EQ(row["op"], row["phase"] == "forward" ? "to_host" : "to_device") << row.dump();
        // every layer of the rank but the checkpointed ones (block: the first of each chunk)
        const int64_t checkpointed = c.typed_features().recompute_full ? c.recompute_num_layers * c.layout.vpp : 0;
        EXPECT_EQ(row["calls"].get<int64_t>(), c.train.steps * c.train.num_micro_batches *
                                                   (c.model.num_hidden_layers / c.layout.pp - checkpointed))
            << row.dump();
      }
    EXPECT_EQ(host_rows, 2);
    expect_saving_as_predicted(r, plain.result, "activations");
    for (const auto& row : r["memory"])
      if (row["category"] == "host") EXPECT_GT(row["measured_bytes"].get<int64_t>(), 0) << row.dump();
  }
}

// After each step nothing is left in the pool or in flight; the bytes that went out came
// back; one micro-batch's host bytes are the attention state of every layer.
TEST(SwapAttention, NothingIsLeftInThePoolAfterAStep) {
  if (world_size() != 1) GTEST_SKIP() << "one rank";
  Case c = make_case("pool", dense(3));
  const Features f = c.typed_features();
  const CaseSpec spec{c.model, c.train, c.layout, f, c.schedule};
  ProcessGrid grid(MPI_COMM_WORLD, c.layout);
  DistModel m(DistModelConfig{c.model, 2, 8, strategies_for(spec), 5}, grid);
  auto* swap = dynamic_cast<SwapAttention*>(&m.activation_policy());
  ASSERT_NE(swap, nullptr);
  const int64_t host0 = TrackingAllocator::host().stats().current[size_t(int(MemCategory::Host))];
  for (int i = 0; i < 3; ++i) {
    TrackingAllocator::host().reset_peaks();
    m.forward_backward(ref::make_batch(5, i, 2, 8, 32), 1.0f);
    EXPECT_EQ(swap->in_flight(), 0);
    EXPECT_EQ(swap->host_bytes(), 0);
    const auto& st = TrackingAllocator::host().stats();
    EXPECT_EQ(st.current[size_t(int(MemCategory::Host))], host0);
    Dims d;
    d.N = d.Ns = 16, d.H = 16, d.a = 4, d.g = 2, d.D = 4, d.e = 4;
    const int64_t per_layer = attention_block_saved_bytes(d) + local_attention_saved_bytes(d);
    EXPECT_EQ(st.peak[size_t(int(MemCategory::Host))] - host0, 3 * per_layer);
    EXPECT_EQ(swap->bytes_out(), (i + 1) * 3 * per_layer);
    EXPECT_EQ(swap->bytes_in(), swap->bytes_out());
  }
}

TEST(SwapAttention, BadInputIsOneLine) {
  Case none = make_case("no_layers", dense(2));
  none.model.num_hidden_layers = 0;
  expect_invalid(none, "num_hidden_layers must be positive, got 0");  // the config refuses it first
  Case rc = make_case("with_recompute", dense(2));
  rc.features.push_back("recompute_full");
  expect_invalid(rc, "swap_attention with recompute_full checkpoints every layer (uniform, recompute_num_layers 1): "
                     "nothing is left to swap (recompute_method block with fewer layers than a stage's 2)");
  rc.recompute_method = "block", rc.recompute_num_layers = 2;
  expect_invalid(rc, "nothing is left to swap");
}

}  // namespace pb::test
