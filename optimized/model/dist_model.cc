/* The distributed decoder's forward and backward (see dist_model.h). Saved activations
 * are allocated as MemCategory::Activations, temporaries as Workspace, gathered
 * buffers as CommBuffers, so the tracking allocator measures each. */
#include "optimized/model/dist_model.h"

#include "optimized/comm/ledger.h"
#include "optimized/kernels/ops.h"
#include "optimized/parallel/pp_schedule.h"
#include "optimized/parallel/tp_vocab.h"
#include "reference/common/error.h"

namespace pb {

namespace {
// Per-row statistics (RMSNorm's rstd, attention's LSE) stay fp32, as Megatron-LM and
// FlashAttention keep them; activations and their gradients are in the model dtype.
Tensor act1(int64_t n) { return Tensor::empty({n}, MemCategory::Activations, DType::F32); }
Tensor stat(int64_t r, int64_t c) { return Tensor::empty({r, c}, MemCategory::Activations, DType::F32); }
}  // namespace

Tensor DistModel::act(int64_t r, int64_t c) const { return Tensor::empty({r, c}, MemCategory::Activations, cfg_.dtype); }
Tensor DistModel::work(int64_t r, int64_t c) const { return Tensor::empty({r, c}, MemCategory::Workspace, cfg_.dtype); }

// One layer's parameters, and the tensors it saves for its backward.
struct DistModel::LayerWeights {
  ShardedParam *in_norm, *wq, *wk, *wv, *wo, *post_norm, *wg, *wu, *wd;
};
struct DistModel::LayerActs {
  Tensor x, rstd1, a, q, k, v, o, lse, h, rstd2, m, g, u, s;
};
// What one micro-batch saved in one chunk: its layers' tensors, the head's on the last
// stage, the tokens / labels it needs in backward, and (split backward) its queued
// weight gradients.
struct DistModel::ChunkActs {
  std::vector<LayerActs> layers;
  Tensor final_x, final_rstd, final_xf, logits;
  CeState ce;
  std::vector<int64_t> tokens, labels;
  float grad_scale = 1;
  WGradQueue wgrads;
};

// The pipeline stage of chunk c on pipeline rank r (pp_schedule.h: interleaved or V).
static int stage_at(const DistModelConfig& cfg, const ProcessGrid& grid, int r, int c) {
  pp::Schedule placement;
  placement.p = grid.layout().pp;
  placement.v = grid.layout().vpp;
  placement.vshape = cfg.vshape;
  return placement.stage(r, c);
}

static bool layer_in(const std::string& name, int64_t l0, int64_t l1) {
  if (!name.starts_with("model.layers.")) return false;
  const int64_t l = std::stoll(name.substr(13));
  return l >= l0 && l < l1;
}

DistModel::DistModel(const DistModelConfig& cfg, ProcessGrid& grid)
    : cfg_(cfg),
      grid_(grid),
      ctx_{grid.tp(), cfg.features.sp},
      params_(cfg.model, grid.layout().tp, grid.tp_rank(), cfg.seed, cfg.dtype,
              [&](const std::string& name) {
                const int v = grid.layout().vpp, S = grid.layout().pp * v;
                const int64_t per = cfg.model.num_hidden_layers / S;
                bool first = false, last = false;
                for (int c = 0; c < v; ++c) {
                  const int s = stage_at(cfg, grid, grid.pp_rank(), c);
                  first = first || s == 0;
                  last = last || s == S - 1;
                  if (layer_in(name, s * per, (s + 1) * per)) return true;
                }
                if (name == "model.embed_tokens.weight") return first;
                return (name == "model.norm.weight" || name == "lm_head.weight") && last;
              }),
      pos_(ref::sequence_positions(cfg.micro_batch_size, cfg.seq_length)) {
  const auto& mc = cfg.model;
  const int t = grid.layout().tp, p = grid.layout().pp, v = grid.layout().vpp;
  const int64_t N = int64_t(pos_.size());
  dims_ = {N, cfg.features.sp ? N / t : N, mc.hidden_size, mc.head_dim(), mc.num_attention_heads / t,
           mc.num_key_value_heads / t, mc.intermediate_size / t};
  const int64_t per = mc.num_hidden_layers / (p * v);
  for (int c = 0; c < v; ++c) {
    const int64_t s = stage_at(cfg, grid, grid.pp_rank(), c);
    chunk_layers_.push_back({s * per, (s + 1) * per});
    for (int64_t l = s * per; l < (s + 1) * per; ++l) {
      const std::string pre = "model.layers." + std::to_string(l) + ".";
      auto W = std::make_unique<LayerWeights>();
      W->in_norm = &params_.get(pre + "input_layernorm.weight");
      W->wq = &params_.get(pre + "self_attn.q_proj.weight");
      W->wk = &params_.get(pre + "self_attn.k_proj.weight");
      W->wv = &params_.get(pre + "self_attn.v_proj.weight");
      W->wo = &params_.get(pre + "self_attn.o_proj.weight");
      W->post_norm = &params_.get(pre + "post_attention_layernorm.weight");
      W->wg = &params_.get(pre + "mlp.gate_proj.weight");
      W->wu = &params_.get(pre + "mlp.up_proj.weight");
      W->wd = &params_.get(pre + "mlp.down_proj.weight");
      weights_[l] = std::move(W);
    }
  }
}

DistModel::~DistModel() = default;

int DistModel::stage_of(int chunk) const { return stage_at(cfg_, grid_, grid_.pp_rank(), chunk); }
bool DistModel::last_stage(int chunk) const { return stage_of(chunk) == grid_.layout().pp * grid_.layout().vpp - 1; }
Tensor DistModel::boundary_activation() const { return act(dims_.Ns, dims_.H); }
Tensor DistModel::boundary_gradient() const { return work(dims_.Ns, dims_.H); }

void DistModel::layer_forward(const LayerWeights& W, LayerActs& L, Tensor& y, const Tensor& x) {
  const auto& mc = cfg_.model;
  const auto [N, Ns, H, D, Aq, Gk, F] = dims_;
  const float eps = float(mc.rms_norm_eps);
  L.x = x;
  L.a = act(Ns, H);
  L.rstd1 = act1(Ns);
  ops::rmsnorm_forward(L.a, L.rstd1, x, W.in_norm->w, eps);
  Tensor qp = work(N, Aq * D), kp = work(N, Gk * D);
  L.v = act(N, Gk * D);
  column_forward({&qp, &kp, &L.v}, L.a, {&W.wq->w, &W.wk->w, &W.wv->w}, ctx_);
  L.q = act(N, Aq * D);
  L.k = act(N, Gk * D);
  ops::rope_forward(L.q, qp, pos_, D, mc.rope_theta);
  ops::rope_forward(L.k, kp, pos_, D, mc.rope_theta);
  const ops::AttnShape ash{cfg_.micro_batch_size, cfg_.seq_length, Aq, Gk, D};
  L.o = act(N, Aq * D);
  L.lse = stat(cfg_.micro_batch_size * Aq, cfg_.seq_length);
  ops::attention_forward(L.o, L.lse, L.q, L.k, L.v, ash);
  Tensor attn = work(Ns, H);
  row_forward(attn, L.o, W.wo->w, ctx_);
  L.h = act(Ns, H);
  ops::add(L.h, x, attn);
  L.m = act(Ns, H);
  L.rstd2 = act1(Ns);
  ops::rmsnorm_forward(L.m, L.rstd2, L.h, W.post_norm->w, eps);
  L.g = act(N, F);
  L.u = act(N, F);
  column_forward({&L.g, &L.u}, L.m, {&W.wg->w, &W.wu->w}, ctx_);
  L.s = act(N, F);
  ops::swiglu_forward(L.s, L.g, L.u);
  Tensor mlp = work(Ns, H);
  row_forward(mlp, L.s, W.wd->w, ctx_);
  y = act(Ns, H);
  ops::add(y, L.h, mlp);
}

void DistModel::layer_backward(const LayerWeights& W, LayerActs& L, Tensor& dx, const Tensor& dy) {
  const auto& mc = cfg_.model;
  const auto [N, Ns, H, D, Aq, Gk, F] = dims_;
  // MLP branch: y = h + down(swiglu(gate(m), up(m))), m = rmsnorm(h)
  Tensor ds = work(N, F), dg = work(N, F), du = work(N, F), dm = work(Ns, H), dh = work(Ns, H);
  row_backward(ds, W.wd->g, dy, L.s, W.wd->w, ctx_);
  ops::swiglu_backward(dg, du, ds, L.g, L.u);
  column_backward(dm, {&W.wg->g, &W.wu->g}, {&dg, &du}, L.m, {&W.wg->w, &W.wu->w}, ctx_);
  ops::rmsnorm_backward(dh, W.post_norm->g, dm, L.h, L.rstd2, W.post_norm->w);
  ops::add_(dh, dy);
  // Attention branch: h = x + o Wo^T
  Tensor dout = work(N, Aq * D), dq = work(N, Aq * D), dk = work(N, Gk * D), dv = work(N, Gk * D);
  row_backward(dout, W.wo->g, dh, L.o, W.wo->w, ctx_);
  const ops::AttnShape ash{cfg_.micro_batch_size, cfg_.seq_length, Aq, Gk, D};
  ops::attention_backward(dq, dk, dv, dout, L.q, L.k, L.v, L.o, L.lse, ash);
  Tensor dqp = work(N, Aq * D), dkp = work(N, Gk * D), da = work(Ns, H);
  ops::rope_backward(dqp, dq, pos_, D, mc.rope_theta);
  ops::rope_backward(dkp, dk, pos_, D, mc.rope_theta);
  column_backward(da, {&W.wq->g, &W.wk->g, &W.wv->g}, {&dqp, &dkp, &dv}, L.a, {&W.wq->w, &W.wk->w, &W.wv->w}, ctx_);
  ops::rmsnorm_backward(dx, W.in_norm->g, da, L.x, L.rstd1, W.in_norm->w);
  ops::add_(dx, dh);
  L = LayerActs{};  // what a queued weight gradient still needs stays alive through the queue
}

Tensor DistModel::forward_chunk(int c, int mb, const ref::Batch& batch, const Tensor& x_in, float grad_scale,
                                double* loss) {
  PhaseScope phase(Phase::Forward);
  const auto& mc = cfg_.model;
  const int t = grid_.layout().tp;
  const auto [N, Ns, H, D, Aq, Gk, F] = dims_;
  const int64_t Vt = mc.vocab_size / t, vocab_start = Vt * grid_.tp_rank();
  auto& A = acts_[{c, mb}];
  PB_REQUIRE(!A, "pipeline: micro-batch ", mb, " is already in flight in chunk ", c);
  A = std::make_unique<ChunkActs>();
  A->grad_scale = grad_scale;
  Tensor x;
  if (first_stage(c)) {
    A->tokens = batch.tokens;
    x = act(Ns, H);
    vocab_embedding_forward(x, batch.tokens, params_.get("model.embed_tokens.weight").w, vocab_start, ctx_);
  } else {
    x = x_in;
  }
  const auto [l0, l1] = chunk_layers_[size_t(c)];
  A->layers.resize(size_t(l1 - l0));
  for (int64_t l = l0; l < l1; ++l) {
    Tensor y;
    layer_forward(*weights_.at(l), A->layers[size_t(l - l0)], y, x);
    x = y;
  }
  if (!last_stage(c)) return x;
  A->labels = batch.labels;
  A->final_x = x;
  A->final_rstd = act1(Ns);
  A->final_xf = act(Ns, H);
  ops::rmsnorm_forward(A->final_xf, A->final_rstd, x, params_.get("model.norm.weight").w, float(mc.rms_norm_eps));
  A->logits = act(N, Vt);
  column_forward({&A->logits}, A->final_xf, {&params_.get("lm_head.weight").w}, ctx_);
  *loss = vocab_ce_forward(A->ce, A->logits, batch.labels, vocab_start, ctx_);
  return Tensor();
}

Tensor DistModel::backward_chunk(int c, int mb, const Tensor& dy_in, bool split_w) {
  PhaseScope phase(Phase::Backward);
  const auto it = acts_.find({c, mb});
  PB_REQUIRE(it != acts_.end(), "pipeline: backward of micro-batch ", mb, " in chunk ", c, " before its forward");
  ChunkActs& A = *it->second;
  const auto [N, Ns, H, D, Aq, Gk, F] = dims_;
  const int64_t Vt = cfg_.model.vocab_size / grid_.layout().tp, vocab_start = Vt * grid_.tp_rank();
  ctx_.defer = split_w ? &A.wgrads : nullptr;
  Tensor dy = dy_in;
  if (last_stage(c)) {
    auto& final_norm = params_.get("model.norm.weight");
    auto& head = params_.get("lm_head.weight");
    Tensor dlogits = work(N, Vt), dxf = work(Ns, H);
    dy = work(Ns, H);
    vocab_ce_backward(dlogits, A.ce, A.logits, A.labels, vocab_start, A.grad_scale);
    column_backward(dxf, {&head.g}, {&dlogits}, A.final_xf, {&head.w}, ctx_);
    ops::rmsnorm_backward(dy, final_norm.g, dxf, A.final_x, A.final_rstd, final_norm.w);
    A.logits = A.final_xf = A.final_x = A.final_rstd = Tensor();
    A.ce = CeState{};
  }
  const auto [l0, l1] = chunk_layers_[size_t(c)];
  for (int64_t l = l1; l-- > l0;) {
    Tensor dprev = work(Ns, H);
    layer_backward(*weights_.at(l), A.layers[size_t(l - l0)], dprev, dy);
    dy = dprev;
  }
  ctx_.defer = nullptr;
  Tensor dx;
  if (first_stage(c))
    vocab_embedding_backward(params_.get("model.embed_tokens.weight").g, dy, A.tokens, vocab_start, ctx_);
  else
    dx = dy;
  if (!split_w) acts_.erase(it);
  return dx;
}

void DistModel::weight_grad_chunk(int c, int mb) {
  PhaseScope phase(Phase::Backward);
  const auto it = acts_.find({c, mb});
  PB_REQUIRE(it != acts_.end(), "pipeline: W of micro-batch ", mb, " in chunk ", c, " without its B");
  run_wgrads(it->second->wgrads);
  acts_.erase(it);
}

double DistModel::forward_backward(const ref::Batch& batch, float grad_scale) {
  PB_REQUIRE(chunks() == 1 && last_stage(0) && first_stage(0), "forward_backward: a pipeline needs a schedule");
  double loss = 0;
  forward_chunk(0, 0, batch, Tensor(), grad_scale, &loss);
  backward_chunk(0, 0, Tensor(), false);
  return loss;
}

}  // namespace pb
