/* MoE and expert parallelism against the reference (FEATURES.md, EP): every case's loss,
 * step-1 gradients and final parameters within the fp32 tolerance of the single-process
 * Mixtral layer; dispatcher bytes equal to the analytic terms given the run's routing
 * counts, on every rank; expert parameter, gradient and optimizer bytes exact; routing
 * statistics consistent (copies dispatched = rows received); the two dispatchers agree; the
 * dispatchers alone restore the input with identity experts under skewed routing; bad
 * layouts give one line. Each test runs the cases that fit the world size (1, 2, 4, 8). */
#include <gtest/gtest.h>
#include <mpi.h>

#include "case_expect.h"
#include "mpi_test_util.h"

#include <cmath>
#include <numeric>

#include "harness/analytic.h"
#include "harness/runner.h"
#include "optimized/core/device.h"
#include "optimized/kernels/ops.h"
#include "optimized/parallel/ep_allgather.h"
#include "optimized/parallel/ep_alltoall.h"
#include "optimized/parallel/process_grid.h"
#include "reference/common/error.h"
#include "reference/io/checkpoint.h"

namespace pb::test {

using harness::Case;

static ref::ModelConfig moe_model(int64_t E, int64_t K, bool renorm = true, double aux = 0.01, int64_t L = 2) {
  auto m = ref::ModelConfig::dense(16, 4, 2, 24, 32, L);
  m.num_local_experts = E;
  m.num_experts_per_tok = K;
  m.moe_intermediate_size = 12;
  m.norm_topk_prob = renorm;
  m.router_aux_loss_coef = aux;
  return m;
}

static Case moe_case(const std::string& name, ref::ModelConfig m, int dp, int ep, const std::string& dispatcher,
                     int64_t B = 2, int64_t S = 8, int64_t mb = 2) {
  Case c;
  c.name = name;
  c.model = m;
  c.model_json = io::hf_config_json(m);
  c.layout.dp = dp;
  c.layout.ep = ep;
  c.moe_dispatcher = dispatcher;
  c.train.micro_batch_size = B;
  c.train.seq_length = S;
  c.train.num_micro_batches = mb;
  c.train.steps = 3;
  c.train.lr = 3e-3;
  return c;
}

static std::vector<Case> cases_for(int world) {
  std::vector<Case> all;
  for (const char* d : {"alltoall", "allgather"}) {
    const std::string s = d;
    all.push_back(moe_case("e4k2_" + s, moe_model(4, 2), 1, 1, d));
    all.push_back(moe_case("ep2_e4k2_" + s, moe_model(4, 2), 2, 2, d));
    all.push_back(moe_case("ep2_e8k1_noaux_norenorm_" + s, moe_model(8, 1, false, 0.0), 2, 2, d));
    all.push_back(moe_case("ep4_e8k2_" + s, moe_model(8, 2), 4, 4, d, 1, 8, 2));
    all.push_back(moe_case("ep4_e4k1_" + s, moe_model(4, 1, true, 0.0), 4, 4, d, 2, 4, 1));
  }
  auto mixed = moe_model(4, 2, true, 0.02, 3);
  mixed.moe_layers = {1};  // dense, MoE, dense
  mixed.intermediate_size = 20;
  all.push_back(moe_case("mixed_dense_moe", mixed, 1, 1, "alltoall"));
  auto cap = moe_model(4, 2);
  cap.moe_expert_capacity_factor = 0.5;  // capacity 4 of a rank's 16 copies per expert: drops
  all.push_back(moe_case("ep2_capacity", cap, 2, 2, "alltoall"));
  all.push_back(moe_case("ep2_capacity_allgather", cap, 2, 2, "allgather"));
  all.push_back(moe_case("dp4_ep2", moe_model(4, 2), 4, 2, "alltoall", 1, 8, 1));  // expert_dp of 2
  {
    Case c = moe_case("tp2_sp_ep2", moe_model(4, 2), 2, 2, "alltoall");
    c.layout.tp = 2, c.features = {"sp"};
    all.push_back(c);
    c.name = "tp2_sp_ep2_capacity", c.model = cap, c.model_json = io::hf_config_json(cap);
    all.push_back(c);
  }
  {
    Case c = moe_case("cp2_ep2", moe_model(4, 2), 1, 2, "alltoall", 2, 8, 2);  // EP over the CP ranks
    c.layout.cp = 2;
    all.push_back(c);
  }
  {
    Case c = moe_case("pp2_ep2", moe_model(4, 2), 2, 2, "alltoall", 1, 8, 4);
    c.layout.pp = 2, c.schedule = "1f1b";
    all.push_back(c);
    c.name = "pp2_ep2_gpipe", c.schedule = "gpipe";
    all.push_back(c);
    c.name = "pp2_ep2_zbh1", c.schedule = "zb-h1";  // the experts' and router's weight gradients in W
    all.push_back(c);
    c.name = "pp2_ep2_allgather_zbh1_capacity", c.moe_dispatcher = "allgather", c.model = cap;
    c.model_json = io::hf_config_json(cap);
    all.push_back(c);
    c.moe_dispatcher = "alltoall";
    {  // 8 ranks: zero bubble with TP 2 + SP (gathered copies kept until W around the MoE layers)
      Case z = c;
      z.name = "pp2_tp2_sp_dp2_ep2_zbh1", z.layout.tp = 2, z.features = {"sp"};
      z.model = moe_model(4, 2), z.model_json = io::hf_config_json(z.model);
      all.push_back(z);
    }
    c.name = "pp2_ep2_zbv", c.schedule = "zb-v", c.layout.vpp = 2;
    c.model = moe_model(4, 2, true, 0.01, 4), c.model_json = io::hf_config_json(c.model);
    all.push_back(c);
    c.layout.vpp = 1, c.schedule = "1f1b";
    c.name = "pp2_ep2_allgather_interleaved", c.moe_dispatcher = "allgather", c.schedule = "interleaved";
    c.layout.vpp = 2;
    c.model = moe_model(4, 2, true, 0.01, 4), c.model_json = io::hf_config_json(c.model);
    all.push_back(c);
  }
  {  // 8 ranks: TP 2 with SP, CP 2, DP 2; EP 4 over DP x CP
    Case c = moe_case("tp2_sp_cp2_dp2_ep4", moe_model(8, 2), 2, 4, "alltoall", 1, 8, 2);
    c.layout.tp = 2, c.layout.cp = 2, c.features = {"sp"};
    all.push_back(c);
    c.name = "tp2_sp_cp2_dp2_ep4_allgather", c.moe_dispatcher = "allgather";
    all.push_back(c);
  }
  add_bf16_copies(all, {"ep2_e4k2_alltoall", "ep2_e4k2_allgather"});
  auto reuse = [](Case& c) { c.dtype = "bf16", c.features = {"reuse_fp32_param"}; };  // experts in the master too
  add_variants(all, {"bf16_ep2_e4k2_alltoall"}, "reuse_", reuse);
  add_variants(all, {"pp2_ep2"}, "reuse_bf16_", reuse);
  // The distributed optimizer: the dense buffer sharded over DP x CP, the experts' bucket
  // over expert_dp (Megatron's expert-data-parallel optimizer); with buckets, bf16, reuse.
  add_variants(all, {"ep2_e4k2_alltoall", "ep4_e8k2_allgather", "dp4_ep2", "tp2_sp_ep2", "cp2_ep2", "pp2_ep2",
                     "bf16_ep2_e4k2_alltoall"},
               "zero1_", [](Case& c) { c.features.push_back("distributed_optimizer"); });
  add_variants(all, {"zero1_ep2_e4k2_alltoall"}, "buckets_", [](Case& c) { c.bucket_size = 600; });
  add_variants(all, {"zero1_bf16_ep2_e4k2_alltoall"}, "reuse_", [](Case& c) { c.features.push_back("reuse_fp32_param"); });
  add_variants(all, {"zero1_ep2_e4k2_alltoall"}, "offload_", [](Case& c) { c.features.push_back("offload_optimizer"); });
  // ZeRO-2 and 3: each layer's local experts of one projection one unit over expert_dp
  // (of 1 rank where EP takes all of DP x CP), the router's gradient summed over TP under SP.
  for (int stage : {2, 3})
    add_variants(all, {"ep2_e4k2_alltoall", "ep4_e8k2_allgather", "dp4_ep2", "tp2_sp_ep2", "cp2_ep2", "pp2_ep2",
                       "bf16_ep2_e4k2_alltoall", "tp2_sp_cp2_dp2_ep4"},
                 "zero" + std::to_string(stage) + "_", [stage](Case& c) {
                   c.features.push_back("distributed_optimizer");
                   c.zero_stage = stage;
                 });
  add_variants(all, {"zero3_dp4_ep2", "zero2_tp2_sp_ep2", "pp2_ep2_zbh1", "pp2_ep2_zbv"}, "recompute_",
               [](Case& c) { c.features.push_back("recompute_full"); });
  add_variants(all, {"pp2_ep2_zbh1"}, "swap_", [](Case& c) { c.features.push_back("swap_attention"); });
  add_variants(all, {"pp2_ep2_zbh1", "pp2_ep2_zbv"}, "zero3_", [](Case& c) {  // W before the reduce-scatter
    c.features.push_back("distributed_optimizer");
    c.zero_stage = 3;
  });
  add_variants(all, {"zero2_dp4_ep2", "zero3_tp2_sp_ep2"}, "offload_", [](Case& c) { c.features.push_back("offload_optimizer"); });
  add_variants(all, {"zero3_bf16_ep2_e4k2_alltoall"}, "reuse_", [](Case& c) { c.features.push_back("reuse_fp32_param"); });
  // ZeRO-Offload: the experts' state on the host with the rest (one buffer, no sharding).
  add_variants(all, {"ep2_e4k2_alltoall", "bf16_ep2_e4k2_allgather"}, "offload_",
               [](Case& c) { c.features.push_back("offload_optimizer"); });
  return cases_of_world(all, world);
}

TEST(Moe, EveryCaseEqualsTheReferenceWithExactDispatcherBytes) {
  const auto cases = cases_for(world_size());
  ASSERT_FALSE(cases.empty());
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    harness::validate_case(c, world_size());
    const auto o = harness::run_case(c, MPI_COMM_WORLD, {});
    if (world_rank() != 0) continue;
    const auto& r = o.result;
    expect_pass(r);
    expect_exact_comm(r);  // the dispatcher rows given this run's routing counts
    bool saw_ep = false, saw_edp = false;
    for (const auto& row : r["comm"]) {
      saw_ep = saw_ep || (row["group"] == "ep" && row["op"] != "all_reduce");
      saw_edp = saw_edp || row["group"] == "expert_dp";
    }
    EXPECT_EQ(saw_ep, c.layout.ep > 1);
    EXPECT_EQ(saw_edp, c.layout.tp * c.layout.dp * c.layout.cp / c.layout.ep > 1);
    // Every category on every rank to the byte, given that rank's routing: the expert
    // parameters, gradients and optimizer state, and the routed rows' activations,
    // workspace and transfer buffers of each micro-batch.
    expect_exact_memory(r, c);
    // Routing statistics: every dispatched copy is received once; drops only with a capacity.
    const auto& moe = r["moe"];
    int64_t sent = 0, recv = 0;
    for (const auto& k : moe["ranks"]) sent += k["dispatched"].get<int64_t>(), recv += k["received"].get<int64_t>();
    EXPECT_EQ(sent, recv);
    EXPECT_EQ(moe["dropped"].get<int64_t>() > 0, c.model.moe_expert_capacity_factor.has_value());
    const int64_t moe_layers = c.model.moe_layers.empty() ? c.model.num_hidden_layers : int64_t(c.model.moe_layers.size());
    const int64_t copies = c.global_batch() * c.train.seq_length * c.model.num_experts_per_tok * moe_layers;
    int64_t routed = 0;  // kept copies over the run, plus the dropped ones: every copy
    for (const auto& st : moe["steps"]) {
      const auto t = st["tokens_per_expert"].get<std::vector<int64_t>>();
      const int64_t step_copies = std::accumulate(t.begin(), t.end(), int64_t(0));
      routed += step_copies;
      EXPECT_GE(st["max_over_mean"].get<double>(), 1.0);
      const auto d = st["dispatched_per_rank"].get<std::vector<int64_t>>();
      const auto rv = st["received_per_rank"].get<std::vector<int64_t>>();
      EXPECT_EQ(int(d.size()), c.layout.world());
      EXPECT_EQ(std::accumulate(d.begin(), d.end(), int64_t(0)), step_copies);  // every rank's copies, by expert
      EXPECT_EQ(std::accumulate(rv.begin(), rv.end(), int64_t(0)), step_copies);  // each received once
    }
    EXPECT_EQ(routed + moe["dropped"].get<int64_t>(), c.train.steps * copies);
  }
}

// The two dispatchers move the same rows: the same case through each trains to the same
// parameters up to fp32 rounding (summation order of the combine differs).
TEST(Moe, TheDispatchersAgree) {
  if (world_size() != 2 && world_size() != 4) GTEST_SKIP() << "runs with 2 or 4 ranks";
  const int n = world_size();
  Case a = moe_case("agree_a2a", moe_model(8, 2), n, n, "alltoall", 1, 8, 1);
  Case b = a;
  b.moe_dispatcher = "allgather";
  const auto ra = harness::run_case(a, MPI_COMM_WORLD, {});
  const auto rb = harness::run_case(b, MPI_COMM_WORLD, {});
  ASSERT_EQ(ra.losses.size(), rb.losses.size());
  for (size_t i = 0; i < ra.losses.size(); ++i) EXPECT_NEAR(ra.losses[i], rb.losses[i], 1e-6 * std::abs(ra.losses[i]));
  if (world_rank() != 0) return;
  ASSERT_EQ(ra.params.size(), rb.params.size());
  for (size_t i = 0; i < ra.params.size(); ++i)
    for (size_t j = 0; j < ra.params[i].size(); ++j)
      ASSERT_NEAR(ra.params[i][j], rb.params[i][j], 1e-5f + 1e-5f * std::abs(ra.params[i][j])) << i << "[" << j << "]";
}

// Identity experts: dispatch, then combine the dispatched rows times their weights. With
// K = 1 and weight 1 the input comes back bit for bit; with K = 2 each token gets (w1 + w2)
// times itself. Skewed routing (every copy to expert 0) leaves the other experts empty.
static void identity_round_trip(TokenDispatcher& d, Communicator& ep, int64_t E, int64_t K, bool skewed) {
  const int64_t T = 6, H = 5;
  std::vector<float> mh(size_t(T * H)), wh(size_t(T * K));
  std::vector<int64_t> idx(size_t(T * K));
  for (int64_t i = 0; i < T * H; ++i) mh[size_t(i)] = float(ep.rank() * 100 + i) * 0.25f;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < K; ++k) {
      idx[size_t(t * K + k)] = skewed ? k : (t + k + ep.rank()) % E;
      wh[size_t(t * K + k)] = K == 1 ? 1.0f : (k == 0 ? 0.75f : 0.25f);
    }
  const Tensor m = tensor_of(mh, {T, H}, MemCategory::Activations);
  const Tensor w = tensor_of(wh, {T, K}, MemCategory::Activations);
  const RoutingPlan plan = plan_routing(idx, wh, T, E, K, std::nullopt);
  RoutingRecord rec;
  Tensor x, p;
  std::vector<int64_t> sizes;
  auto st = d.dispatch(x, p, sizes, m, w, plan, rec);
  EXPECT_EQ(std::accumulate(sizes.begin(), sizes.end(), int64_t(0)), x.rows());
  EXPECT_EQ(rec.recv_total(), x.rows());  // the receive counts cover the rows received
  if (skewed) {  // experts 0 and 1 on EP rank 0: copy k of every token to expert k
    const int64_t all = ep.size() * T;
    EXPECT_EQ(x.rows(), ep.rank() == 0 ? K * all : 0);
    if (ep.rank() == 0) EXPECT_EQ(sizes[1], K == 2 ? all : 0);  // K = 1: an expert without tokens
  }
  Tensor y = Tensor::empty({x.rows(), H}, MemCategory::Workspace);
  ops::scale_rows(y, x, p);
  Tensor f = Tensor::empty({T, H}, MemCategory::Workspace);
  d.combine(f, y, *st);
  const std::vector<float> out = host_floats(f);
  int64_t wrong = 0;  // counted, not asserted: every rank must reach the next collective
  for (int64_t i = 0; i < T * H; ++i) {
    const float want = mh[size_t(i)];
    wrong += K == 1 ? out[size_t(i)] != want : std::abs(out[size_t(i)] - want) > 1e-6f * std::abs(want);
  }
  EXPECT_EQ(wrong, 0) << "rank " << ep.rank() << ": first " << out[0] << " want " << mh[0];
}

TEST(Moe, IdentityExpertsRestoreTheInputUnderSkewedRouting) {
  Layout l;
  l.dp = world_size(), l.ep = world_size();
  ProcessGrid grid(MPI_COMM_WORLD, l);
  const int64_t E = 2 * world_size();
  for (const bool skewed : {false, true})
    for (const int64_t K : {1, 2}) {
      SCOPED_TRACE(std::string(skewed ? "skewed" : "spread") + " K=" + std::to_string(K));
      AllToAllDispatcher a2a(grid.ep());
      identity_round_trip(a2a, grid.ep(), E, K, skewed);
      AllGatherDispatcher ag(grid.ep());
      identity_round_trip(ag, grid.ep(), E, K, skewed);
    }
}

TEST(Moe, BadLayoutsAreRejectedWithOneLine) {
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
  const int n = world_size();
  if (n >= 2) {
    Case c = moe_case("e_ep", moe_model(3, 1), n, n, "alltoall");
    expect_error(c, "ep " + std::to_string(n) + " does not divide num_local_experts 3");
  }
  Case k = moe_case("k_gt_e", moe_model(2, 3), 1, 1, "alltoall");
  expect_error(k, "num_experts_per_tok 3 must be in 1..num_local_experts");
  if (n >= 2) {
    Case c = moe_case("ep_dpcp", moe_model(4, 2), 1, 2, "alltoall");
    c.layout.tp = 2, c.features = {"sp"};
    if (c.layout.world() == n) expect_error(c, "ep 2 does not divide dp*cp = 1");
  }
  auto cf = moe_model(4, 2);
  cf.moe_expert_capacity_factor = 0.0;
  expect_error(moe_case("cf0", cf, 1, 1, "alltoall"), "moe_expert_capacity_factor must be > 0, got 0");
  cf.moe_expert_capacity_factor = -1.0;
  expect_error(moe_case("cf-1", cf, 1, 1, "alltoall"), "moe_expert_capacity_factor must be > 0, got -1");
  expect_error(moe_case("dispatcher", moe_model(4, 2), 1, 1, "teleport"), "unknown moe_dispatcher 'teleport'");
  if (n >= 2) {
    Case c = moe_case("tp_no_sp", moe_model(4, 2), 1, 1, "alltoall");
    c.layout.tp = 2;
    if (c.layout.world() == n) expect_error(c, "MoE with tp 2 needs sequence parallelism");
    Case d = moe_case("dense_ep", ref::ModelConfig::dense(16, 4, 2, 24, 32, 2), n, n, "alltoall");
    expect_error(d, "needs an MoE model");
  }
}

}  // namespace pb::test
