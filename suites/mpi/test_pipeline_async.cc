/* The asynchronous pipelines (train/pp_async.h): PipeDream's weight stashing and
 * PipeDream-2BW's double-buffered weights, against their single-process emulation
 * (reference/model/async_pipeline.h), on 2 and 4 ranks.
 *   - every case equals the emulating reference: the loss of every step, the last update's
 *     gradients of step 1 and the final parameters (fp32 rule; the step-1 quantities come
 *     from updated weights and are checked like later steps, harness/checks.cc);
 *   - every rank's communication equals the analytic model exactly: the DP all-reduce and
 *     SP's replicated sum once per update, the stage's squared norm over TP per update, its
 *     sum over the pipeline per step;
 *   - every memory category of every rank exactly as predicted, the stashed weight versions
 *     (Params) included; each stage's measured most versions at once equal the walk of its
 *     order (pp_schedule.h: weight_versions), and that equals the closed form: PipeDream
 *     1 + min(w, m-w) with w = min(p-r-1, m-1) (p-r, the paper's, once m >= 2(p-r-1)); 2BW
 *     with update_every >= p-1: 2 on every stage but the last;
 *   - the staleness is real: the same case under synchronous 1F1B trains to other losses;
 *   - bad input gives one line. */
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "harness/runner.h"
#include "case_expect.h"
#include "mpi_test_util.h"
#include "optimized/train/pp_schedule.h"
#include "reference/common/error.h"

namespace pb::test {

using harness::Case;

static Case async_case(const std::string& name, int64_t L, int pp, const std::string& kind, int64_t m, int g = 0,
                       int tp = 1, int dp = 1) {
  Case c = small_case(name, ref::ModelConfig::dense(32, 8, 4, 48, 64, L), {}, dp, tp, m);
  c.layout.pp = pp;
  c.schedule = kind;
  c.pp_update_every = g;
  c.train.steps = 3;
  return c;
}

static std::vector<Case> cases_for(int world) {
  std::vector<Case> all = {
      async_case("pp2_pipedream", 2, 2, "pipedream", 4),
      async_case("pp2_2bw", 4, 2, "pipedream-2bw", 6, 2),
      async_case("pp4_pipedream", 4, 4, "pipedream", 8),       // 4, 3, 2, 1 versions
      async_case("pp4_pipedream_m4", 4, 4, "pipedream", 4),    // the drain caps them: 2, 3, 2, 1
      async_case("pp4_2bw", 4, 4, "pipedream-2bw", 8),         // a version every p = 4 micro-batches
      async_case("pp4_2bw_g3", 4, 4, "pipedream-2bw", 6, 3),   // every p-1: still two
      async_case("pp2_tp2_sp_pipedream", 2, 2, "pipedream", 3, 0, 2),
      async_case("pp2_dp2_2bw", 2, 2, "pipedream-2bw", 4, 2, 1, 2),
  };
  Case cp = async_case("pp2_cp2_pipedream", 2, 2, "pipedream", 3);
  cp.layout.cp = 2;
  all.push_back(cp);
  Case split = async_case("pp2_2bw_split13", 4, 2, "pipedream-2bw", 4, 1);
  split.pp_layers = {1, 3};
  all.push_back(split);
  Case rc = async_case("pp2_pipedream_recompute", 2, 2, "pipedream", 3);
  rc.features = {"recompute_full"};  // the recomputed forward runs on the stashed version too
  all.push_back(rc);
  return cases_of_world(all, world);
}

// The closed form of the most weight versions of rank r (see the header).
static int closed_form_versions(const Case& c, int r) {
  const int p = c.layout.pp, m = int(c.train.num_micro_batches);
  const int w = std::min(p - r - 1, m - 1);
  const int g = c.schedule == "pipedream" ? 1 : c.pp_update_every > 0 ? c.pp_update_every : p;
  if (g >= m) return 1;
  return 1 + std::min((w + g - 1) / g, (m - w + g - 1) / g);
}

TEST(AsyncPipeline, EqualsTheEmulatingReferenceWithExactCommAndMemory) {
  const auto cases = cases_for(world_size());
  if (cases.empty()) GTEST_SKIP() << "no asynchronous pipeline case for " << world_size() << " rank(s)";
  run_exact(cases, world_rank(), [](const Case& c, const nlohmann::json& r) {
    const auto& pl = r["pipeline"];
    ASSERT_TRUE(pl.is_object());
    for (const auto& st : pl["stages"]) {
      const int s = st["stage"];
      EXPECT_EQ(st["weight_versions"], st["predicted_weight_versions"]) << st.dump();
      EXPECT_EQ(st["weight_versions"].get<int>(), closed_form_versions(c, s)) << st.dump();
      if (c.schedule == "pipedream-2bw" && c.train.num_micro_batches > c.pp_update_every) {
        EXPECT_EQ(st["weight_versions"].get<int>(), s == c.layout.pp - 1 ? 1 : 2) << st.dump();
      }
    }
  });
}

// The same training under synchronous 1F1B: every step's loss differs by far more than the
// fp32 tolerance (step 1's too: its micro-batches after the first run on updated weights).
TEST(AsyncPipeline, DiffersFromSynchronousTraining) {
  if (world_size() != 2) GTEST_SKIP() << "2 ranks";
  Case a = async_case("pp2_pipedream", 2, 2, "pipedream", 4);
  Case s = a;
  s.name = "pp2_1f1b", s.schedule = "1f1b";
  const auto oa = harness::run_case(a, MPI_COMM_WORLD, {});
  const auto os = harness::run_case(s, MPI_COMM_WORLD, {});
  ASSERT_EQ(oa.losses.size(), 3u);
  for (size_t k = 0; k < 3; ++k) EXPECT_GT(std::abs(oa.losses[k] - os.losses[k]), 1e-4 * std::abs(os.losses[k])) << k;
}

TEST(AsyncPipeline, BadInputIsRejectedWithOneLine) {
  if (world_rank() != 0) GTEST_SKIP() << "validation only, on rank 0";
  Case bf = async_case("pd_bf16", 2, 2, "pipedream", 4);
  bf.dtype = "bf16";
  expect_invalid(bf, "stashes fp32 weight versions");
  expect_invalid(async_case("pd2bw_g_m", 4, 2, "pipedream-2bw", 6, 4), "which must divide m = 6");
  expect_invalid(async_case("pd2bw_default", 4, 4, "pipedream-2bw", 6), "every 4 micro-batches (p, by default)");
  expect_invalid(async_case("pd2bw_g2", 4, 4, "pipedream-2bw", 8, 2), "at least p-1 = 3 micro-batches");
  expect_invalid(async_case("pd_g2", 2, 2, "pipedream", 4, 2), "updates after every micro-batch");
  Case sync = async_case("f1b_g2", 2, 2, "1f1b", 4, 2);
  expect_invalid(sync, "not for a synchronous schedule");
  Case zero = async_case("pd_zero", 2, 2, "pipedream", 4, 0, 1, 2);
  zero.features = {"distributed_optimizer"};
  expect_invalid(zero, "not with distributed_optimizer");
  Case vpp = async_case("pd_vpp", 4, 2, "pipedream", 4);
  vpp.layout.vpp = 2;
  expect_invalid(vpp, "one chunk per rank");
  Case nan = async_case("pd_nan", 2, 2, "pipedream", 4);
  nan.train.inject_nan_step = 1;
  expect_invalid(nan, "--inject-nan with schedule pipedream");
}

}  // namespace pb::test
