/* Where a block's parameter gradients live around its backward (the gradient-sink seam's
 * block-level half, DESIGN.md "The decoder as blocks"): the model calls before() and
 * after() with the block's parameters around every block backward.
 *
 *   WholeGrads    the gradients are views into one whole buffer (DistParams): nothing to do
 *   ShardedGrads  ZeRO-2 (Rajbhandari et al., arXiv 1910.02054; DeepSpeed's stage 2):
 *                 before: each parameter's whole fp32 gradient (n' = q d elements, zeroed,
 *                 MemCategory::Grads) is allocated and bound to p.g;
 *                 after: under SP a replicated (norm, router) gradient is first summed
 *                 over TP; each gradient is reduce-scattered over DP x CP (an expert
 *                 group's over expert_dp; its q-element slice of the sum, a CommBuffers
 *                 transient) and added into the rank's fp32 accumulator; the whole
 *                 gradient is freed.
 * Per micro-batch, so the gradients of one block at a time are whole: the grads peak is
 * 4 (sum q + the largest block's sum n') bytes instead of 4 sum n. Under a split backward
 * a chunk's whole gradients of one micro-batch stay from its B to its W (then reduced):
 * the peak is the most of them pending at once (the schedule's walk, pp_terms.h). The cost: every
 * micro-batch reduce-scatters (DeepSpeed's stage 2 as well), m times ZeRO-1's
 * reduce-scatter bytes, against none of its gradient all-reduce at the step.
 * With overlap_grad_reduce (DeepSpeed's overlap_comm) each whole gradient is reduce-
 * scattered in place, on the communicator's thread, while the next block's backward runs:
 * it is waited for (its slice added, the whole freed) at that block's after(), at the end
 * of the chunk's backward and before the step. Two consecutive blocks' whole gradients are
 * then alive at once (the grads peak: 4 (sum q + the most of two consecutive blocks' n'))
 * and no reduce-scatter output transient exists. A split backward reduces at W, as above.
 */
#pragma once

#include <memory>
#include <vector>

#include "optimized/comm/communicator.h"
#include "optimized/model/dist_params.h"

namespace pb {

class Communicator;
class TpLinear;

class BlockGrads {
 public:
  // Whole gradients left bound by blocks whose weight gradients are still to come.
  using Held = std::vector<std::pair<ShardedParam*, Tensor>>;
  virtual ~BlockGrads() = default;
  // Around the backward of a block's micro-batch mb.
  virtual void before(const std::vector<ShardedParam*>& params, int mb) = 0;
  virtual void after(const std::vector<ShardedParam*>& params, int mb) = 0;
  // A split backward (zero bubble) computes the weight gradients in W, after the block's
  // backward: meanwhile after() moves the block's whole gradients to *held (the queued
  // weight gradients write into them), and reduce(held) reduces them once W has run.
  void defer_to(Held* held) { held_ = held; }
  virtual void reduce(Held& held) { held.clear(); }
  // After a chunk's W of micro-batch mb (split backward): its parameters' gradients of mb
  // are complete.
  virtual void weights_done(const std::vector<ShardedParam*>&, int) {}
  // Before the optimizer step: where the backward started the step's data-parallel
  // reduction (model/grad_overlap.h), waits for all of it and returns true.
  virtual bool finish() { return false; }
  // The end of a chunk's backward of one micro-batch: what it started is waited for.
  virtual void chunk_done() {}
  // Under the distributed optimizer (ZeRO-1): the reduce-scatters' results the backward
  // started, (shard) fp32 at each bucket's slice position `at`; empty otherwise.
  virtual Tensor reduced() { return Tensor(); }

 protected:
  Held* held_ = nullptr;
};

class WholeGrads final : public BlockGrads {
 public:
  void before(const std::vector<ShardedParam*>&, int) override {}
  void after(const std::vector<ShardedParam*>&, int) override {}
};

class ShardedGrads final : public BlockGrads {
 public:
  // shards: the DP x CP group (experts: expert_dp); tp: its replicated gradients summed
  // first where the TP strategy leaves them partial (SP).
  // overlap: the reduce-scatters in flight under the next block's backward (above).
  ShardedGrads(DistParams& params, Communicator& shards, Communicator& expert_shards, Communicator& tp, bool tp_partial,
               bool overlap = false)
      : params_(params), shards_(shards), expert_shards_(expert_shards), tp_(tp), tp_partial_(tp_partial),
        overlap_(overlap) {}
  ~ShardedGrads() override;
  void before(const std::vector<ShardedParam*>& params, int mb) override;
  void after(const std::vector<ShardedParam*>& params, int mb) override;
  void reduce(Held& held) override;
  void chunk_done() override { drain(); }
  bool finish() override {
    drain();
    return false;
  }
  int64_t in_flight() const { return int64_t(in_flight_.size()); }

 private:
  struct InFlight {
    ShardedParam* p;
    Tensor g;  // (n'): the rank's slice of the sum at its block once done
    RequestPtr done;
  };
  void reduce_one(ShardedParam& p, Tensor& g);
  void sum_replicated(ShardedParam& p, Tensor& g);  // SP: a replicated gradient over TP first
  Communicator& group_of(const ShardedParam& p) { return p.is_expert ? expert_shards_ : shards_; }
  void drain();  // waits for every reduce-scatter in flight and adds its slice
  DistParams& params_;
  Communicator& shards_;
  Communicator& expert_shards_;
  Communicator& tp_;
  bool tp_partial_;
  bool overlap_;
  std::vector<std::pair<ShardedParam*, Tensor>> whole_;  // the bound gradients (n')
  std::vector<InFlight> in_flight_;                       // the previous block's
};

}  // namespace pb
