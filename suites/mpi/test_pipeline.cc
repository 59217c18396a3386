/* Pipeline parallelism against the reference (FEATURES.md, PP): for GPipe, 1F1B,
 * interleaved (v = 2), ZB-H1, ZB-H2, ZB-V, DualPipeV, DualPipe and Chimera on pp 2 and 4, alone and with tp2 + sp or dp2, the loss,
 * every step-1 gradient and every final parameter equal the reference's gradient
 * accumulation over the same m micro-batches (fp32 tolerance); every rank's communication
 * (TP, DP and the pipeline's point-to-point bytes) equals the analytic model exactly;
 * every rank's measured activation peak equals the schedule-walk prediction; stage 0's
 * peak is the simulated in-flight count (m for GPipe, p for 1F1B) times one micro-batch's
 * activations plus the output it sends; each stage runs exactly m forwards and m
 * backwards per chunk (and m W with a split backward). Cases run where they fit the
 * world size (2 or 4). */
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <map>

#include "harness/analytic.h"
#include "harness/runner.h"
#include "case_expect.h"
#include "mpi_test_util.h"
#include "optimized/train/pp_schedule.h"
#include "reference/common/error.h"
#include "reference/io/checkpoint.h"

namespace pb::test {

using harness::Case;

static Case pp_case(const std::string& name, int64_t L, int pp, int vpp, const std::string& kind, int64_t m,
                    int tp = 1, int dp = 1, bool sp = false) {
  Case c = small_case(name, ref::ModelConfig::dense(32, 8, 4, 48, 64, L), {}, dp, tp, m);
  if (!sp) c.features.clear();  // tp without SP too
  c.layout.pp = pp;
  c.layout.vpp = vpp;
  c.schedule = kind;
  return c;
}

static std::vector<Case> cases_for(int world) {
  std::vector<Case> all = {
      pp_case("pp2_gpipe", 2, 2, 1, "gpipe", 3),
      pp_case("pp2_1f1b", 4, 2, 1, "1f1b", 4),
      pp_case("pp2_vpp2_interleaved", 4, 2, 2, "interleaved", 4),
      pp_case("pp2_zbh1", 2, 2, 1, "zb-h1", 4),
      pp_case("pp4_gpipe", 4, 4, 1, "gpipe", 4),
      pp_case("pp4_1f1b", 4, 4, 1, "1f1b", 6),
      pp_case("pp4_zbh1", 4, 4, 1, "zb-h1", 5),
      pp_case("pp4_1f1b_m2", 4, 4, 1, "1f1b", 2),  // fewer micro-batches than stages
      pp_case("pp2_tp2_sp_1f1b", 2, 2, 1, "1f1b", 3, 2, 1, true),
      pp_case("pp2_dp2_1f1b", 2, 2, 1, "1f1b", 3, 1, 2),
      pp_case("pp2_vpp2_tp2_sp_interleaved", 4, 2, 2, "interleaved", 2, 2, 1, true),
      pp_case("pp2_vpp2_dp2_interleaved", 4, 2, 2, "interleaved", 4, 1, 2),
      pp_case("pp2_tp2_sp_zbh1", 2, 2, 1, "zb-h1", 3, 2, 1, true),
      pp_case("pp2_tp2_zbh1", 2, 2, 1, "zb-h1", 2, 2, 1, false),
      pp_case("pp2_dp2_gpipe", 2, 2, 1, "gpipe", 2, 1, 2),
      pp_case("pp2_zbh2", 2, 2, 1, "zb-h2", 4),
      pp_case("pp4_zbh2", 4, 4, 1, "zb-h2", 8),
      pp_case("pp2_dp2_zbh2", 2, 2, 1, "zb-h2", 3, 1, 2),
      pp_case("pp2_zbv", 4, 2, 2, "zb-v", 4),
      pp_case("pp2_dualpipev", 4, 2, 2, "dualpipev", 4),
      pp_case("pp4_dualpipev", 8, 4, 2, "dualpipev", 8),
      pp_case("pp2_tp2_sp_dualpipev", 4, 2, 2, "dualpipev", 5, 2, 1, true),
      pp_case("pp2_dp2_dualpipev", 4, 2, 2, "dualpipev", 4, 1, 2),
      pp_case("pp2_dualpipe", 2, 2, 2, "dualpipe", 4),
      pp_case("pp4_dualpipe", 4, 4, 2, "dualpipe", 8),
      pp_case("pp2_tp2_sp_dualpipe", 4, 2, 2, "dualpipe", 6, 2, 1, true),
      pp_case("pp2_dp2_dualpipe", 2, 2, 2, "dualpipe", 4, 1, 2),
      pp_case("pp2_chimera", 2, 2, 2, "chimera", 4),
      pp_case("pp4_chimera", 4, 4, 2, "chimera", 8),
      pp_case("pp2_tp2_sp_chimera", 4, 2, 2, "chimera", 4, 2, 1, true),
      pp_case("pp2_dp2_chimera", 2, 2, 2, "chimera", 2, 1, 2),
      pp_case("pp4_zbv", 8, 4, 2, "zb-v", 8),
      pp_case("pp2_tp2_sp_zbv", 4, 2, 2, "zb-v", 4, 2, 1, true),
      pp_case("pp2_dp2_zbv", 4, 2, 2, "zb-v", 4, 1, 2),
  };
  // Context parallelism (ring) inside every stage: 1F1B, and the split backwards.
  for (const char* kind : {"1f1b", "zb-h1", "zb-v"}) {
    Case c = pp_case(std::string("pp2_cp2_") + kind, 4, 2, std::string(kind) == "zb-v" ? 2 : 1, kind, 3);
    c.layout.cp = 2;
    all.push_back(c);
  }
  for (const char* kind : {"dualpipe", "chimera"}) {  // the ring inside both pipelines' stages
    Case c = pp_case(std::string("pp2_cp2_") + kind, 2, 2, 2, kind, 4);
    c.layout.cp = 2;
    all.push_back(c);
  }
  for (const char* kind : {"gpipe", "interleaved"}) {  // the ring under the other schedules
    Case c = pp_case(std::string("pp2_cp2_") + kind, 4, 2, std::string(kind) == "interleaved" ? 2 : 1, kind, 2);
    c.layout.cp = 2;
    all.push_back(c);
  }
  Case hy = pp_case("pp2_hybrid2x2_1f1b", 4, 2, 1, "1f1b", 3);  // hybrid inside every stage (8 ranks)
  hy.layout.cp = 4, hy.cp_kind = "hybrid", hy.cp_ulysses = 2;
  hy.train.seq_length = 16;
  all.push_back(hy);
  // Uneven stages (train/pp_partition.h): given, Megatron's first / last, balanced.
  auto split = [&](Case c, std::vector<int64_t> layers) {
    c.pp_layers = std::move(layers);
    return c;
  };
  all.push_back(split(pp_case("pp2_1f1b_split13", 4, 2, 1, "1f1b", 4), {1, 3}));
  all.push_back(split(pp_case("pp2_vpp2_interleaved_split", 6, 2, 2, "interleaved", 4), {1, 2, 2, 1}));
  all.push_back(split(pp_case("pp2_zbv_split", 5, 2, 2, "zb-v", 4), {2, 1, 1, 1}));
  all.push_back(split(pp_case("pp2_tp2_sp_zbh1_split", 4, 2, 1, "zb-h1", 3, 2, 1, true), {3, 1}));
  all.push_back(split(pp_case("pp2_dp2_1f1b_split", 3, 2, 1, "1f1b", 2, 1, 2), {2, 1}));
  Case fl = pp_case("pp4_zbh2_first_last", 8, 4, 1, "zb-h2", 7);
  fl.pp_first_layers = 1, fl.pp_last_layers = 1;  // 1, 3, 3, 1
  all.push_back(fl);
  Case bal = pp_case("pp2_1f1b_balanced", 5, 2, 1, "1f1b", 3);
  bal.pp_balanced = true;
  all.push_back(bal);
  Case u = pp_case("pp2_ulysses2_1f1b", 4, 2, 1, "1f1b", 3);  // Ulysses inside every stage
  u.layout.cp = 2;
  u.cp_kind = "ulysses";
  all.push_back(u);
  return cases_of_world(all, world);
}

TEST(Pipeline, EveryScheduleEqualsTheReferenceWithExactCommAndActivations) {
  const auto cases = cases_for(world_size());
  if (cases.empty()) GTEST_SKIP() << "no pipeline case for " << world_size() << " rank(s)";
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    harness::validate_case(c, world_size());
    const auto o = harness::run_case(c, MPI_COMM_WORLD, {});
    if (world_rank() != 0) continue;
    const auto& r = o.result;
    EXPECT_EQ(r["status"], "pass");
    for (const auto& ch : r["checks"]) EXPECT_TRUE(ch["pass"].get<bool>()) << ch.dump();
    bool saw_p2p = false;  // pipeline sends on rank 0 (ZB-V's rank 0 also sends: stage 0 -> 1)
    for (const auto& row : r["comm"]) {
      EXPECT_EQ(row["bytes"], row["predicted_bytes"]) << row.dump();
      saw_p2p = saw_p2p || (row["group"] == "pp" && row["op"] == "send");
    }
    EXPECT_TRUE(saw_p2p);
    // Memory: every category (params, grads, optimizer state, the activation, workspace and
    // comm-buffer peaks), every rank, exact.
    int rows = 0;
    std::map<int, int64_t> act;  // rank -> measured activation peak
    for (const auto& row : r["memory"]) {
      const std::string cat = row["category"];
      EXPECT_EQ(row["measured_bytes"], row["predicted_bytes"]) << row.dump();
      if (cat == "activations") act[row["rank"].get<int>()] = row["measured_bytes"].get<int64_t>();
      ++rows;
    }
    EXPECT_EQ(rows, kMemCategories * c.layout.world());
    // Stage 0's peak in micro-batches: the simulated in-flight count x one micro-batch's
    // activations of a chunk (all of rank 0's chunks are alike) + the output being sent.
    const pp::Schedule s = pp::make_schedule(c.schedule, c.layout.pp, c.layout.vpp, int(c.train.num_micro_batches));
    const pp::SimResult sim = pp::simulate(s, pp::default_costs(s));
    if (!s.split_backward && c.layout.cp == 1 && !c.typed_features().pp_split() && !s.bidir) {
      const int64_t t = c.layout.tp, N = 2 * 8, Ns = c.features.empty() ? N : N / t, H = 32, D = 4;
      const int64_t a = 8 / t, g = 4 / t, f = 48 / t;
      const int64_t layer = 4 * (4 * Ns * H + N * (2 * a + 2 * g) * D + 3 * N * f) + 4 * (2 * Ns + 2 * a * 8);
      const int64_t per_chunk = layer * c.model.num_hidden_layers / (c.layout.pp * c.layout.vpp);
      EXPECT_EQ(act.at(0), sim.peak_in_flight[0] * per_chunk + 4 * Ns * H);
      const int64_t m = c.train.num_micro_batches;
      if (c.schedule == "gpipe") {
        EXPECT_EQ(sim.peak_in_flight[0], m);
      }
      if (c.schedule == "1f1b") {
        EXPECT_EQ(sim.peak_in_flight[0], std::min<int64_t>(m, c.layout.pp));
      }
    }
    // The measured timeline: each stage ran m F and m B per chunk (m W when split).
    const auto& pl = r["pipeline"];
    ASSERT_TRUE(pl.is_object());
    std::map<std::tuple<int, std::string, int>, int> count;  // (stage, op, chunk)
    for (const auto& e : pl["trace"]["traceEvents"]) {
      if (e.value("ph", "") != "X") continue;
      const std::string name = e["name"];
      count[{e["tid"].get<int>(), name.substr(0, 1), e["args"]["chunk"].get<int>()}]++;
    }
    for (int st = 0; st < c.layout.pp; ++st)
      for (int ch = 0; ch < c.layout.vpp; ++ch) {
        const int64_t n = s.micro_batches_of(ch);  // (two pipelines: each chunk its half)
        EXPECT_EQ((count[{st, "F", ch}]), n) << st << " " << ch;
        EXPECT_EQ((count[{st, "B", ch}]), n) << st << " " << ch;
        EXPECT_EQ((count[{st, "W", ch}]), s.split_backward ? n : 0) << st << " " << ch;
      }
    for (const auto& stg : pl["stages"]) {
      EXPECT_GE(stg["measured_idle_fraction"].get<double>(), 0.0);
      EXPECT_LT(stg["measured_idle_fraction"].get<double>(), 1.0);
    }
  }
}

// Post-validation of the optimizer step (model/post_validation.h) under ZB-H2, 3 steps:
//   plain        every stage steps eagerly and keeps it: the reference's training, exactly
//                the predicted communication (the norm's chain along the pipeline instead
//                of the all-reduce) and memory (the copy of the state) on every rank
//   forced clip  clip_grad just below step 1's global norm: stage 0's partial norm is below
//                it, so stage 0 steps, rolls back and redoes the step clipped; the last
//                stage sees the full norm and steps clipped once; the result is the
//                reference's clipped training
//   forced NaN   a NaN gradient on the last stage in step 2: every other stage steps
//                eagerly and rolls back, the last skips; the step is skipped everywhere, as
//                in the reference
static void expect_case_passes(const harness::CaseOutcome& o, const Case& c) {
  const auto& r = o.result;
  EXPECT_EQ(r["status"], "pass");
  for (const auto& ch : r["checks"]) EXPECT_TRUE(ch["pass"].get<bool>()) << ch.dump();
  expect_exact_comm(r);
  expect_exact_memory(r, c);  // (bf16: the CPU kernels' promotion copies add to the workspace)
}

TEST(Pipeline, PostValidatedOptimizerStepRollsBackOnClipAndNaN) {
  std::vector<Case> all = {pp_case("pp2_zbh2_pv", 2, 2, 1, "zb-h2", 4), pp_case("pp4_zbh2_pv", 4, 4, 1, "zb-h2", 8),
                           pp_case("pp2_tp2_sp_zbh2_pv", 2, 2, 1, "zb-h2", 3, 2, 1, true),
                           pp_case("pp2_dp2_1f1b_pv", 2, 2, 1, "1f1b", 3, 1, 2),
                           pp_case("bf16_pp2_zbh2_pv", 2, 2, 1, "zb-h2", 4)};
  all.back().dtype = "bf16";
  const auto cases = cases_of_world(all, world_size());
  if (cases.empty()) GTEST_SKIP() << "no post-validation case for " << world_size() << " rank(s)";
  for (Case c : cases) {
    SCOPED_TRACE(c.name);
    c.features.push_back("post_validation");
    c.train.steps = 3;
    c.train.clip_grad = 100.0;  // no clipping
    harness::validate_case(c, world_size());
    const auto plain = harness::run_case(c, MPI_COMM_WORLD, {});
    const int last = world_size() - 1;  // the last stage's rank (pp is the outermost degree)
    if (world_rank() == 0) {
      expect_case_passes(plain, c);
      for (const auto& rk : plain.result["post_validation"]["ranks"]) {
        EXPECT_EQ(rk["eager"], 3) << rk.dump();
        EXPECT_EQ(rk["kept"], 3) << rk.dump();
      }
    }
    Case clipped = c;
    clipped.train.clip_grad = 0.999 * plain.grad_norms.at(0);  // every rank has the norms
    const auto cl = harness::run_case(clipped, MPI_COMM_WORLD, {});
    if (world_rank() == 0) {
      expect_case_passes(cl, clipped);
      const auto& ranks = cl.result["post_validation"]["ranks"];
      EXPECT_GE(ranks[0]["rolled_back"].get<int>(), 1) << ranks.dump();  // stage 0: eager, then undone
      EXPECT_GE(ranks[0]["redone"].get<int>(), 1) << ranks.dump();
      EXPECT_EQ(ranks[size_t(last)]["rolled_back"], 0) << ranks.dump();  // the last stage knows the full norm
      EXPECT_GE(ranks[size_t(last)]["redone"].get<int>(), 1) << ranks.dump();
    }
    harness::RunOptions nan;
    nan.inject_nan_step = 1;
    const auto nn = harness::run_case(c, MPI_COMM_WORLD, nan);
    EXPECT_FALSE(std::isfinite(nn.grad_norms.at(1)));
    if (world_rank() == 0) {
      expect_case_passes(nn, c);
      for (const auto& rk : nn.result["post_validation"]["ranks"]) {
        const bool at_last = rk["rank"].get<int>() >= world_size() - world_size() / c.layout.pp;
        EXPECT_EQ(rk["skipped"], 1) << rk.dump();
        EXPECT_EQ(rk["rolled_back"], at_last ? 0 : 1) << rk.dump();
        EXPECT_EQ(rk["eager"], at_last ? 2 : 3) << rk.dump();
      }
    }
  }
}

TEST(Pipeline, BadPipelineLayoutsAreRejectedWithOneLine) {
  auto expect_error = [&](const Case& c, const std::string& needle) {
    try {
      harness::validate_case(c, 64);
      ADD_FAILURE() << c.name << " accepted";
    } catch (const pb::Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(needle), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  };
  expect_error(pp_case("L3_pp2", 3, 2, 1, "1f1b", 2), "pp 2 x vpp 1 does not divide num_hidden_layers 3");
  expect_error(pp_case("L4_pp2_vpp4", 4, 2, 4, "interleaved", 4), "pp 2 x vpp 4 does not divide num_hidden_layers 4");
  expect_error(pp_case("vpp_no_pp", 4, 1, 2, "interleaved", 4), "vpp 2 needs pp > 1");
  expect_error(pp_case("warp", 2, 2, 1, "warp", 2), "unknown");
  expect_error(pp_case("interleaved_m_lt_p", 8, 4, 2, "interleaved", 2), "schedule");
  expect_error(pp_case("1f1b_vpp2", 4, 2, 2, "1f1b", 4), "schedule");
  Case sp = pp_case("split_short", 4, 2, 1, "1f1b", 2);
  sp.pp_layers = {1, 2};
  expect_error(sp, "pp_layers: the split 1, 2 covers 3 layers, the model has 4");
  sp.pp_layers = {4, 0};
  expect_error(sp, "pp_layers: stage 1 holds 0 layers");
  sp.pp_layers = {1, 1, 2};
  expect_error(sp, "pp_layers: 3 stage(s) given (1, 1, 2) for 2 pipeline stages (pp x vpp)");
  sp.pp_layers = {2, 2};
  sp.pp_first_layers = 2;
  expect_error(sp, "give one of pp_layers");
  sp = pp_case("split_no_pp", 4, 1, 1, "1f1b", 2);
  sp.pp_layers = {4};
  expect_error(sp, "need pp > 1");
  sp = pp_case("first_uneven", 8, 4, 1, "1f1b", 4);
  sp.pp_first_layers = 3;
  expect_error(sp, "the 5 layers left after the first and last ranks' do not split evenly over the other 3 rank(s)");
  expect_error(pp_case("dualpipe_p3", 3, 3, 2, "dualpipe", 6), "needs an even number of pipeline ranks");
  expect_error(pp_case("dualpipe_m5", 4, 2, 2, "dualpipe", 5), "needs an even m >= 2p micro-batches");
  expect_error(pp_case("dualpipe_L3", 3, 2, 2, "dualpipe", 4), "pp 2 does not divide num_hidden_layers 3");
  Case ch = pp_case("chimera_3", 4, 2, 2, "chimera", 4);
  ch.chimera_pipelines = 3;
  expect_error(ch, "chimera_pipelines 3: Chimera pairs a down and an up pipeline");
  ch.chimera_pipelines = 4;
  expect_error(ch, "not available in this build");
  expect_error(pp_case("chimera_m3", 4, 2, 2, "chimera", 3), "needs m a multiple of p");
  Case dz = pp_case("dualpipe_zero", 4, 2, 2, "dualpipe", 4, 1, 2);
  dz.features = {"distributed_optimizer"};
  expect_error(dz, "sums its two model copies' gradients in the optimizer step");
  Case pv = pp_case("pv_no_pp", 4, 1, 1, "1f1b", 2);
  pv.features = {"post_validation"};
  expect_error(pv, "post_validation passes the optimizer's global state along the pipeline (needs pp > 1)");
  pv = pp_case("pv_zero", 4, 2, 1, "zb-h2", 4, 1, 2);
  pv.features = {"post_validation", "distributed_optimizer"};
  expect_error(pv, "not with distributed_optimizer");
}

}  // namespace pb::test
