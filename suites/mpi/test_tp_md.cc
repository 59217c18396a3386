/* 2D, 2.5D and 3D tensor parallelism in the model (parallel/tp2d_linear.h, tp3d_strategy.h;
 * case keys tp_kind and tp_depth) against the reference on 4, 8 and 16 ranks (8 and 16
 * oversubscribed; tiny models):
 *   - the loss, every step-1 gradient, the gradient norm and every parameter after 3 steps equal
 *     the reference's (fp32 rule; bf16 against the fp32 reference with the bf16 rule) for 2D on
 *     2 x 2 ranks, 2.5D on 2 x 2 x 2, 3D on 2 x 2 x 2, 2D with DP and with PP (1f1b,
 *     interleaved), and on 16 ranks 3D with DP and with PP and 2.5D with DP;
 *   - every rank's communication equals the analytic terms exactly (SUMMA's broadcasts and
 *     reduce-scatters, the norms' row statistics, the embedding's and the loss's column
 *     collectives, the depth's averaging with DP; 3D's gathers and reduce-scatters over its
 *     three directions);
 *   - every memory category of every rank as predicted, and the parameters per rank are 1/q^2
 *     (3D: 1/q^3) of the dense matrices plus 1/q of the norm weights (2.5D: as 2D, replicated
 *     over d), counted from the model's shapes, not from the sharding code;
 *   - bad input (a rank count that is no square, q^2 d or cube, sizes the grid does not divide,
 *     a micro-batch that does not split, techniques it does not compose with) gives one line. */
#include <gtest/gtest.h>
#include <mpi.h>

#include "harness/runner.h"
#include "case_expect.h"
#include "mpi_test_util.h"
#include "reference/model/flops.h"

namespace pb::test {

using harness::Case;

// B = 4 sequences of 8 tokens (2.5D with q = d = 2 splits them in 4 blocks), 3 steps.
static Case grid_case(const std::string& name, const std::string& kind, int tp, int depth = 1,
                      const ref::ModelConfig& m = ref::ModelConfig::dense(32, 8, 4, 48, 64, 2)) {
  Case c = small_case(name, m, {}, 1, 1, 2);
  c.layout.tp = tp;
  c.tp_kind = kind;
  c.tp_depth = depth;
  c.train.micro_batch_size = 4;
  c.train.steps = 3;
  return c;
}

static std::vector<Case> cases_for(int world) {
  std::vector<Case> all = {
      grid_case("tp4_2d", "2d", 4),
      // F and V larger than the hidden width: the other terms of the workspace peaks
      grid_case("tp4_2d_wide", "2d", 4, 1, ref::ModelConfig::dense(16, 4, 2, 96, 160, 2)),
      grid_case("tp8_2p5d_d2", "2.5d", 8, 2),
      grid_case("tp8_3d", "3d", 8),
      grid_case("tp8_3d_wide", "3d", 8, 1, ref::ModelConfig::dense(16, 4, 4, 96, 160, 2)),
  };
  Case dp = grid_case("dp2_tp4_2d", "2d", 4);
  dp.layout.dp = 2;
  all.push_back(dp);
  Case pp = grid_case("pp2_tp4_2d_1f1b", "2d", 4);
  pp.layout.pp = 2, pp.schedule = "1f1b", pp.train.num_micro_batches = 4;
  all.push_back(pp);
  Case vpp = grid_case("pp2_vpp2_tp4_2d", "2d", 4, 1, ref::ModelConfig::dense(32, 8, 4, 48, 64, 4));
  vpp.layout.pp = 2, vpp.layout.vpp = 2, vpp.schedule = "interleaved", vpp.train.num_micro_batches = 4;
  all.push_back(vpp);
  Case dp3 = grid_case("dp2_tp8_3d", "3d", 8), pp3 = grid_case("pp2_tp8_3d_1f1b", "3d", 8);  // 16 ranks
  dp3.layout.dp = 2;
  pp3.layout.pp = 2, pp3.schedule = "1f1b", pp3.train.num_micro_batches = 4;
  Case dp25 = grid_case("dp2_tp8_2p5d_d2", "2.5d", 8, 2);
  dp25.layout.dp = 2;
  for (const Case& c : {dp3, pp3, dp25}) all.push_back(c);
  add_bf16_copies(all, {"tp4_2d", "tp8_2p5d_d2", "tp8_3d"});
  return cases_of_world(all, world);
}

TEST(TpGrids, EqualsTheReferenceWithExactCommAndMemory) {
  const auto cases = cases_for(world_size());
  if (cases.empty()) GTEST_SKIP() << "no grid case for " << world_size() << " rank(s)";
  run_exact(cases, world_rank(), [](const Case& c, const nlohmann::json& r) {
    // Parameters per rank from the model's shapes: every matrix over q^2 (3D: q^3), the norms over q.
    const auto& m = c.model;
    const int64_t q = 2;  // every case here has grid side 2
    const int64_t matrix_split = c.tp_kind == "3d" ? q * q * q : q * q;
    const int64_t norms = (2 * m.num_hidden_layers + 1) * m.hidden_size;
    const int64_t matrices = ref::analytic_param_count(m) - norms;
    const int64_t e = c.dtype == "bf16" ? 2 : 4;
    int rows = 0;
    for (const auto& row : r["memory"]) {
      if (row["category"] != "params" || c.layout.pp > 1) continue;  // (a stage holds part of the model)
      EXPECT_EQ(row["measured_bytes"].get<int64_t>(), e * (matrices / matrix_split + norms / q)) << row.dump();
      ++rows;
    }
    if (c.layout.pp == 1) EXPECT_EQ(rows, c.layout.world());
  });
}

TEST(TpGrids, BadInputIsRejectedWithOneLine) {
  if (world_rank() != 0) GTEST_SKIP() << "validation only, on rank 0";
  expect_invalid(grid_case("tp8_2d", "2d", 8), "tp must be a square, got tp 8");
  expect_invalid(grid_case("tp8_2p5d_d3", "2.5d", 8, 3), "tp_depth 3 must be >= 1 and divide tp 8");
  expect_invalid(grid_case("tp12_2p5d_d2", "2.5d", 12, 2), "tp / d = 6 must be a square");
  expect_invalid(grid_case("tp9_3d", "3d", 9), "tp must be a cube, got tp 9");
  expect_invalid(grid_case("tp8_3d_vocab", "3d", 8, 1, ref::ModelConfig::dense(32, 8, 4, 48, 66, 2)),
                 "q^2 = 4 blocks: it does not divide vocab_size 66");
  Case mb3 = grid_case("tp8_3d_mb2", "3d", 8);
  mb3.train.micro_batch_size = 2;
  expect_invalid(mb3, "micro_batch_size 2 does not divide");
  expect_invalid(grid_case("tp4_4d", "4d", 4), "unknown tp_kind '4d'");
  expect_invalid(grid_case("tp4_1d_depth", "1d", 4, 2), "tp_depth 2 is 2.5d's");
  expect_invalid(grid_case("tp16_heads", "2d", 16, 1, ref::ModelConfig::dense(48, 6, 2, 48, 64, 2)),
                 "does not divide num_attention_heads 6");
  expect_invalid(grid_case("tp16_ffn", "2d", 16, 1, ref::ModelConfig::dense(32, 8, 4, 50, 64, 2)),
                 "does not divide intermediate_size 50");
  expect_invalid(grid_case("tp16_hidden", "2d", 16, 1, ref::ModelConfig::dense(42, 3, 3, 48, 64, 2)),
                 "does not divide hidden_size 42");
  Case mb = grid_case("tp8_2p5d_mb2", "2.5d", 8, 2);
  mb.train.micro_batch_size = 2;
  expect_invalid(mb, "micro_batch_size 2 does not divide");
  Case sp = grid_case("tp4_2d_sp", "2d", 4);
  sp.features = {"sp"};
  expect_invalid(sp, "not available with sp");
  Case zb = grid_case("pp2_tp4_2d_zbh1", "2d", 4);
  zb.layout.pp = 2, zb.schedule = "zb-h1", zb.train.num_micro_batches = 4;
  expect_invalid(zb, "schedules gpipe, 1f1b and interleaved only");
  Case zero = grid_case("dp2_tp4_2d_zero", "2d", 4);
  zero.layout.dp = 2, zero.features = {"distributed_optimizer"};
  expect_invalid(zero, "not available with distributed_optimizer");
}

}  // namespace pb::test
