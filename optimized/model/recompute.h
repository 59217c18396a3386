/* Activation recomputation: the recompute strategies of the activation-policy seam
 * (DESIGN.md, "The decoder as blocks"; Chen et al., arXiv 1604.06174; Korthikanti et al.,
 * "Reducing Activation Recomputation in Large Transformer Models", arXiv 2205.05198).
 *
 * Full (Megatron's recompute_granularity=full): a checkpointed group of layers keeps only
 * its input x (N_s, H) between its forward and its backward; its backward first runs the
 * group's forward again (its TP, CP and EP communication a second time, now in the
 * backward phase), then the blocks' backwards on the state that forward saved. Which
 * layers of a chunk (a pipeline stage's, or a virtual stage's, layers l0..l1):
 *   uniform N   groups of N consecutive layers, every layer checkpointed (N divides l1-l0)
 *   block N     the first N layers, each its own group; the others keep everything
 * Selective (recompute_granularity=selective, core attention): the attention core keeps
 * nothing of its own; its backward runs its forward again (o and its statistics into new
 * buffers) and then its backward. With a flash core that drops the LSE (a N fp32) per
 * layer, o being the output projection's saved input; the 5 a S^2 B term of the paper's
 * non-flash core does not exist here. Both are bitwise equal to keeping everything: the
 * same kernels run on the same inputs.
 *
 * Memory (analytic.cc): after a chunk's forward a group holds e N_s H; during the forward
 * the group's whole saved state exists until its last block returns (plus its output),
 * and during the backward the group's recomputed state is allocated again on top of what
 * the backward has not freed yet.
 */
#pragma once

#include <memory>
#include <utility>
#include <vector>

#include "optimized/model/attention_core.h"
#include "optimized/model/block.h"
#include "optimized/model/block_chain.h"

namespace pb {

// The layer groups of one chunk [l0, l1) that full recompute checkpoints (empty: none).
// method "uniform" or "block"; n >= 1 (the registry checks both against the layout).
std::vector<std::pair<int64_t, int64_t>> recompute_groups(const std::string& method, int64_t n, int64_t l0,
                                                          int64_t l1);

// The blocks of one checkpointed group, run as one block: through the model's chain (its
// prefetches and gradient hooks per block of the group, in the forward, the recompute and
// the backward).
class CheckpointedBlocks final : public Block {
 public:
  CheckpointedBlocks(std::vector<std::unique_ptr<Block>> blocks, BlockChain& chain);
  ~CheckpointedBlocks() override;
  Tensor forward(BlockCtx& ctx, const Tensor& x) override;
  Tensor backward(BlockCtx& ctx, const Tensor& dout) override;
  // Recompute in advance: the forward again now; the backward then does not run it.
  void recompute(int mb);
  void drop(int mb) override;
  std::vector<ShardedParam*> params() const override;
  bool composite() const override { return true; }
  std::string label() const override { return "checkpointed " + blocks_.front()->label() + " .. " + blocks_.back()->label(); }
  // Forward and backward (the recompute) both begin with the first block's forward.
  std::vector<ShardedParam*> weights_used(bool) const override { return blocks_.front()->weights_used(false); }
  const std::vector<std::unique_ptr<Block>>& blocks() const { return blocks_; }

 private:
  struct Kept {  // a micro-batch between its forward and its backward: the input, what the forward saw
    Tensor x;    // (N_s, H)
    const ref::Batch* batch = nullptr;
    float grad_scale = 1;
    bool recomputed = false;  // in advance
  };
  void run_again(int mb, const std::vector<ShardedParam*>& then);
  std::vector<std::unique_ptr<Block>> blocks_;
  BlockChain& chain_;
  PerMicroBatch<Kept> kept_{"checkpointed layers"};
};

// Selective recompute: an attention core whose backward recomputes its forward.
class RecomputedCore final : public AttentionCore {
 public:
  explicit RecomputedCore(std::unique_ptr<AttentionCore> inner) : inner_(std::move(inner)) {}
  std::unique_ptr<Saved> forward(Tensor& o, const Tensor& q, const Tensor& k, const Tensor& v, int mb) override;
  void backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, Saved& s) override;
  AttentionCore& inner() { return *inner_; }
  int64_t recomputes() const { return recomputes_; }

 private:
  std::unique_ptr<AttentionCore> inner_;
  int64_t recomputes_ = 0;
};

}  // namespace pb
