/* The parameter-provider seam (DESIGN.md, "The decoder as blocks"): where a block gets its
 * weights. A block acquires each weight before use and releases it after, in forward and in
 * backward.
 *
 * Strategies: resident (this file: every weight of the rank's shards stays in memory, the
 * acquire is the parameter itself); ZeRO-3 (model/zero_params.h, Rajbhandari et al., arXiv
 * 1910.02054): weights sharded over DP, all-gathered before a block's use and freed after,
 * the next block's gather prefetched.
 */
#pragma once

#include <vector>

#include "optimized/comm/communicator.h"
#include "optimized/model/dist_params.h"

namespace pb {

class ParamProvider {
 public:
  virtual ~ParamProvider() = default;
  virtual const Tensor& acquire(ShardedParam& p) = 0;  // the weight in the model dtype, (rows, cols)
  virtual void release(ShardedParam& p) = 0;
  // The weights the next block will acquire: a provider that fetches them may start now.
  virtual void prefetch(const std::vector<ShardedParam*>&) {}
  // The distributed optimizer's all-gather of bucket k of the weights, posted at the step: a
  // provider that overlaps it with the next forward keeps it (param_gather_overlap.h);
  // otherwise it completes here.
  virtual void gathering(size_t bucket, RequestPtr r) {
    (void)bucket;
    r->wait();
  }
};

class ResidentParams final : public ParamProvider {
 public:
  const Tensor& acquire(ShardedParam& p) override { return p.w; }
  void release(ShardedParam&) override {}
};

}  // namespace pb
