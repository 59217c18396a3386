/* The communication-overlap techniques' registry entries (see overlap_techniques.h). */
#include "optimized/train/overlap_techniques.h"

#include "optimized/model/grad_overlap.h"
#include "optimized/model/param_gather_overlap.h"
#include "optimized/model/strategies.h"
#include "optimized/parallel/process_grid.h"
#include "optimized/parallel/tp_linear.h"
#include "reference/common/error.h"

namespace pb {

void overlap_grad_reduce_require(const CaseSpec& c) {
  PB_REQUIRE(!c.features.distributed_optimizer || c.features.zero_stage == 1, "invalid case: overlap_grad_reduce "
             "with zero_stage ", c.features.zero_stage, " (each block's reduce-scatters in the backward) is not available "
             "in this build yet");
  PB_REQUIRE(c.features.bucket_size >= 0, "invalid case: bucket_size ", c.features.bucket_size, " (elements, >= 0)");
}

void overlap_grad_reduce_install(const CaseSpec& c, Strategies& s) {
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

}  // namespace pb
