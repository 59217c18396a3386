/* The chain that runs a sequence of blocks (see block_chain.h). */
#include "optimized/model/block_chain.h"

#include "optimized/core/timeline.h"

namespace pb {

Tensor BlockChain::forward(const Blocks& blocks, BlockCtx& ctx, Tensor x, const std::vector<ShardedParam*>& then) {
  const std::vector<ShardedParam*> after = then;  // ctx.then may be this very vector
  for (size_t i = 0; i < blocks.size(); ++i) {
    auto next = i + 1 < blocks.size() ? blocks[i + 1]->weights_used(false) : after;
    if (blocks[i]->composite()) {
      ctx.then = std::move(next);
      x = blocks[i]->run(ctx, x);  // its blocks' spans are on the timeline
      continue;
    }
    provider_.prefetch(next);
    const TimedSpan span(SpanKind::Compute, ctx.recompute ? "forward again" : "forward", blocks[i]->label());
    x = blocks[i]->run(ctx, x);
  }
  return x;
}

Tensor BlockChain::backward(const Blocks& blocks, BlockCtx& ctx, Tensor d, const std::vector<ShardedParam*>& then) {
  const std::vector<ShardedParam*> after = then;
  for (size_t i = blocks.size(); i-- > 0;) {
    auto next = i > 0 ? blocks[i - 1]->weights_used(true) : after;
    Block& b = *blocks[i];
    if (b.composite()) {
      ctx.then = std::move(next);
      d = b.backward(ctx, d);
      continue;
    }
    provider_.prefetch(next);
    const auto params = b.params();
    grads_.before(params, ctx.mb);
    {
      const TimedSpan span(SpanKind::Compute, "backward", b.label());
      d = b.backward(ctx, d);
    }
    grads_.after(params, ctx.mb);
  }
  return d;
}

}  // namespace pb
