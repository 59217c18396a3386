/* ZeRO-3's parameter provider (the parameter-provider seam, DESIGN.md "The decoder as
 * blocks"; Rajbhandari et al., arXiv 1910.02054, stage 3): each rank stores only its slices
 * of the weights (DistParams::params_sharded); a block's weights are all-gathered over
 * DP x CP when it acquires them, in its forward and again in its backward, and freed when
 * it releases them (an expert group over expert_dp). While a block runs, the next block's weights are being gathered
 * (prefetch: non-blocking all-gathers started before the block runs, waited on at acquire).
 *
 *   acquire(p)   the prefetched gather, waited on, or a gather now: p.w = the whole (TP
 *                shard of the) weight, (padded) elements in MemCategory::Params
 *   release(p)   p.w and its buffer freed
 * Memory: params = e (sum q + the two largest consecutive blocks' padded weights) at the
 * peak (a block and the one prefetched behind it); per block use e n' all-gathered per
 * parameter, forward and backward (the embedding's backward needs no table).
 */
#pragma once

#include <map>
#include <vector>

#include "optimized/comm/communicator.h"
#include "optimized/model/param_provider.h"

namespace pb {

class GatheredParams final : public ParamProvider {
 public:
  // shards: DP x CP; expert_shards: expert_dp (the expert groups').
  GatheredParams(DistParams& params, Communicator& shards, Communicator& expert_shards)
      : params_(params), shards_(shards), expert_shards_(expert_shards) {}
  ~GatheredParams() override;
  const Tensor& acquire(ShardedParam& p) override;
  void release(ShardedParam& p) override;
  void prefetch(const std::vector<ShardedParam*>& ps) override;
  int64_t gathered() const { return int64_t(held_.size()); }  // parameters whole right now

 private:
  struct Held {
    Tensor whole;        // (n') in the model dtype
    RequestPtr pending;  // the prefetch's all-gather, until acquired
  };
  void start(ShardedParam& p, bool async);
  DistParams& params_;
  Communicator& shards_;
  Communicator& expert_shards_;
  std::map<ShardedParam*, Held> held_;
};

}  // namespace pb
