/* The attention block (see attention_block.h). */
#include "optimized/model/attention_block.h"

#include <algorithm>

#include "reference/common/error.h"

namespace pb {

struct AttentionBlock::Saved final : SavedState {
  Tensor x, a, rstd, q, k, v, o;  // (N_s, H) x 2, (N_s) fp32, (N, Aq*D), (N, Gk*D) x 2, (N, Aq*D)
  std::unique_ptr<AttentionCore::Saved> core;
  const char* block() const override { return "attention"; }
  std::vector<Tensor*> tensors() override {
    std::vector<Tensor*> t{&x, &a, &rstd, &q, &k, &v, &o};
    if (core)
      for (Tensor* c : core->tensors()) t.push_back(c);
    return t;
  }
};

static std::string name_of(int64_t l, const char* what) { return "model.layers." + std::to_string(l) + "." + what; }

AttentionBlock::AttentionBlock(const BlockEnv& env, int64_t layer, std::unique_ptr<AttentionCore> core)
    : env_(env),
      layer_(layer),
      core_(std::move(core)),
      in_norm_(&env.params.get(name_of(layer, "input_layernorm.weight"))),
      wq_(&env.params.get(name_of(layer, "self_attn.q_proj.weight"))),
      wk_(&env.params.get(name_of(layer, "self_attn.k_proj.weight"))),
      wv_(&env.params.get(name_of(layer, "self_attn.v_proj.weight"))),
      wo_(&env.params.get(name_of(layer, "self_attn.o_proj.weight"))),
      saved_("attention block") {}

AttentionBlock::~AttentionBlock() = default;

Tensor AttentionBlock::forward(BlockCtx& ctx, const Tensor& x) {
  const auto& e = env_;
  Saved* S = &saved_.start(ctx.mb);
  S->layer = layer_, S->mb = ctx.mb, S->checkpointed = ctx.checkpointed;
  Weights W(e.provider, {in_norm_, wq_, wk_, wv_, wo_});
  S->x = x;
  S->a = e.act(e.Ns, e.H);
  S->rstd = BlockEnv::stat(e.Ns);
  e.tp.norm_forward(S->a, S->rstd, x, W[0], float(e.mc.rms_norm_eps));
  Tensor qp = e.work(e.N, e.Aq * e.D), kp = e.work(e.N, e.Gk * e.D);
  S->v = e.act(e.N, e.Gk * e.D);
  e.tp.column_forward({&qp, &kp, &S->v}, S->a, {&W[1], &W[2], &W[3]});
  S->q = e.act(e.N, e.Aq * e.D);
  S->k = e.act(e.N, e.Gk * e.D);
  ops::rope_forward(S->q, qp, e.positions(ctx.mb), e.D, e.mc.rope_theta);
  ops::rope_forward(S->k, kp, e.positions(ctx.mb), e.D, e.mc.rope_theta);
  S->core = core_->forward(S->o, S->q, S->k, S->v, ctx.mb);
  Tensor attn = e.work(e.Ns, e.H);
  e.tp.row_forward(attn, S->o, W[4]);
  Tensor h = e.act(e.Ns, e.H);
  ops::add(h, x, attn);
  e.policy.after_forward(*S);
  return h;
}

Tensor AttentionBlock::backward(BlockCtx& ctx, const Tensor& dh) {
  const auto& e = env_;
  Saved& S = saved_.of(ctx.mb);
  e.policy.before_backward(S);
  Weights W(e.provider, {in_norm_, wq_, wk_, wv_, wo_});
  Tensor dout = e.work(e.N, e.Aq * e.D), dq = e.work(e.N, e.Aq * e.D);
  Tensor dk = e.work(e.N, e.Gk * e.D), dv = e.work(e.N, e.Gk * e.D);
  e.tp.row_backward(dout, wo_->g, dh, S.o, W[4]);
  core_->backward(dq, dk, dv, dout, *S.core);
  Tensor dqp = e.work(e.N, e.Aq * e.D), dkp = e.work(e.N, e.Gk * e.D), da = e.work(e.Ns, e.H);
  ops::rope_backward(dqp, dq, e.positions(ctx.mb), e.D, e.mc.rope_theta);
  ops::rope_backward(dkp, dk, e.positions(ctx.mb), e.D, e.mc.rope_theta);
  e.tp.column_backward(da, {&wq_->g, &wk_->g, &wv_->g}, {&dqp, &dkp, &dv}, S.a, {&W[1], &W[2], &W[3]});
  Tensor dx = e.work(e.Ns, e.H);
  e.tp.norm_backward(dx, in_norm_->g, da, S.x, S.rstd, W[0]);
  ops::add_(dx, dh);
  saved_.end(ctx.mb);
  return dx;
}

void AttentionBlock::drop(int mb) { saved_.end(mb); }

int64_t attention_block_saved_bytes(const Dims& d) {
  return d.e * (2 * d.Ns * d.H + d.N * (d.a + 2 * d.g) * d.D) + Dims::fp * d.Ns;
}

// Backward: the q/k/v weight gradients' point (with the separate add's largest product,
// q's (a D, H)), or the core's backward.
BlockWorkspace attention_block_workspace(const Dims& d, const BlockWorkspace& core) {
  const int64_t product = d.wgrad_products ? d.e * d.a * d.D * d.H : 0;
  return {std::max(d.e * (d.N * (d.a + d.g) * d.D + d.Ns * d.H + d.N * d.H), d.e * d.N * (d.a + d.g) * d.D + core.forward),
          std::max(d.e * (3 * d.N * (d.a + d.g) * d.D + d.Ns * d.H + 2 * d.N * d.H) + product,
                   d.e * 2 * d.N * (d.a + d.g) * d.D + core.backward)};
}

}  // namespace pb
