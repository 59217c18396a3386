/* The parameter all-gather overlapped with the next forward (the parameter-provider seam,
 * DESIGN.md "The decoder as blocks"; Megatron-LM's overlap_param_gather, with the
 * distributed optimizer): the step posts each bucket's in-place all-gather of the updated
 * weights (DistOptimizer::step_sharded) and returns; the provider keeps the requests, and a
 * block's acquire of a weight waits for the bucket holding it first (the communicator's
 * thread runs the gathers in bucket order meanwhile), so the forward starts while later
 * buckets are still in flight; no weight is handed out before its bucket's gather
 * completed. Bitwise the same weights as gathering them at the step (an all-gather
 * copies), the same bytes, one all-gather per bucket per step.
 */
#pragma once

#include <vector>

#include "optimized/model/param_provider.h"

namespace pb {

class OverlappedGather final : public ParamProvider {
 public:
  explicit OverlappedGather(DistParams& params) : params_(params), pending_(params.buckets().size()) {}
  const Tensor& acquire(ShardedParam& p) override;
  void release(ShardedParam&) override {}
  void gathering(size_t bucket, RequestPtr r) override;
  int64_t in_flight() const;  // buckets not yet waited for

 private:
  DistParams& params_;
  std::vector<RequestPtr> pending_;  // per bucket: its all-gather until a block needs it
};

}  // namespace pb
