/* The technique registry (see registry.h): every entry, and the functions that read them. */
#include "optimized/train/registry.h"

#include "optimized/model/post_validation.h"

#include "optimized/model/attention_hybrid.h"
#include "optimized/model/attention_terapipe.h"
#include "optimized/model/attention_ring.h"
#include "optimized/model/attention_ulysses.h"
#include "optimized/model/dist_optimizer.h"
#include "optimized/model/mlp_moe.h"
#include "optimized/parallel/ep_allgather.h"
#include "optimized/parallel/ep_alltoall.h"
#include "optimized/parallel/ep_grads.h"
#include "optimized/parallel/cp_ring.h"
#include "optimized/parallel/cp_ulysses.h"
#include "optimized/model/strategies.h"
#include "optimized/parallel/dp_grad_sync.h"
#include "optimized/parallel/sp_linear.h"
#include "optimized/parallel/tp2d_linear.h"
#include "optimized/parallel/tp3d_strategy.h"
#include "optimized/parallel/tp_grid.h"
#include "optimized/parallel/tp_vocab.h"
#include "optimized/train/memory_techniques.h"
#include "optimized/train/overlap_techniques.h"
#include "optimized/train/pp_async.h"
#include "optimized/train/pp_partition.h"
#include "optimized/train/pp_schedule.h"
#include "optimized/train/pp_terms.h"
#include "reference/common/error.h"

namespace pb {

namespace {

using K = TechniqueKind;

// --- tp: Megatron tensor parallelism (layout degree) ---
void tp_require(const CaseSpec& c) {
  const int t = c.layout.tp;
  const auto& mc = c.model;
  PB_REQUIRE(mc.num_attention_heads % t == 0, "invalid layout: tp ", t, " does not divide num_attention_heads ",
             mc.num_attention_heads);
  PB_REQUIRE(mc.num_key_value_heads % t == 0, "invalid layout: tp ", t, " does not divide num_key_value_heads ",
             mc.num_key_value_heads);
  PB_REQUIRE(mc.intermediate_size % t == 0, "invalid layout: tp ", t, " does not divide intermediate_size ",
             mc.intermediate_size);
  PB_REQUIRE(mc.vocab_size % t == 0, "invalid layout: tp ", t, " does not divide vocab_size ", mc.vocab_size);
}
void tp_terms(const CaseSpec& c, const Dims& d, Terms& t) {
  strategies_for(c).tp_linear_terms(d, t);  // all-reduce, or what SP installed
  tp_vocab_terms(d, t);
}

// --- tp2d: 2D / 2.5D tensor parallelism (case keys tp_kind, tp_depth; parallel/tp2d_linear.h) ---
bool tp_line(const CaseSpec& c) { return c.features.tp_kind == "1d"; }
TpGrid tp_grid_of(const CaseSpec& c) { return TpGrid::of(c.features.tp_kind, c.layout.tp, c.features.tp_depth); }
// What a grid's sizes need (q divides the widths; 3D: the matrices' output rows split in q^2)
// and what it does not compose with in this build.
void tp_grid_require(const CaseSpec& c, const TpGrid& g) {
  const auto& mc = c.model;
  const std::string kind = "tp_kind " + c.features.tp_kind + " (q = " + std::to_string(g.q) + ")";
  for (const auto& [what, n] : {std::pair<const char*, int64_t>{"hidden_size", mc.hidden_size},
                                {"num_attention_heads", mc.num_attention_heads},
                                {"num_key_value_heads", mc.num_key_value_heads},
                                {"intermediate_size", mc.intermediate_size}, {"vocab_size", mc.vocab_size}})
    PB_REQUIRE(n % g.q == 0, "invalid layout: ", kind, " does not divide ", what, " ", n);
  if (g.kind == TpKind::ThreeD) {  // each weight's output rows in q^2 blocks
    const int64_t q2 = int64_t(g.q) * g.q, D = mc.head_dim();
    for (const auto& [what, n] : {std::pair<const char*, int64_t>{"hidden_size", mc.hidden_size},
                                  {"num_attention_heads x head_dim", mc.num_attention_heads * D},
                                  {"num_key_value_heads x head_dim", mc.num_key_value_heads * D},
                                  {"intermediate_size", mc.intermediate_size}, {"vocab_size", mc.vocab_size}})
      PB_REQUIRE(n % q2 == 0, "invalid layout: ", kind, " splits each weight's output rows in q^2 = ", q2,
                 " blocks: it does not divide ", what, " ", n);
  }
  PB_REQUIRE(c.train.micro_batch_size % g.row_blocks() == 0, "invalid layout: ", kind, " splits each micro-batch's ",
             "sequences in ", g.row_blocks(), " blocks; micro_batch_size ", c.train.micro_batch_size,
             " does not divide");
  const Features& f = c.features;
  PB_REQUIRE(!f.sp && !f.mc2 && c.layout.cp == 1 && c.model.num_local_experts == 0,
             "invalid layout: ", kind, " is not available with sp, mc2, cp > 1 or an MoE model");
  PB_REQUIRE(!f.distributed_optimizer && !f.offload_optimizer && !f.overlap_grad_reduce && !f.overlap_param_gather &&
                 f.bucket_size == 0 && !f.post_validation && !f.reuse_fp32_param,
             "invalid case: ", kind, " is not available with distributed_optimizer, offload_optimizer, "
             "overlap_grad_reduce, overlap_param_gather, bucket_size, post_validation or reuse_fp32_param in this "
             "build");
  PB_REQUIRE(!f.recompute_full && !f.recompute_selective && !f.swap_attention && !f.no_gradient_accumulation_fusion,
             "invalid case: ", kind, " is not available with recompute_full, recompute_selective, swap_attention or "
             "no_gradient_accumulation_fusion in this build");
  if (c.layout.pp > 1) {
    const pp::Schedule s = schedule_for(c);
    PB_REQUIRE(!s.split_backward && !s.bidir && s.update_every == 0 && s.slices == 0, "invalid case: ", kind,
               " reduces the weight gradients inside its linears' backward: schedules gpipe, 1f1b and interleaved "
               "only, not ", c.schedule);
  }
}
void tp_nd_require(const CaseSpec& c) { tp_grid_require(c, tp_grid_of(c)); }  // (a bad rank count: one line)
// A grid strategy's linears, terms and block workspace (its own files) behind the TP seam.
// (Its communication is its registry entry's terms; the rows outside the linears are the
// defaults' N: the rank's own block.)
void install_grid(Strategies& s, std::unique_ptr<TpLinear> (*make)(ProcessGrid&, GradSink&),
                  const GridBlockBytes& bytes) {
  s.tp_linear = make;
  s.attention_workspace = bytes.attention, s.mlp_workspace = bytes.mlp, s.embedding_workspace = bytes.embedding;
  s.head_workspace = bytes.head, s.tp_comm_buffers = bytes.comm_buffers;
}
std::unique_ptr<TpLinear> make_summa(ProcessGrid& g, GradSink& sink) {
  return std::make_unique<TpSumma>(g.tp(), sink, *g.tp_row(), *g.tp_col(), g.tp_grid());
}
std::unique_ptr<TpLinear> make_cube(ProcessGrid& g, GradSink& sink) {
  return std::make_unique<TpCube>(g.tp(), sink, *g.tp_row(), *g.tp_col(), *g.tp_depth(), g.tp_grid());
}
void tp2d_install(const CaseSpec&, Strategies& s) {
  install_grid(s, make_summa, tp2d_block_bytes);
}
// --- tp3d: 3D tensor parallelism (case key tp_kind 3d; parallel/tp3d_strategy.h) ---
void tp3d_install(const CaseSpec&, Strategies& s) {
  install_grid(s, make_cube, tp3d_block_bytes);
}
void tp3d_entry_terms(const CaseSpec& c, const Dims& d, Terms& t) { tp3d_terms(d, tp_grid_of(c).q, t); }

void tp2d_entry_terms(const CaseSpec& c, const Dims& d, Terms& t) {
  tp2d_terms(d, tp_grid_of(c).q, t);
  if (c.layout.dp == 1) dp_terms(d, t);  // 2.5D: the gradients are averaged over the depth (with dp > 1: dp's entry)
}

// --- sp: Megatron sequence parallelism (feature; a TP-linear strategy) ---
void sp_require(const CaseSpec& c) {
  PB_REQUIRE(c.layout.tp > 1, "invalid layout: sequence parallelism needs tp > 1");
  PB_REQUIRE(c.train.seq_length % c.layout.tp == 0, "invalid layout: tp ", c.layout.tp, " does not divide seq_length ",
             c.train.seq_length, " (sequence parallelism)");
}
void sp_install(const CaseSpec&, Strategies& s) {
  s.tp_linear = [](ProcessGrid& grid, GradSink& sink) {
    return std::make_unique<TpSequenceParallel>(grid.tp(), sink);
  };
  s.tp_linear_terms = [](const Dims& d, Terms& t) { sp_terms(d, t); };
  s.tp_outer_rows = [](int64_t N, int64_t t) { return N / t; };
}

// --- pp: pipeline parallelism (layout degree) and its schedules ---
void pp_require(const CaseSpec& c) {
  try {
    schedule_for(c);
  } catch (const Error& e) {
    throw Error(std::string("schedule: ") + e.what());
  }
}
void pp_entry_terms(const CaseSpec& c, const Dims& d, Terms& t) { pp_terms(schedule_for(c), d, t); }

// --- post_validation: the optimizer step validated after it ran (model/post_validation.h) ---
void post_validation_require(const CaseSpec& c) {
  const Features& f = c.features;
  PB_REQUIRE(c.layout.pp > 1, "invalid case: post_validation passes the optimizer's global state along the pipeline "
             "(needs pp > 1)");
  PB_REQUIRE(!f.distributed_optimizer && !f.offload_optimizer && !f.reuse_fp32_param,
             "invalid case: post_validation keeps and restores the rank's whole optimizer state; not with "
             "distributed_optimizer (any zero_stage), offload_optimizer or reuse_fp32_param");
}
void post_validation_entry_terms(const CaseSpec&, const Dims& d, Terms& t) { post_validation_terms(d, t); }

void dp_entry_terms(const CaseSpec&, const Dims& d, Terms& t) { dp_terms(d, t); }

// --- cp: context parallelism (layout degree; case keys cp_kind, cp_balance) ---
void cp_require(const CaseSpec& c) {
  const int64_t cp = c.layout.cp, S = c.train.seq_length, t = c.layout.tp;
  const std::string& kind = c.features.cp_kind;
  PB_REQUIRE(kind == "ring" || kind == "ulysses" || kind == "hybrid", "invalid layout: unknown CP kind '", kind,
             "' (ring, ulysses, hybrid)");
  if (kind == "hybrid") {
    const int64_t u = c.features.cp_ulysses, a = c.model.num_attention_heads / t, g = c.model.num_key_value_heads / t;
    PB_REQUIRE(u > 1 && u < cp && cp % u == 0, "invalid layout: hybrid CP needs cp_ulysses u with 1 < u < cp ", cp,
               " and u dividing cp, got ", u);
    PB_REQUIRE(S % (2 * cp) == 0, "invalid layout: hybrid CP over cp ", cp, " needs seq_length divisible by 2cp = ",
               2 * cp, ", got ", S);
    PB_REQUIRE(a % u == 0, "invalid layout: hybrid CP needs num_attention_heads ", c.model.num_attention_heads,
               " divisible by tp x u = ", t * u);
    PB_REQUIRE(ulysses_kv_heads(g, u) > 0, "invalid layout: hybrid CP needs u ", u, " and the kv heads per tp rank ",
               g, " to divide one another");
  } else if (kind == "ring") {
    PB_REQUIRE(S % (2 * cp) == 0, "invalid layout: ring attention over cp ", cp,
               " needs seq_length divisible by 2cp = ", 2 * cp, ", got ", S);
  } else {
    const int64_t a = c.model.num_attention_heads / t, g = c.model.num_key_value_heads / t;
    PB_REQUIRE(S % cp == 0, "invalid layout: Ulysses over cp ", cp, " needs seq_length divisible by cp, got ", S);
    PB_REQUIRE(a % cp == 0, "invalid layout: Ulysses needs num_attention_heads ", c.model.num_attention_heads,
               " divisible by tp x cp = ", t * cp);
    PB_REQUIRE(ulysses_kv_heads(g, cp) > 0, "invalid layout: Ulysses needs cp ", cp, " and the kv heads per tp rank ",
               g, " to divide one another");
  }
  PB_REQUIRE(!c.features.sp || (S / cp) % t == 0, "invalid layout: sequence parallelism over tp ", t,
             " needs seq_length / cp = ", S / cp, " divisible by tp");
}
void cp_install(const CaseSpec& c, Strategies& s) {
  if (c.features.cp_kind == "hybrid") {
    const int64_t u = c.features.cp_ulysses;
    s.attention_core = [](const BlockEnv& env, int64_t) {
      return std::make_unique<HybridAttention>(env, *env.cp_ulysses, *env.cp_ring);
    };
    s.attention_core_saved = [u](const Dims& d) { return ulysses_attention_saved_bytes(d, u); };
    s.attention_core_workspace = [u](const Dims& d) { return hybrid_attention_workspace(d, u); };
    s.attention_core_comm_buffers = [u](const Dims& d) { return hybrid_attention_comm_buffers(d, u); };
    s.attention_core_terms = [u](const Dims& d, Terms& t) {
      cp_ulysses_terms(d, t, "cp_ulysses", u);
      cp_ring_terms(hybrid_ring_dims(d, u), t, "cp_ring");
    };
    return;
  }
  if (c.features.cp_kind == "ulysses") {
    s.attention_core = [](const BlockEnv& env, int64_t) { return std::make_unique<UlyssesAttention>(env, *env.cp); };
    s.attention_core_saved = [](const Dims& d) { return ulysses_attention_saved_bytes(d, d.c); };
    s.attention_core_workspace = [](const Dims& d) { return ulysses_attention_workspace(d, d.c); };
    s.attention_core_comm_buffers = [](const Dims& d) { return ulysses_attention_comm_buffers(d, d.c); };
    s.attention_core_terms = [](const Dims& d, Terms& t) { cp_ulysses_terms(d, t); };
    return;
  }
  s.attention_core = [](const BlockEnv& env, int64_t) {
    return std::make_unique<RingAttention>(env, *env.cp, env.cp_contiguous);
  };
  s.attention_core_workspace = ring_attention_workspace;
  s.attention_core_comm_buffers = ring_attention_comm_buffers;
  s.attention_core_terms = [](const Dims& d, Terms& t) { cp_ring_terms(d, t); };
}
void cp_entry_terms(const CaseSpec& c, const Dims& d, Terms& t) {
  strategies_for(c).attention_core_terms(d, t);
  if (c.layout.dp == 1) dp_terms(d, t);  // the gradients are averaged over DP x CP (with dp > 1: dp's entry)
}

// --- ep: MoE and expert parallelism (a model with experts; layout ep; case key
//     moe_dispatcher) ---
// --- recompute_in_advance: its schedule here (names are compared in the registry) ---
void recompute_ahead_require(const CaseSpec& c) {
  PB_REQUIRE(c.layout.pp > 1 && c.schedule == "interleaved", "invalid case: recompute_in_advance runs in the "
             "interleaved pipeline schedule's waits for gradients (pp > 1, vpp > 1, schedule interleaved)");
  recompute_in_advance_require(c);
}

bool moe_model(const CaseSpec& c) { return c.model.num_local_experts > 0; }
void ep_require(const CaseSpec& c) {
  const auto& l = c.layout;
  const int64_t E = c.model.num_local_experts;
  PB_REQUIRE(E > 0, "invalid layout: ep ", l.ep, " needs an MoE model (num_local_experts > 0)");
  PB_REQUIRE(E % l.ep == 0, "invalid layout: ep ", l.ep, " does not divide num_local_experts ", E);
  PB_REQUIRE((l.dp * l.cp) % l.ep == 0, "invalid layout: ep ", l.ep, " does not divide dp*cp = ", l.dp * l.cp,
             " (expert-parallel groups are carved from DP x CP)");
  const std::string& k = c.features.moe_dispatcher;
  PB_REQUIRE(k == "alltoall" || k == "allgather", "invalid layout: unknown moe_dispatcher '", k,
             "' (alltoall, allgather)");
  PB_REQUIRE(l.tp == 1 || c.features.sp, "invalid layout: MoE with tp ", l.tp,
             " needs sequence parallelism (features: sp), as in Megatron-LM");
}
void ep_install(const CaseSpec& c, Strategies& s) {
  const bool allgather = c.features.moe_dispatcher == "allgather";
  s.mlp = [allgather](const BlockEnv& env, int64_t layer) -> std::unique_ptr<Mlp> {
    if (!env.mc.is_moe_layer(layer)) return std::make_unique<DenseSwiGlu>(env, layer);
    std::unique_ptr<TokenDispatcher> d;
    if (allgather)
      d = std::make_unique<AllGatherDispatcher>(*env.ep);
    else
      d = std::make_unique<AllToAllDispatcher>(*env.ep);
    return std::make_unique<MoeMlp>(env, layer, std::move(d));
  };
}
void ep_entry_terms(const CaseSpec& c, const Dims& d, Terms& t) {
  if (d.Lmoe == 0) return;
  const std::vector<RoutingRecord> none;
  const auto& records = d.routing ? *d.routing : none;
  if (c.features.moe_dispatcher == "allgather")
    ep_allgather_terms(d, records, t);
  else
    ep_alltoall_terms(d, records, t);
  ep_grad_terms(d, t);
  if (c.model.router_aux_loss_coef > 0) {  // the counts over the sequence's ranks; the loss over all
    t.call("tp_cp", CommOp::AllReduce, Phase::Forward, int64_t(records.size()), Dims::fp * d.E, d.t * d.c);
    t.call("world", CommOp::AllReduce, Phase::Optimizer, d.steps, 8, d.d * d.t * d.c * d.p);
  }
}


Technique schedule(const char* name, const char* summary, void (*require)(const CaseSpec&) = nullptr) {
  return {name, K::Schedule, summary, true, false, nullptr, nullptr, require, nullptr, nullptr};
}

// Two pipelines over the ranks (bidirectional placement): the copies' gradients are summed
// over pp_mirror before the step and the norm counts each parameter once, in the optimizer's
// whole-buffer path; the paths that reduce or shard the gradients elsewhere are refused.
void bidir_require(const CaseSpec& c);
// Chimera's pipelines (model replicas, case key chimera_pipelines): pairs of down and up.
void chimera_require(const CaseSpec& c) {
  const int n = c.features.chimera_pipelines;
  PB_REQUIRE(n % 2 == 0 && n >= 2, "invalid case: chimera_pipelines ", n, ": Chimera pairs a down and an up "
             "pipeline, so the count of pipelines (model replicas) must be even");
  PB_REQUIRE(n == 2, "invalid case: chimera_pipelines ", n, ": more than one pair of pipelines (f > 1) is not "
             "available in this build");
  bidir_require(c);
}
// The asynchronous kinds (train/pp_async.h): a stage updates its own fp32 weights in place
// during the schedule, stashing older versions whole.
void async_require(const CaseSpec& c) {
  const Features& f = c.features;
  PB_REQUIRE(!f.bf16, "invalid case: schedule ", c.schedule, " stashes fp32 weight versions; dtype bf16 is not "
             "available with it in this build");
  PB_REQUIRE(!f.distributed_optimizer && !f.offload_optimizer && !f.overlap_grad_reduce && !f.overlap_param_gather &&
                 !f.post_validation,
             "invalid case: schedule ", c.schedule, " updates each stage in the schedule with its whole weights and "
             "gradients; not with distributed_optimizer, offload_optimizer, overlap_grad_reduce, overlap_param_gather "
             "or post_validation");
  PB_REQUIRE(c.model.num_local_experts == 0, "invalid case: schedule ", c.schedule, " with an MoE model is not "
             "available in this build");
  PB_REQUIRE(c.train.inject_nan_step < 0, "invalid case: --inject-nan with schedule ", c.schedule, " (each stage "
             "updates in the schedule; the hook acts at the step's end)");
}
// TeraPipe (model/attention_terapipe.h): token slices through the pipeline, the cross-slice
// K/V state in the attention core.
void terapipe_require(const CaseSpec& c) {
  const Features& f = c.features;
  const int64_t K = std::max(1, f.terapipe_slices), S = c.train.seq_length;
  PB_REQUIRE(S % K == 0, "invalid case: terapipe_slices ", K, " does not divide seq_length ", S,
             " (every slice has S/K tokens)");
  PB_REQUIRE(c.layout.cp == 1, "invalid case: schedule terapipe slices the sequence itself; not with cp > 1");
  PB_REQUIRE(!f.sp || c.train.micro_batch_size * (S / K) % c.layout.tp == 0, "invalid case: terapipe's slices of ",
             c.train.micro_batch_size * (S / K), " token rows do not split over tp ", c.layout.tp, " under sp");
  PB_REQUIRE(!f.bf16, "invalid case: schedule terapipe accumulates the slices' key and value gradients in the model "
             "dtype; dtype bf16 is not available with it in this build");
  PB_REQUIRE(!f.recompute_full && !f.recompute_selective && !f.swap_attention && !f.overlap_grad_reduce &&
                 !f.overlap_param_gather,
             "invalid case: schedule terapipe keeps each layer's keys and values across the slices; not with "
             "recompute_full, recompute_selective, swap_attention, overlap_grad_reduce or overlap_param_gather");
  PB_REQUIRE(c.model.num_local_experts == 0, "invalid case: schedule terapipe with an MoE model is not available in "
             "this build");
}
void terapipe_install(const CaseSpec&, Strategies& s) {
  s.attention_core = [](const BlockEnv& env, int64_t l) { return std::make_unique<TeraPipeAttention>(env, l); };
  s.attention_core_workspace = terapipe_workspace;  // (saved: o and the LSE, as the local core's)
}

void async_entry_terms(const CaseSpec& c, const Dims& d, Terms& t) { async_terms(schedule_for(c), d, t); }

void bidir_require(const CaseSpec& c) {
  const Features& f = c.features;
  PB_REQUIRE(!f.distributed_optimizer && !f.overlap_grad_reduce && !f.post_validation,
             "invalid case: schedule ", c.schedule, " sums its two model copies' gradients in the optimizer step; "
             "not with distributed_optimizer, overlap_grad_reduce or post_validation");
  PB_REQUIRE(c.model.num_local_experts == 0, "invalid case: schedule ", c.schedule, " with an MoE model is not "
             "available in this build (the routing model assumes every layer sees every micro-batch)");
}

}  // namespace

const std::vector<Technique>& techniques() {
  static const std::vector<Technique> all = {
      {"dp", K::Degree, "data parallelism: layout dp; gradient all-reduce and averaging", true, false,
       [](const CaseSpec& c) { return c.layout.dp > 1; }, nullptr, nullptr, nullptr, dp_entry_terms},
      {"tp", K::Degree, "Megatron tensor parallelism: layout tp; column/row linears, vocab-parallel (arXiv 1909.08053)",
       true, false, [](const CaseSpec& c) { return c.layout.tp > 1 && tp_line(c); }, nullptr, tp_require, nullptr,
       tp_terms},
      {"tp2d", K::Degree, "2D / 2.5D tensor parallelism: case key tp_kind 2d (q x q ranks, SUMMA linears; Optimus, "
       "arXiv 2104.05343) or 2.5d (tp_depth d layers of q x q sharing the batch; Tesseract, arXiv 2105.14500)", true,
       false, [](const CaseSpec& c) { return (!tp_line(c) || c.features.tp_depth != 1) && c.features.tp_kind != "3d"; },
       nullptr, tp_nd_require,
       tp2d_install, tp2d_entry_terms},
      {"tp3d", K::Degree, "3D tensor parallelism: case key tp_kind 3d (q x q x q ranks, linears gathering over two "
       "directions and reduce-scattering over the third; Bian et al., arXiv 2105.14450)", true, false,
       [](const CaseSpec& c) { return c.features.tp_kind == "3d"; }, nullptr, tp_nd_require, tp3d_install,
       tp3d_entry_terms},
      {"sp", K::Feature, "Megatron sequence parallelism: norms and residuals on S/TP shards (arXiv 2205.05198)", true,
       false, [](const CaseSpec& c) { return c.features.sp; }, [](Features& f) { f.sp = true; }, sp_require,
       sp_install, nullptr},
      {"pp", K::Degree, "pipeline parallelism: layout pp (vpp chunks per rank); case key \"schedule\"", true, false,
       [](const CaseSpec& c) { return c.layout.pp > 1; }, nullptr, pp_require, nullptr, pp_entry_terms},
      schedule("gpipe", "GPipe: all forwards, then all backwards"),
      schedule("1f1b", "1F1B: warm-up forwards, one forward one backward, cool-down (arXiv 2104.04473)"),
      schedule("interleaved", "interleaved 1F1B over vpp chunks per rank (Megatron, arXiv 2104.04473)"),
      schedule("zb-h1", "zero bubble H1: backward split into B and W, W fills bubbles (arXiv 2401.10241)"),
      schedule("zb-h2", "zero bubble H2: deeper warm-up (<= 2p-1 in flight), no gap inside a rank's span "
                        "(arXiv 2401.10241); with post_validation"),
      schedule("zb-v", "zero bubble V: two chunks per rank in a V, split backward (arXiv 2401.10241)"),
      schedule("dualpipe", "DeepSeek's DualPipe: two pipelines in opposite directions over the ranks (two copies of "
                           "the model, gradients summed), p and m even, m >= 2p, forward-backward pairs, B/W split "
                           "(DeepSeek-V3, arXiv 2412.19437)", bidir_require),
      schedule("chimera", "Chimera: two pipelines in opposite directions over the ranks (two model copies, "
                          "gradients summed), p even, m a multiple of p, waves of p/2 micro-batches per pipeline "
                          "(SC'21, arXiv 2107.06925)", chimera_require),
      schedule("dualpipev", "DeepSeek's DualPipeV: the V of zb-v, m >= 2p, forward-backward pairs, B/W split "
                            "(DeepSeek-V3, arXiv 2412.19437)"),
      {"pipedream", K::Schedule, "PipeDream: asynchronous 1F1B, each stage updates after every micro-batch, "
       "weight stashing (a backward on its forward's version; up to p-r versions on rank r) (SOSP'19, arXiv "
       "1806.03377)", true, false, nullptr, nullptr, async_require, nullptr, async_entry_terms},
      {"pipedream-2bw", K::Schedule, "PipeDream-2BW: asynchronous 1F1B, a new weight version every "
       "pp_update_every micro-batches (default p, >= p-1), two versions at most (ICML'21, arXiv 2006.09503)", true,
       false, nullptr, nullptr, async_require, nullptr, async_entry_terms},
      {"terapipe", K::Schedule, "TeraPipe: each sequence in terapipe_slices token slices through the pipeline "
       "(GPipe's order over the units, backward in reverse slice order), each layer's keys and values of the "
       "earlier slices kept, their gradients accumulated (ICML'21, arXiv 2102.07988)", true, false, nullptr, nullptr,
       terapipe_require, terapipe_install, nullptr},
      {"post_validation", K::Feature,
       "the optimizer step post-validated (zero bubble, arXiv 2401.10241 Sec. 4; for zb-h2): each stage steps on "
       "the gradient norm summed along the pipeline so far, then rolls back (and redoes the step clipped) when the "
       "full norm, sent back, needs clipping or is not finite",
       true, false, [](const CaseSpec& c) { return c.features.post_validation; },
       [](Features& f) { f.post_validation = true; }, post_validation_require, nullptr, post_validation_entry_terms},
      {"cp", K::Degree,
       "context parallelism: layout cp; case key cp_kind: ring (load-balanced, arXiv 2310.01889; cp_balance zigzag | "
       "contiguous), ulysses (all-to-all, arXiv 2309.14509) or hybrid (USP, arXiv 2405.07719; cp_ulysses u)",
       true, false, [](const CaseSpec& c) { return c.layout.cp > 1; }, nullptr, cp_require, cp_install, cp_entry_terms},
      {"ep", K::Degree,
       "MoE and expert parallelism: layout ep (E/ep experts per rank, groups from DP x CP); case key "
       "moe_dispatcher: alltoall (GShard, arXiv 2006.16668) or allgather (Megatron-LM)",
       true, false, [](const CaseSpec& c) { return c.layout.ep > 1 || moe_model(c); }, nullptr, ep_require,
       ep_install, ep_entry_terms},
      {"distributed_optimizer", K::Feature,
       "ZeRO (arXiv 1910.02054), case key zero_stage: 1 (Megatron's distributed optimizer: fp32 master and Adam state "
       "sharded over DP x CP; reduce-scatter, step on the shard, all-gather), 2 (gradients sharded too: each "
       "parameter reduce-scattered after its block's backward) or 3 (weights too: all-gathered where used, prefetched)",
       true, false, [](const CaseSpec& c) { return c.features.distributed_optimizer; },
       [](Features& f) { f.distributed_optimizer = true; }, zero1_require, zero_install, nullptr},
      {"offload_optimizer", K::Feature,
       "ZeRO-Offload (arXiv 2101.06840): fp32 master, Adam state and the step in host memory; the reduced gradients "
       "go to the host and the new weights back every step (with distributed_optimizer: the rank's range)",
       true, true, [](const CaseSpec& c) { return c.features.offload_optimizer; },
       [](Features& f) { f.offload_optimizer = true; }, offload_require, nullptr, offload_entry_terms},
      {"recompute_full", K::Feature,
       "full activation recomputation (Megatron, arXiv 2205.05198): checkpointed layer groups keep their input and run "
       "their forward again in backward; case keys recompute_method uniform | block, recompute_num_layers N",
       true, true, [](const CaseSpec& c) { return c.features.recompute_full; },
       [](Features& f) { f.recompute_full = true; }, recompute_full_require, recompute_full_install,
       recompute_full_terms},
      {"recompute_selective", K::Feature,
       "selective recomputation (arXiv 2205.05198): the attention core keeps nothing and runs again in backward", true,
       true, [](const CaseSpec& c) { return c.features.recompute_selective; },
       [](Features& f) { f.recompute_selective = true; }, recompute_selective_require, recompute_selective_install,
       recompute_selective_terms},
      {"swap_attention", K::Feature,
       "MindSpeed swap attention: the attention's saved tensors in host memory between the layer's forward and its "
       "backward (side-stream copies, prefetched when the layer's backward begins)",
       true, true, [](const CaseSpec& c) { return c.features.swap_attention; },
       [](Features& f) { f.swap_attention = true; }, swap_attention_require, swap_attention_install,
       swap_attention_terms},
      {"reuse_fp32_param", K::Feature,
       "MindSpeed reuse-fp32-param (bf16): the fp32 master holds the bf16 weights and 16-bit residuals, 16 bytes/param",
       true, true, [](const CaseSpec& c) { return c.features.reuse_fp32_param; },
       [](Features& f) { f.reuse_fp32_param = true; }, reuse_require, nullptr, reuse_terms},
      {"overlap_grad_reduce", K::Feature,
       "gradient reduction overlapped with the backward (Megatron's overlap_grad_reduce): each bucket (case key "
       "bucket_size) all-reduced on the communicator's thread as soon as its gradients are complete",
       true, false, [](const CaseSpec& c) { return c.features.overlap_grad_reduce; },
       [](Features& f) { f.overlap_grad_reduce = true; }, overlap_grad_reduce_require, overlap_grad_reduce_install,
       nullptr},
      {"overlap_param_gather", K::Feature,
       "parameter all-gather overlapped with the next forward (Megatron's overlap_param_gather, with "
       "distributed_optimizer): each bucket's gather of the updated weights waited for where a block first uses it",
       true, false, [](const CaseSpec& c) { return c.features.overlap_param_gather; },
       [](Features& f) { f.overlap_param_gather = true; }, overlap_param_gather_require, overlap_param_gather_install,
       nullptr},
      {"recompute_in_advance", K::Feature,
       "recompute in advance (MindSpeed ripipe, with recompute_full and the interleaved schedule): a chunk's "
       "recompute runs after posting the receive of its output gradient, before waiting for it; the model's last "
       "stage recomputes in its backward",
       true, false, [](const CaseSpec& c) { return c.features.recompute_in_advance; },
       [](Features& f) { f.recompute_in_advance = true; }, recompute_ahead_require, nullptr, nullptr},
      {"no_gradient_accumulation_fusion", K::Feature,
       "Megatron's --no-gradient-accumulation-fusion: each weight gradient's product computed in the activations' "
       "dtype (bf16: rounded) and added into the fp32 main grad by a separate kernel, instead of the default "
       "matmul-add (the product accumulated into main_grad in fp32 in one kernel)",
       true, true, [](const CaseSpec& c) { return c.features.no_gradient_accumulation_fusion; },
       [](Features& f) { f.no_gradient_accumulation_fusion = true; }, separate_add_require, separate_add_install,
       nullptr},
      {"mc2", K::Feature,
       "MC2 (with sp): the column linear as all-gather(X) W and the row linear as reduce-scatter(X W), in chunks "
       "(case key mc2_chunks) whose communication runs under the next chunk's product; the column backward's "
       "re-gather and reduce-scatter under its input and weight gradients; same bytes as SP",
       true, false, [](const CaseSpec& c) { return c.features.mc2; }, [](Features& f) { f.mc2 = true; }, mc2_require,
       mc2_install, nullptr},
  };
  return all;
}

// (Recompute in advance outside the interleaved schedule is refused by its own entry.)
pp::Placement placement_for(const CaseSpec& c) {
  pp::Placement pl;
  pl.p = c.layout.pp, pl.v = c.layout.vpp, pl.vshape = c.layout.pp > 1 && pp::vshape_kind(c.schedule);
  pl.bidir = c.layout.pp > 1 && pp::bidir_kind(c.schedule);
  const auto& f = c.features;
  const int64_t L = c.model.num_hidden_layers;
  if (!f.pp_split()) {
    PB_REQUIRE(!pl.bidir || L % pl.p == 0, "invalid layout: pp ", pl.p, " does not divide num_hidden_layers ", L,
               " (each of the two pipelines of ", c.schedule, " holds the whole model; or give pp_layers)");
    return pl;
  }
  PB_REQUIRE(c.layout.pp > 1, "pp_layers / pp_first_layers / pp_last_layers split the layers over pipeline stages "
             "(need pp > 1)");
  PB_REQUIRE(int(!f.pp_layers.empty()) + int(f.pp_first_layers > 0 || f.pp_last_layers > 0) + int(f.pp_balanced) == 1,
             "give one of pp_layers [..], pp_layers \"balanced\" and pp_first_layers / pp_last_layers");
  // The split is over the model's stages: p*v, or p for two pipelines (each a whole copy).
  if (!f.pp_layers.empty()) {
    pp::check_split(f.pp_layers, L, pl.model_stages());
    pl.set_split(f.pp_layers);
  } else if (f.pp_balanced) {
    pl.set_split(pp::balanced_split(pp::analytic_layer_costs(c.model, c.train.seq_length), pl.model_stages()));
  } else {
    pp::Placement one_way = pl;  // the down pipeline's ranks
    if (pl.bidir) one_way.bidir = false, one_way.v = 1;
    pl.set_split(pp::megatron_split(one_way, L, f.pp_first_layers, f.pp_last_layers));
  }
  return pl;
}

pp::Schedule schedule_for(const CaseSpec& c) {
  pp::Schedule s = pp::make_schedule(c.schedule, c.layout.pp, c.layout.vpp, int(c.train.num_micro_batches),
                                     c.features.recompute_in_advance && c.schedule == "interleaved",
                                     c.features.pp_update_every, c.features.terapipe_slices);
  static_cast<pp::Placement&>(s) = placement_for(c);
  return s;
}

bool is_active(const Technique& t, const CaseSpec& c) {
  if (t.kind == K::Schedule) return c.layout.pp > 1 && c.schedule == t.name;
  return t.active(c);
}

std::string technique_names(TechniqueKind kind, const char* sep) {
  std::string all;
  for (const auto& t : techniques())
    if (t.kind == kind) all += (all.empty() ? "" : sep) + std::string(t.name);
  return all;
}

const Technique* find_technique(const std::string& name) {
  for (const auto& t : techniques())
    if (name == t.name) return &t;
  throw Error("unknown technique '" + name + "' (parabench list shows the known ones)");
}

Features parse_features(const std::vector<std::string>& names, bool only_known) {
  Features f;
  for (const auto& n : names) {
    const Technique* t = nullptr;
    for (const auto& k : techniques())
      if (n == k.name) t = &k;
    PB_REQUIRE(t && t->kind == K::Feature, "unknown feature '", n, "'",
               t ? std::string(" (") + n + " is a layout degree or schedule, not a feature)" : "",
               " (parabench list shows the known ones)");
    if (only_known) continue;
    PB_REQUIRE(t->implemented, "feature '", n, "' is not available in this build yet");
    t->enable(f);
  }
  return f;
}

void validate_case_spec(const CaseSpec& c) {
  validate_layout(c.layout, c.model, c.features.pp_split() || (c.layout.pp > 1 && pp::bidir_kind(c.schedule)));
  if (c.features.pp_split()) placement_for(c);  // the split's own errors, one line
  if (c.layout.pp > 1) {
    const Technique* s = nullptr;
    for (const auto& k : techniques())
      if (k.kind == K::Schedule && c.schedule == k.name) s = &k;
    PB_REQUIRE(s, "schedule: unknown schedule '", c.schedule, "' (", technique_names(K::Schedule, ", "), ")");
  }
  for (const auto& t : techniques())
    if (t.require && is_active(t, c)) t.require(c);
}

Strategies strategies_for(const CaseSpec& c) {
  Strategies s = Strategies::defaults();
  for (const auto& t : techniques())
    if (t.install && is_active(t, c)) t.install(c, s);
  return s;
}

Terms technique_terms(const CaseSpec& c, const Dims& d) {
  Terms terms;
  for (const auto& t : techniques())
    if (t.terms && is_active(t, c)) t.terms(c, d, terms);
  return terms;
}

}  // namespace pb
