/* The distributed decoder's forward and backward (see dist_model.h). Saved activations
 * are allocated as MemCategory::Activations, temporaries as Workspace, gathered
 * buffers as CommBuffers, so the tracking allocator measures each. */
#include "optimized/model/dist_model.h"

#include "optimized/comm/ledger.h"
#include "optimized/kernels/ops.h"
#include "optimized/parallel/tp_vocab.h"

namespace pb {

namespace {
// Activations and their gradients in the model dtype; the per-row statistics (RMSNorm's
// rstd, attention's LSE) in fp32 as Megatron-LM and FlashAttention keep them.
DType g_act = DType::F32;
Tensor act(int64_t r, int64_t c) { return Tensor::empty({r, c}, MemCategory::Activations, g_act); }
Tensor act1(int64_t n) { return Tensor::empty({n}, MemCategory::Activations, DType::F32); }
Tensor stat(int64_t r, int64_t c) { return Tensor::empty({r, c}, MemCategory::Activations, DType::F32); }
Tensor work(int64_t r, int64_t c) { return Tensor::empty({r, c}, MemCategory::Workspace, g_act); }
}  // namespace

// The tensors one layer saves for its backward, and its parameters.
struct DistModel::LayerState {
  ShardedParam *in_norm, *wq, *wk, *wv, *wo, *post_norm, *wg, *wu, *wd;
  Tensor x, rstd1, a, q, k, v, o, lse, h, rstd2, m, g, u, s;
  void release() { x = rstd1 = a = q = k = v = o = lse = h = rstd2 = m = g = u = s = Tensor(); }
};

DistModel::DistModel(const DistModelConfig& cfg, ProcessGrid& grid)
    : cfg_(cfg),
      grid_(grid),
      ctx_{grid.tp(), cfg.features.sp},
      params_(cfg.model, grid.layout().tp, grid.tp_rank(), cfg.seed, cfg.dtype),
      pos_(ref::sequence_positions(cfg.micro_batch_size, cfg.seq_length)) {
  const auto& mc = cfg.model;
  const int t = grid.layout().tp;
  const int64_t N = int64_t(pos_.size());
  dims_ = {N, cfg.features.sp ? N / t : N, mc.hidden_size, mc.head_dim(), mc.num_attention_heads / t,
           mc.num_key_value_heads / t, mc.intermediate_size / t};
  for (int64_t l = 0; l < cfg.model.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    auto L = std::make_unique<LayerState>();
    L->in_norm = &params_.get(p + "input_layernorm.weight");
    L->wq = &params_.get(p + "self_attn.q_proj.weight");
    L->wk = &params_.get(p + "self_attn.k_proj.weight");
    L->wv = &params_.get(p + "self_attn.v_proj.weight");
    L->wo = &params_.get(p + "self_attn.o_proj.weight");
    L->post_norm = &params_.get(p + "post_attention_layernorm.weight");
    L->wg = &params_.get(p + "mlp.gate_proj.weight");
    L->wu = &params_.get(p + "mlp.up_proj.weight");
    L->wd = &params_.get(p + "mlp.down_proj.weight");
    layers_.push_back(std::move(L));
  }
}

DistModel::~DistModel() = default;

void DistModel::layer_forward(size_t l, Tensor& y, const Tensor& x) {
  LayerState& L = *layers_[l];
  const auto& mc = cfg_.model;
  const auto [N, Ns, H, D, Aq, Gk, F] = dims_;
  const float eps = float(mc.rms_norm_eps);
  L.x = x;
  L.a = act(Ns, H);
  L.rstd1 = act1(Ns);
  ops::rmsnorm_forward(L.a, L.rstd1, x, L.in_norm->w, eps);
  Tensor qp = work(N, Aq * D), kp = work(N, Gk * D);
  L.v = act(N, Gk * D);
  column_forward({&qp, &kp, &L.v}, L.a, {&L.wq->w, &L.wk->w, &L.wv->w}, ctx_);
  L.q = act(N, Aq * D);
  L.k = act(N, Gk * D);
  ops::rope_forward(L.q, qp, pos_, D, mc.rope_theta);
  ops::rope_forward(L.k, kp, pos_, D, mc.rope_theta);
  const ops::AttnShape ash{cfg_.micro_batch_size, cfg_.seq_length, Aq, Gk, D};
  L.o = act(N, Aq * D);
  L.lse = stat(cfg_.micro_batch_size * Aq, cfg_.seq_length);
  ops::attention_forward(L.o, L.lse, L.q, L.k, L.v, ash);
  Tensor attn = work(Ns, H);
  row_forward(attn, L.o, L.wo->w, ctx_);
  L.h = act(Ns, H);
  ops::add(L.h, x, attn);
  L.m = act(Ns, H);
  L.rstd2 = act1(Ns);
  ops::rmsnorm_forward(L.m, L.rstd2, L.h, L.post_norm->w, eps);
  L.g = act(N, F);
  L.u = act(N, F);
  column_forward({&L.g, &L.u}, L.m, {&L.wg->w, &L.wu->w}, ctx_);
  L.s = act(N, F);
  ops::swiglu_forward(L.s, L.g, L.u);
  Tensor mlp = work(Ns, H);
  row_forward(mlp, L.s, L.wd->w, ctx_);
  y = act(Ns, H);
  ops::add(y, L.h, mlp);
}

void DistModel::layer_backward(size_t l, Tensor& dx, const Tensor& dy) {
  LayerState& L = *layers_[l];
  const auto& mc = cfg_.model;
  const auto [N, Ns, H, D, Aq, Gk, F] = dims_;
  // MLP branch: y = h + down(swiglu(gate(m), up(m))), m = rmsnorm(h)
  Tensor ds = work(N, F), dg = work(N, F), du = work(N, F), dm = work(Ns, H), dh = work(Ns, H);
  row_backward(ds, L.wd->g, dy, L.s, L.wd->w, ctx_);
  ops::swiglu_backward(dg, du, ds, L.g, L.u);
  column_backward(dm, {&L.wg->g, &L.wu->g}, {&dg, &du}, L.m, {&L.wg->w, &L.wu->w}, ctx_);
  ops::rmsnorm_backward(dh, L.post_norm->g, dm, L.h, L.rstd2, L.post_norm->w);
  ops::add_(dh, dy);
  // Attention branch: h = x + o Wo^T
  Tensor dout = work(N, Aq * D), dq = work(N, Aq * D), dk = work(N, Gk * D), dv = work(N, Gk * D);
  row_backward(dout, L.wo->g, dh, L.o, L.wo->w, ctx_);
  const ops::AttnShape ash{cfg_.micro_batch_size, cfg_.seq_length, Aq, Gk, D};
  ops::attention_backward(dq, dk, dv, dout, L.q, L.k, L.v, L.o, L.lse, ash);
  Tensor dqp = work(N, Aq * D), dkp = work(N, Gk * D), da = work(Ns, H);
  ops::rope_backward(dqp, dq, pos_, D, mc.rope_theta);
  ops::rope_backward(dkp, dk, pos_, D, mc.rope_theta);
  column_backward(da, {&L.wq->g, &L.wk->g, &L.wv->g}, {&dqp, &dkp, &dv}, L.a, {&L.wq->w, &L.wk->w, &L.wv->w}, ctx_);
  ops::rmsnorm_backward(dx, L.in_norm->g, da, L.x, L.rstd1, L.in_norm->w);
  ops::add_(dx, dh);
  L.release();
}

double DistModel::forward_backward(const ref::Batch& batch, float grad_scale) {
  g_act = cfg_.dtype;
  const auto& mc = cfg_.model;
  const int t = grid_.layout().tp;
  const int64_t N = int64_t(pos_.size()), H = mc.hidden_size, Vt = mc.vocab_size / t;
  const int64_t Ns = cfg_.features.sp ? N / t : N;
  const int64_t vocab_start = Vt * grid_.tp_rank();
  auto& embed = params_.get("model.embed_tokens.weight");
  auto& final_norm = params_.get("model.norm.weight");
  auto& head = params_.get("lm_head.weight");
  double loss = 0;
  {
    PhaseScope phase(Phase::Forward);
    Tensor x = act(Ns, H);
    vocab_embedding_forward(x, batch.tokens, embed.w, vocab_start, ctx_);
    for (size_t l = 0; l < layers_.size(); ++l) {
      Tensor y;
      layer_forward(l, y, x);
      x = y;
    }
    final_x_ = x;
    final_rstd_ = act1(Ns);
    final_xf_ = act(Ns, H);
    ops::rmsnorm_forward(final_xf_, final_rstd_, x, final_norm.w, float(mc.rms_norm_eps));
    logits_ = act(N, Vt);
    column_forward({&logits_}, final_xf_, {&head.w}, ctx_);
    loss = vocab_ce_forward(ce_, logits_, batch.labels, vocab_start, ctx_);
  }
  {
    PhaseScope phase(Phase::Backward);
    Tensor dlogits = work(N, Vt), dxf = work(Ns, H), dx = work(Ns, H);
    vocab_ce_backward(dlogits, ce_, logits_, batch.labels, vocab_start, grad_scale);
    column_backward(dxf, {&head.g}, {&dlogits}, final_xf_, {&head.w}, ctx_);
    ops::rmsnorm_backward(dx, final_norm.g, dxf, final_x_, final_rstd_, final_norm.w);
    logits_ = final_xf_ = final_x_ = final_rstd_ = Tensor();
    ce_ = CeState{};
    for (size_t l = layers_.size(); l-- > 0;) {
      Tensor dprev = work(Ns, H);
      layer_backward(l, dprev, dx);
      dx = dprev;
    }
    vocab_embedding_backward(embed.g, dx, batch.tokens, vocab_start, ctx_);
  }
  return loss;
}

}  // namespace pb
