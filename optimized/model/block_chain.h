/* How a sequence of blocks runs (DESIGN.md, "The decoder as blocks"): a chunk's blocks in
 * DistModel, and the layers of a checkpointed group inside it (model/recompute.h).
 *
 *   forward   block i runs after the parameter provider was asked to prefetch the weights
 *             block i+1 acquires (after the last block: `then`, what follows the sequence)
 *   backward  block i (from the last) runs after the prefetch of block i-1's backward
 *             weights (after the first: `then`), between the gradient hooks (BlockGrads:
 *             ZeRO-2/3 bind its whole gradients before and reduce-scatter them after)
 * A composite block (Block::composite, a checkpointed group) runs its own blocks through
 * the same chain: it gets `then` in BlockCtx, prefetches it before its last block and hooks
 * each of its blocks itself, so that the weights whole at once are always one block's and
 * the next one's, and the gradients whole at once one block's (ZeRO-3, ZeRO-2).
 */
#pragma once

#include <memory>
#include <vector>

#include "optimized/model/block.h"
#include "optimized/model/zero_grads.h"

namespace pb {

class BlockChain {
 public:
  BlockChain(ParamProvider& provider, BlockGrads& grads) : provider_(provider), grads_(grads) {}
  using Blocks = std::vector<std::unique_ptr<Block>>;
  // blocks in forward order; x (N_s, H) -> (N_s, H).
  Tensor forward(const Blocks& blocks, BlockCtx& ctx, Tensor x, const std::vector<ShardedParam*>& then);
  // d (N_s, H) -> (N_s, H), the blocks from the last.
  Tensor backward(const Blocks& blocks, BlockCtx& ctx, Tensor d, const std::vector<ShardedParam*>& then);

 private:
  ParamProvider& provider_;
  BlockGrads& grads_;
};

}  // namespace pb
