/* The communication-overlap techniques' registry entries (see overlap_techniques.h). */
#include "optimized/train/overlap_techniques.h"

#include "optimized/model/grad_overlap.h"
#include "optimized/model/param_gather_overlap.h"
#include "optimized/model/zero_grads.h"
#include "optimized/model/strategies.h"
#include "optimized/parallel/grad_separate_add.h"
#include "optimized/parallel/mc2_linear.h"
#include "optimized/parallel/process_grid.h"
#include "optimized/parallel/tp_linear.h"
#include "reference/common/error.h"

namespace pb {

void overlap_grad_reduce_require(const CaseSpec& c) {
  PB_REQUIRE(c.features.bucket_size >= 0, "invalid case: bucket_size ", c.features.bucket_size, " (elements, >= 0)");
}

void overlap_grad_reduce_install(const CaseSpec& c, Strategies& s) {
  if (c.features.distributed_optimizer && c.features.zero_stage >= 2) {  // each block's reduce-scatters in flight
    s.block_grads = [](DistParams& params, ProcessGrid& grid, TpLinear& tp) -> std::unique_ptr<BlockGrads> {
      if (!params.per_param_shards()) return std::make_unique<WholeGrads>();  // dp x cp = 1: nothing to shard
      Communicator& shards = grid.layout().cp > 1 ? grid.dp_cp() : grid.dp();
      return std::make_unique<ShardedGrads>(params, shards, grid.expert_dp(), grid.tp(), tp.replicated_grads_partial(),
                                            true);
    };
    return;
  }
  const int64_t m = c.train.num_micro_batches;
  s.block_grads = [m](DistParams& params, ProcessGrid& grid, TpLinear& tp) -> std::unique_ptr<BlockGrads> {
    return std::make_unique<OverlappedGrads>(params, grid.layout().cp > 1 ? grid.dp_cp() : grid.dp(), grid.expert_dp(),
                                             grid.tp(), tp.replicated_grads_partial(), m);
  };
}

void overlap_param_gather_require(const CaseSpec& c) {
  PB_REQUIRE(c.features.distributed_optimizer && c.features.zero_stage == 1,
             "invalid case: overlap_param_gather needs the distributed optimizer with zero_stage 1 (its all-gathers "
             "of the updated weights are what it overlaps)");
}

void overlap_param_gather_install(const CaseSpec&, Strategies& s) {
  s.params = [](DistParams& params, ProcessGrid&) -> std::unique_ptr<ParamProvider> {
    return std::make_unique<OverlappedGather>(params);
  };
}

void recompute_in_advance_require(const CaseSpec& c) {
  const Features& f = c.features;
  PB_REQUIRE(f.recompute_full, "invalid case: recompute_in_advance moves full recompute's forward again: it needs "
             "the feature recompute_full");
  PB_REQUIRE(!f.recompute_selective && !f.swap_attention, "invalid case: recompute_in_advance with ",
             f.recompute_selective ? "recompute_selective" : "swap_attention",
             " is not available (neither is it in MindSpeed)");
  PB_REQUIRE(!(f.distributed_optimizer && f.zero_stage == 3), "invalid case: recompute_in_advance with zero_stage 3 "
             "is not available in this build yet (the recompute's weight gathers ahead of the backward's)");
}

void separate_add_require(const CaseSpec& c) {
  PB_REQUIRE(c.model.num_local_experts == 0, "invalid case: no_gradient_accumulation_fusion with an MoE model is not "
             "available in this build yet (the experts' grouped weight gradients accumulate in their own kernel)");
}

void separate_add_install(const CaseSpec&, Strategies& s) {
  s.grad_sink = [](DistParams&) -> std::unique_ptr<GradSink> { return std::make_unique<SeparateAddGrads>(); };
}

void mc2_require(const CaseSpec& c) {
  const int64_t k = c.features.mc2_chunks, t = c.layout.tp;
  PB_REQUIRE(c.features.sp && t > 1, "invalid case: mc2 fuses the sequence-parallel linears' collectives: it needs "
             "tp > 1 and the feature sp");
  PB_REQUIRE(k >= 1, "invalid case: mc2_chunks ", k, " (>= 1)");
  const int64_t rows = c.train.micro_batch_size * (c.train.seq_length / c.layout.cp) / t;  // a rank's SP shard
  PB_REQUIRE(rows % k == 0, "invalid case: mc2_chunks ", k, " does not divide the ", rows,
             " rows of a sequence-parallel shard (micro_batch_size x seq_length / (cp x tp))");
}

void mc2_install(const CaseSpec& c, Strategies& s) {
  const int64_t k = c.features.mc2_chunks;
  s.tp_linear = [k](ProcessGrid& grid, GradSink& sink) { return std::make_unique<TpMc2>(grid.tp(), sink, k); };
  s.tp_linear_terms = [k](const Dims& d, Terms& t) { mc2_terms(d, t, k); };
}

}  // namespace pb
