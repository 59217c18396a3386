/* The memory techniques' registry entries (see memory_techniques.h). */
#include "optimized/train/memory_techniques.h"

#include <algorithm>
#include <set>

#include "optimized/core/tensor.h"
#include "optimized/memory/swap_attention.h"
#include "optimized/model/attention_block.h"
#include "optimized/model/dist_optimizer.h"
#include "optimized/model/recompute.h"
#include "optimized/model/zero_grads.h"
#include "optimized/model/zero_params.h"
#include "optimized/parallel/process_grid.h"
#include "optimized/parallel/tp_linear.h"
#include "optimized/model/strategies.h"
#include "optimized/parallel/moe_routing.h"
#include "optimized/parallel/pp_placement.h"
#include "optimized/train/pp_schedule.h"
#include "reference/common/error.h"

namespace pb {


// --- reuse_fp32_param: MindSpeed's reuse-fp32-param (the parameter storage) ---
void reuse_require(const CaseSpec& c) {
  PB_REQUIRE(c.features.bf16, "invalid case: reuse_fp32_param needs dtype bf16 (the fp32 master holds the bf16 "
                              "weights and their residuals)");
}
void reuse_terms(const CaseSpec&, const Dims& d, Terms& t) {
  if (d.zero)  // the range's master: its bf16 weights and a 2-byte residual, not 4 bytes
    t.memory[MemCategory::Optimizer] -= 2 * d.shard;
  else  // the bf16 weights are the second half of the master's bytes: no parameter buffer
        // of their own (optimizer_terms counts the master): 16 bytes per parameter, not 18
    t.memory[MemCategory::Params] -= d.e * d.params_local;
}

// --- distributed_optimizer: ZeRO-1, or ZeRO-2 (case key zero_stage) ---
void zero1_require(const CaseSpec& c) {
  const int stage = c.features.zero_stage;
  PB_REQUIRE(stage >= 1 && stage <= 3, "invalid case: unknown zero_stage ", stage, " (1, 2, 3)");
  PB_REQUIRE(c.features.bucket_size >= 0, "invalid case: bucket_size ", c.features.bucket_size, " (elements, >= 0)");
  PB_REQUIRE(c.features.bucket_size == 0 || stage == 1, "invalid case: bucket_size with zero_stage ", stage,
             " (stages 2 and 3 shard every parameter on its own)");
}

void zero_install(const CaseSpec& c, Strategies& s) {
  if (c.features.zero_stage < 2) return;
  s.block_grads = [](DistParams& params, ProcessGrid& grid, TpLinear& tp) -> std::unique_ptr<BlockGrads> {
    if (!params.per_param_shards()) return std::make_unique<WholeGrads>();  // dp x cp = 1: nothing to shard
    Communicator& shards = grid.layout().cp > 1 ? grid.dp_cp() : grid.dp();
    return std::make_unique<ShardedGrads>(params, shards, grid.expert_dp(), grid.tp(), tp.replicated_grads_partial());
  };
  if (c.features.zero_stage < 3) return;
  s.params = [](DistParams& params, ProcessGrid& grid) -> std::unique_ptr<ParamProvider> {
    if (!params.params_sharded()) return std::make_unique<ResidentParams>();
    return std::make_unique<GatheredParams>(params, grid.layout().cp > 1 ? grid.dp_cp() : grid.dp(), grid.expert_dp());
  };
}

// --- offload_optimizer: ZeRO-Offload (dist_params.h, dist_optimizer.h offload_terms) ---
void offload_require(const CaseSpec& c) {
  PB_REQUIRE(!c.features.reuse_fp32_param, "invalid case: offload_optimizer with reuse_fp32_param (the master is in "
                                           "host memory: no device bytes to share with the weights)");
}
void offload_entry_terms(const CaseSpec&, const Dims& d, Terms& t) { offload_terms(d, t); }

// --- recompute: full and selective ---
namespace {
// A forward run again inside backward: every forward-phase call of `once` once more, in the
// backward phase.
void forward_again(const Terms& once, Terms& t) {
  for (const CommTerm& c : once.comm)
    if (c.phase == Phase::Forward) t.comm.push_back({c.group, c.op, Phase::Backward, c.calls, c.bytes_per_call, c.group_size});
}

void one_granularity(const CaseSpec& c) {
  PB_REQUIRE(!(c.features.recompute_full && c.features.recompute_selective),
             "invalid case: recompute_full and recompute_selective together (one recompute granularity)");
}
}  // namespace

// The layers of each pipeline stage (one stage without PP).
static std::vector<int64_t> stage_layer_counts(const CaseSpec& c) {
  const pp::Placement pl = placement_for(c);
  std::vector<int64_t> n;
  for (int s = 0; s < pl.stages(); ++s) {
    const auto [l0, l1] = pl.layers(c.model.num_hidden_layers, s);
    n.push_back(l1 - l0);
  }
  return n;
}

void recompute_full_require(const CaseSpec& c) {
  one_granularity(c);
  const std::string& m = c.features.recompute_method;
  const int64_t n = c.features.recompute_num_layers;
  PB_REQUIRE(m == "uniform" || m == "block", "invalid case: unknown recompute_method '", m, "' (uniform, block)");
  PB_REQUIRE(n >= 1, "invalid case: recompute_num_layers ", n, " (at least 1)");
  for (const int64_t per : stage_layer_counts(c)) {  // each stage's layers
    PB_REQUIRE(n <= per, "invalid case: recompute_num_layers ", n, " is more than the ", per,
               " layers a pipeline stage holds");
    PB_REQUIRE(m != "uniform" || per % n == 0, "invalid case: recompute_method uniform needs recompute_num_layers ", n,
               " to divide the ", per, " layers of a pipeline stage");
  }
}

void recompute_full_install(const CaseSpec& c, Strategies& s) {
  const std::string m = c.features.recompute_method;
  const int64_t n = c.features.recompute_num_layers;
  s.recompute_groups = [m, n](int64_t l0, int64_t l1) { return recompute_groups(m, n, l0, l1); };
}

// The layers pipeline rank d.pp_rank checkpoints (in any of its chunks).
static std::set<int64_t> recomputed_layers(const CaseSpec& c, const Dims& d) {
  std::set<int64_t> again;
  if (!c.features.recompute_full) return again;
  const pp::Placement pl = placement_for(c);
  for (int ch = 0; ch < pl.v; ++ch) {
    const auto [l0, l1] = pl.layers(d.L, pl.stage(d.pp_rank, ch));
    for (const auto& [g0, g1] : recompute_groups(c.features.recompute_method, c.features.recompute_num_layers, l0, l1))
      for (int64_t l = g0; l < g1; ++l) again.insert(l);
  }
  return again;
}

void recompute_full_terms(const CaseSpec& c, const Dims& d, Terms& t) {
  // The recomputed layers of this pipeline rank: their forward's communication again.
  const std::set<int64_t> again = recomputed_layers(c, d);
  Dims r = d;  // those layers alone: no embedding, head or pipeline transfers
  r.Lr = int64_t(again.size());
  r.Lmoe = std::count_if(again.begin(), again.end(), [&](int64_t l) { return d.E > 0 && c.model.is_moe_layer(l); });
  r.emb = r.head = 0;
  r.p = 1;
  std::erase_if(r.zero_params, [&](const Dims::ZeroParam& z) { return !again.count(z.layer); });  // ZeRO-3's gathers
  std::vector<RoutingRecord> routed;
  if (d.routing)
    for (const auto& rec : *d.routing)
      if (again.count(rec.layer)) routed.push_back(rec);
  r.routing = &routed;
  Features f = c.features;
  f.recompute_full = false;
  f.swap_attention = false;  // a checkpointed layer is not swapped
  const CaseSpec without{c.model, c.train, c.layout, f, c.schedule};
  forward_again(technique_terms(without, r), t);
}

void recompute_selective_require(const CaseSpec& c) { one_granularity(c); }

void recompute_selective_install(const CaseSpec&, Strategies& s) {
  auto inner = s.attention_core;
  s.attention_core = [inner](const BlockEnv& env, int64_t l) -> std::unique_ptr<AttentionCore> {
    return std::make_unique<RecomputedCore>(inner(env, l));
  };
  // Kept: o, the output projection's input (N, a D); allocated again in backward: the
  // core's saved state; its forward's transients now come inside its backward too.
  s.attention_core_recomputed = s.attention_core_saved;
  s.attention_core_saved = [](const Dims& d) { return d.e * d.N * d.a * d.D; };
  for (auto* f : {&s.attention_core_workspace, &s.attention_core_comm_buffers}) {
    auto once = *f;
    *f = [once](const Dims& d) {
      const BlockWorkspace w = once(d);
      return BlockWorkspace{w.forward, std::max(w.forward, w.backward)};
    };
  }
}

void recompute_selective_terms(const CaseSpec& c, const Dims& d, Terms& t) {
  Terms core;  // the core's own communication (context parallelism), its forward again
  strategies_for(c).attention_core_terms(d, core);
  forward_again(core, t);
}

// --- swap_attention: MindSpeed's swap attention (an activation policy) ---
void swap_attention_require(const CaseSpec& c) {
  // (A model without attention layers is refused by its config: num_hidden_layers > 0, and
  // every pipeline stage holds >= 1 layer.)
  // With full recompute the layers outside the checkpointed groups are swapped (recompute
  // method block, fewer layers than a stage holds): a checkpointed layer keeps only its input.
  const auto counts = stage_layer_counts(c);
  const int64_t per = *std::min_element(counts.begin(), counts.end());  // the smallest stage's layers
  PB_REQUIRE(!c.features.recompute_full ||
                 (c.features.recompute_method == "block" && c.features.recompute_num_layers < per),
             "invalid case: swap_attention with recompute_full checkpoints every layer (", c.features.recompute_method,
             ", recompute_num_layers ", c.features.recompute_num_layers,
             "): nothing is left to swap (recompute_method block with fewer layers than a stage's ", per, ")");
}

void swap_attention_terms(const CaseSpec& c, const Dims& d, Terms& t) {
  const int64_t attn = attention_block_saved_bytes(d) + strategies_for(c).attention_core_saved(d);
  const int64_t swapped = d.Lr - int64_t(recomputed_layers(c, d).size());
  t.call("host", CommOp::ToHost, Phase::Forward, d.mb * swapped, attn, 2);
  t.call("host", CommOp::ToDevice, Phase::Backward, d.mb * swapped, attn, 2);
}

void swap_attention_install(const CaseSpec&, Strategies& s) {
  s.activations = [] { return std::make_unique<SwapAttention>(current_device()); };
  s.swap_attention = true;
}

}  // namespace pb
