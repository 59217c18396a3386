/* The embedding and head blocks (see end_blocks.h). */
#include "optimized/model/end_blocks.h"

#include "reference/common/error.h"

namespace pb {

EmbeddingBlock::EmbeddingBlock(const BlockEnv& env) : env_(env), table_(&env.params.get("model.embed_tokens.weight")) {}

Tensor EmbeddingBlock::forward(BlockCtx& ctx, const Tensor&) {
  const auto& e = env_;
  const IndexTensor& tokens = tokens_.start(ctx.mb) = IndexTensor(e.tp.embedding_rows(ctx.batch->tokens));
  Weights W(e.provider, {table_});
  Tensor x = e.act(e.Ns, e.H);
  vocab_embedding_forward(x, tokens, W[0], e.tp.embedding_vocab_start(e.mc.vocab_size), e.tp);
  return x;
}

Tensor EmbeddingBlock::backward(BlockCtx& ctx, const Tensor& dx) {
  vocab_embedding_backward(table_->g, dx, tokens_.of(ctx.mb), env_.tp.embedding_vocab_start(env_.mc.vocab_size),
                           env_.tp);
  tokens_.end(ctx.mb);
  return Tensor();
}

struct HeadBlock::Saved final : SavedState {
  Tensor x, rstd, xf, logits;  // (N_s, H), (N_s) fp32, (N_s, H), (N, V/TP)
  CeState ce;                  // (N) fp32 x 2
  IndexTensor labels;          // (N)
  float grad_scale = 1;
  const char* block() const override { return "head"; }
  std::vector<Tensor*> tensors() override { return {&x, &rstd, &xf, &logits, &ce.mx, &ce.se}; }
};

HeadBlock::HeadBlock(const BlockEnv& env)
    : env_(env),
      norm_(&env.params.get("model.norm.weight")),
      head_(&env.params.get("lm_head.weight")),
      saved_("head") {}

HeadBlock::~HeadBlock() = default;

Tensor HeadBlock::forward(BlockCtx& ctx, const Tensor& x) {
  const auto& e = env_;
  Saved* S = &saved_.start(ctx.mb);
  S->mb = ctx.mb;
  Weights W(e.provider, {norm_, head_});
  S->labels = IndexTensor(e.tp.head_rows(ctx.batch->labels));
  S->grad_scale = ctx.grad_scale * e.tp.loss_share();
  S->x = x;
  S->rstd = BlockEnv::stat(e.Ns);
  S->xf = e.act(e.Ns, e.H);
  e.tp.norm_forward(S->xf, S->rstd, x, W[0], float(e.mc.rms_norm_eps));
  S->logits = e.act(e.N, e.Vh);
  e.tp.column_forward({&S->logits}, S->xf, {&W[1]});
  ctx.loss = e.tp.loss_mean(vocab_ce_forward(S->ce, S->logits, S->labels, e.tp.head_vocab_start(e.mc.vocab_size),
                                             e.tp.vocab_group()));
  e.policy.after_forward(*S);
  return Tensor();
}

Tensor HeadBlock::backward(BlockCtx& ctx, const Tensor&) {
  const auto& e = env_;
  Saved& S = saved_.of(ctx.mb);
  e.policy.before_backward(S);
  Weights W(e.provider, {norm_, head_});
  Tensor dlogits = e.work(e.N, e.Vh), dxf = e.work(e.Ns, e.H);
  Tensor dx = e.work(e.Ns, e.H);
  vocab_ce_backward(dlogits, S.ce, S.logits, S.labels, e.tp.head_vocab_start(e.mc.vocab_size), S.grad_scale);
  e.tp.column_backward(dxf, {&head_->g}, {&dlogits}, S.xf, {&W[1]});
  e.tp.norm_backward(dx, norm_->g, dxf, S.x, S.rstd, W[0]);
  saved_.end(ctx.mb);
  return dx;
}

int64_t head_saved_bytes(const Dims& d) {
  return d.e * (2 * d.Ns * d.H + d.N * d.V / d.tq) + Dims::fp * (d.Ns + 2 * d.N);
}

BlockWorkspace embedding_workspace(const Dims& d) { return {d.e * d.N * d.H, 0}; }

BlockWorkspace head_workspace(const Dims& d) {
  const int64_t product = d.wgrad_products ? d.e * d.V / d.tq * d.H : 0;  // the separate add's (V/t, H)
  return {Dims::fp * d.N, d.e * (d.N * d.V / d.tq + 2 * d.Ns * d.H + 2 * d.N * d.H) + product};
}

}  // namespace pb
