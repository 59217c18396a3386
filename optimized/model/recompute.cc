/* Full and selective activation recomputation (see recompute.h). */
#include "optimized/model/recompute.h"

#include "reference/common/error.h"

namespace pb {

void Block::drop(int) { throw Error("this block keeps its saved state: it cannot be checkpointed"); }

std::vector<std::pair<int64_t, int64_t>> recompute_groups(const std::string& method, int64_t n, int64_t l0,
                                                          int64_t l1) {
  std::vector<std::pair<int64_t, int64_t>> g;
  PB_REQUIRE(n >= 1, "recompute: recompute_num_layers must be at least 1");
  if (method == "uniform") {
    PB_REQUIRE((l1 - l0) % n == 0, "recompute: uniform groups of ", n, " layers do not divide a stage's ", l1 - l0);
    for (int64_t l = l0; l < l1; l += n) g.emplace_back(l, l + n);
  } else if (method == "block") {
    PB_REQUIRE(n <= l1 - l0, "recompute: ", n, " layers to recompute, a stage holds ", l1 - l0);
    for (int64_t l = l0; l < l0 + n; ++l) g.emplace_back(l, l + 1);
  } else {
    throw Error("recompute: unknown recompute_method '" + method + "' (uniform | block)");
  }
  return g;
}

CheckpointedBlocks::CheckpointedBlocks(std::vector<std::unique_ptr<Block>> blocks, BlockChain& chain)
    : blocks_(std::move(blocks)), chain_(chain) {
  PB_REQUIRE(!blocks_.empty(), "recompute: an empty checkpointed group");
}

CheckpointedBlocks::~CheckpointedBlocks() = default;

Tensor CheckpointedBlocks::forward(BlockCtx& ctx, const Tensor& x) {
  Kept& k = kept_.start(ctx.mb);
  k.x = x, k.batch = ctx.batch, k.grad_scale = ctx.grad_scale;
  ctx.checkpointed = true;
  const Tensor y = chain_.forward(blocks_, ctx, x, ctx.then);
  ctx.checkpointed = false;
  for (auto& b : blocks_) b->drop(ctx.mb);  // only x stays
  return y;
}

// The forward again from the kept input; its output is not needed (freed here).
void CheckpointedBlocks::run_again(int mb, const std::vector<ShardedParam*>& then) {
  Kept& k = kept_.of(mb);
  BlockCtx again{mb, k.batch, k.grad_scale};
  again.recompute = again.checkpointed = true;
  chain_.forward(blocks_, again, k.x, then);
}

void CheckpointedBlocks::recompute(int mb) {
  PB_REQUIRE(!kept_.of(mb).recomputed, "recompute: micro-batch ", mb, " of ", label(), " recomputed twice");
  run_again(mb, {});  // what comes next is not known here: nothing prefetched
  kept_.of(mb).recomputed = true;
}

Tensor CheckpointedBlocks::backward(BlockCtx& ctx, const Tensor& dout) {
  const std::vector<ShardedParam*> then = ctx.then;
  // After the last block its own backward comes: its weights are prefetched.
  if (!kept_.of(ctx.mb).recomputed) run_again(ctx.mb, blocks_.back()->weights_used(true));
  kept_.end(ctx.mb);  // x lives on in the first block's saved state until its backward
  ctx.checkpointed = true;
  const Tensor d = chain_.backward(blocks_, ctx, dout, then);
  ctx.checkpointed = false;
  return d;
}

std::vector<ShardedParam*> CheckpointedBlocks::params() const {
  std::vector<ShardedParam*> all;
  for (const auto& b : blocks_)
    for (ShardedParam* p : b->params()) all.push_back(p);
  return all;
}

void CheckpointedBlocks::drop(int mb) {
  for (auto& b : blocks_) b->drop(mb);
  kept_.end(mb);
}

namespace {
struct NothingKept final : AttentionCore::Saved {
  Tensor q, k, v;  // the attention block's own (its saved q, k, v): no bytes of the core's
  int mb = 0;
  std::vector<Tensor*> tensors() override { return {&q, &k, &v}; }
};
}  // namespace

std::unique_ptr<AttentionCore::Saved> RecomputedCore::forward(Tensor& o, const Tensor& q, const Tensor& k,
                                                              const Tensor& v, int mb) {
  inner_->forward(o, q, k, v, mb);  // its saved statistics are freed here
  auto s = std::make_unique<NothingKept>();
  s->q = q, s->k = k, s->v = v, s->mb = mb;
  return s;
}

void RecomputedCore::backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, Saved& saved) {
  auto& s = static_cast<NothingKept&>(saved);
  ++recomputes_;
  Tensor o;
  auto again = inner_->forward(o, s.q, s.k, s.v, s.mb);
  inner_->backward(dq, dk, dv, dout, *again);
  s = NothingKept{};
}

}  // namespace pb
