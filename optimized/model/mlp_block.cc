/* The MLP block (see mlp_block.h). */
#include "optimized/model/mlp_block.h"

#include "reference/common/error.h"

namespace pb {

struct MlpBlock::Saved final : SavedState {
  Tensor h, m, rstd;  // (N_s, H) x 2, (N_s) fp32
  std::unique_ptr<Mlp::Saved> mlp;
  const char* block() const override { return "mlp"; }
  std::vector<Tensor*> tensors() override {
    std::vector<Tensor*> t{&h, &m, &rstd};
    if (mlp)
      for (Tensor* c : mlp->tensors()) t.push_back(c);
    return t;
  }
};

MlpBlock::MlpBlock(const BlockEnv& env, int64_t layer, std::unique_ptr<Mlp> mlp)
    : env_(env),
      layer_(layer),
      mlp_(std::move(mlp)),
      post_norm_(&env.params.get("model.layers." + std::to_string(layer) + ".post_attention_layernorm.weight")),
      saved_("MLP block") {}

MlpBlock::~MlpBlock() = default;

Tensor MlpBlock::forward(BlockCtx& ctx, const Tensor& h) {
  const auto& e = env_;
  Saved* S = &saved_.start(ctx.mb);
  S->layer = layer_, S->mb = ctx.mb, S->checkpointed = ctx.checkpointed;
  Weights W(e.provider, {post_norm_});
  S->h = h;
  S->m = e.act(e.Ns, e.H);
  S->rstd = BlockEnv::stat(e.Ns);
  e.tp.norm_forward(S->m, S->rstd, h, W[0], float(e.mc.rms_norm_eps));
  Tensor f;
  S->mlp = mlp_->forward(f, S->m, ctx);
  Tensor y = e.act(e.Ns, e.H);
  ops::add(y, h, f);
  e.policy.after_forward(*S);
  return y;
}

Tensor MlpBlock::backward(BlockCtx& ctx, const Tensor& dy) {
  const auto& e = env_;
  Saved& S = saved_.of(ctx.mb);
  e.policy.before_backward(S);
  Weights W(e.provider, {post_norm_});
  Tensor dm = e.work(e.Ns, e.H);
  mlp_->backward(dm, dy, *S.mlp);
  Tensor dh = e.work(e.Ns, e.H);
  e.tp.norm_backward(dh, post_norm_->g, dm, S.h, S.rstd, W[0]);
  ops::add_(dh, dy);
  saved_.end(ctx.mb);
  return dh;
}

void MlpBlock::drop(int mb) { saved_.end(mb); }

std::vector<ShardedParam*> MlpBlock::params() const {
  std::vector<ShardedParam*> p{post_norm_};
  for (ShardedParam* q : mlp_->params()) p.push_back(q);
  return p;
}

int64_t mlp_block_saved_bytes(const Dims& d) { return 2 * d.e * d.Ns * d.H + Dims::fp * d.Ns; }

// Backward peak: at the gate/up weight gradients (dm, ds dg du, the column linear's dx_full
// and its partial), with the separate add's product (f, H) there.
BlockWorkspace mlp_block_workspace(const Dims& d) {
  const int64_t product = d.wgrad_products ? d.e * d.f * d.H : 0;
  return {d.e * (d.Ns * d.H + d.N * d.H), d.e * (d.Ns * d.H + 3 * d.N * d.f + 2 * d.N * d.H) + product};
}

}  // namespace pb
