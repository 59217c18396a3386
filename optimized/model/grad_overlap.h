/* Gradient reduction overlapped with the backward (the gradient hooks' seam, DESIGN.md "The
 * decoder as blocks"; Megatron-LM's overlap_grad_reduce, Li et al., "PyTorch Distributed",
 * arXiv 2006.15704): the gradient buffer's buckets (DistParams::buckets: bucket_size
 * elements or more, the experts' one bucket) are reduced as soon as their gradients are
 * complete instead of all at the step.
 *
 *   a block's backward of the last micro-batch (m - 1) ends, or under a split backward the
 *   chunk's W of it: its parameters' elements count towards their buckets
 *   a bucket complete: under SP the replicated block (norm weights, routers: bucket 0)
 *   summed over TP first (blocking), then a non-blocking all-reduce of the bucket over DP x
 *   CP (the experts' over expert_dp) on the communicator's thread, while the backward goes
 *   on; with the distributed optimizer (ZeRO-1) a reduce-scatter of the padded bucket into
 *   the rank's slice of reduced(), an fp32 buffer of the shard (MemCategory::Grads, 4 B per
 *   element of the range: an in-place reduce-scatter, as NCCL allows, would need none)
 *   finish() (the optimizer step): every bucket started (each element counted exactly once),
 *   each request waited on in the order started
 * The same collectives on the same bytes as the step's bucket by bucket reduction without
 * overlap (DistOptimizer::step), so bitwise equal to it; the all-reduces move to the
 * backward phase. One all-reduce per bucket per step.
 */
#pragma once

#include <vector>

#include "optimized/comm/communicator.h"
#include "optimized/model/zero_grads.h"

namespace pb {

class OverlappedGrads final : public BlockGrads {
 public:
  // dp: the DP x CP group; expert_dp: the experts'; tp with tp_partial: the replicated
  // gradients' sum over TP under SP; m micro-batches per step.
  OverlappedGrads(DistParams& params, Communicator& dp, Communicator& expert_dp, Communicator& tp, bool tp_partial,
                  int64_t m);
  void before(const std::vector<ShardedParam*>&, int) override {}
  void after(const std::vector<ShardedParam*>& params, int mb) override;
  void weights_done(const std::vector<ShardedParam*>& params, int mb) override;
  bool finish() override;
  Tensor reduced() override { return reduced_; }
  int64_t started() const { return int64_t(requests_.size()); }  // buckets in flight or done this step

 private:
  void count(const ShardedParam& p);
  void start(size_t bucket);
  DistParams& params_;
  Communicator &dp_, &expert_dp_, &tp_;
  bool tp_partial_;
  int64_t m_;
  std::vector<int64_t> elements_;  // per bucket: its parameters' elements (without padding)
  std::vector<int64_t> filled_;    // and those complete this step
  std::vector<RequestPtr> requests_;
  Tensor reduced_;  // ZeRO-1: (shard) the buckets' reduced slices, at each bucket's `at`
};

}  // namespace pb
