/* The MoE MLP (see mlp_moe.h). */
#include "optimized/model/mlp_moe.h"

#include <algorithm>

#include "optimized/model/block.h"

namespace pb {

namespace {

struct MoeSaved final : Mlp::Saved {
  Tensor m;                        // (T, H) the block's input (shared, not a copy)
  Tensor probs, w;                 // (T, E), (T, K) fp32
  IndexTensor idx;                 // (T*K)
  std::vector<double> aux_grad;    // (E) d aux / d p_te, scaled
  std::unique_ptr<TokenDispatcher::State> route;
  std::vector<int64_t> sizes;      // (E/EP) rows per local expert
  Tensor x, p, g, u, s, o;         // (R, H), (R, 1) fp32, (R, F_e) x 3, (R, H)
  std::vector<Tensor*> tensors() override { return {&m, &probs, &w, &x, &p, &g, &u, &s, &o}; }
};

// A group's (E/EP * out, in) tensor as the grouped GEMMs' (E/EP, out, in).
Tensor grouped(const Tensor& t, const ShardedParam& g) {
  return t.view(0, {g.rows / g.global_rows, g.global_rows, g.global_cols});
}

// t in fp32: itself, or a Workspace copy.
Tensor as_f32(const Tensor& t) {
  if (t.dtype() == DType::F32) return t;
  Tensor c = Tensor::empty(t.shape(), MemCategory::Workspace, DType::F32);
  ops::cast(c, t);
  return c;
}

}  // namespace

MoeMlp::MoeMlp(const BlockEnv& env, int64_t layer, std::unique_ptr<TokenDispatcher> dispatcher)
    : env_(env),
      layer_(layer),
      router_(&env.params.get("model.layers." + std::to_string(layer) + ".block_sparse_moe.gate.weight")),
      w1_(&env.params.expert_group(layer, "w1")),
      w3_(&env.params.expert_group(layer, "w3")),
      w2_(&env.params.expert_group(layer, "w2")),
      dispatcher_(std::move(dispatcher)) {}

std::unique_ptr<Mlp::Saved> MoeMlp::forward(Tensor& f, const Tensor& m, BlockCtx& ctx) {
  const auto& e = env_;
  const auto& mc = e.mc;
  const int64_t T = m.rows(), H = e.H, E = mc.num_local_experts, K = mc.num_experts_per_tok;
  auto s = std::make_unique<MoeSaved>();
  s->m = m;
  Weights W(e.provider, {router_});
  std::vector<int64_t> idx;
  std::vector<double> prob_sums;
  s->probs = Tensor::empty({T, E}, MemCategory::Activations, DType::F32);
  s->w = Tensor::empty({T, K}, MemCategory::Activations, DType::F32);
  {
    Tensor logits = Tensor::empty({T, E}, MemCategory::Workspace, DType::F32);  // (T, E)
    ops::linear_forward(logits, as_f32(m), as_f32(W[0]));
    ops::moe_router_forward(s->probs, s->w, idx, prob_sums, logits, K, mc.norm_topk_prob);
  }
  s->idx = IndexTensor(idx);
  const RoutingPlan plan = plan_routing(std::move(idx), host_floats(s->w), T, E, K, mc.moe_expert_capacity_factor);
  RoutingRecord again;  // a recompute routes the same tokens again: logged once
  RoutingRecord& rec = ctx.recompute ? again : RoutingLog::get().add(layer_);
  rec.tokens = T;
  rec.dropped = plan.dropped;
  // The load-balancing loss: this rank's share, and the gradient of the whole.
  if (mc.router_aux_loss_coef > 0) {
    std::vector<float> c(plan.count.begin(), plan.count.end());  // exact below 2^24
    if (e.tp_cp->size() > 1) {
      Tensor counts = tensor_of(c, {E}, MemCategory::CommBuffers);
      e.tp_cp->all_reduce(counts);
      c = host_floats(counts);
    }
    const double Ng = double(T) * e.tp_cp->size(), coef = mc.router_aux_loss_coef;
    const double scale = coef * double(E) / (Ng * Ng * double(K));
    double aux = 0;
    s->aux_grad.assign(size_t(E), 0.0);
    for (int64_t j = 0; j < E; ++j) {
      aux += scale * double(c[size_t(j)]) * prob_sums[size_t(j)];
      s->aux_grad[size_t(j)] = double(ctx.grad_scale) * double(e.cp->size()) * scale * double(c[size_t(j)]);
    }
    if (!ctx.recompute) ctx.aux += aux * double(ctx.grad_scale);
  } else {
    s->aux_grad.assign(size_t(E), 0.0);
  }
  s->route = dispatcher_->dispatch(s->x, s->p, s->sizes, m, s->w, plan, rec);
  const int64_t R = s->x.rows(), Fe = mc.expert_ffn();
  Weights X(e.provider, {w1_, w3_, w2_});
  const Tensor W1 = grouped(X[0], *w1_), W3 = grouped(X[1], *w3_), W2 = grouped(X[2], *w2_);
  s->g = e.act(R, Fe);
  s->u = e.act(R, Fe);
  ops::grouped_linear_forward(s->g, s->x, W1, s->sizes);
  ops::grouped_linear_forward(s->u, s->x, W3, s->sizes);
  s->s = e.act(R, Fe);
  ops::swiglu_forward(s->s, s->g, s->u);
  s->o = e.act(R, H);
  ops::grouped_linear_forward(s->o, s->s, W2, s->sizes);
  {
    Tensor y = e.work(R, H);  // (R, H) weighted by the router
    ops::scale_rows(y, s->o, s->p);
    f = e.work(T, H);
    dispatcher_->combine(f, y, *s->route);
  }
  return s;
}

namespace {
// dW += dy^T x now, or queued for W under a split backward (zero bubble); grouped with
// group sizes (the experts), through the gradient sink without (the router).
void weight_grad(WGradQueue* q, GradSink& sink, Tensor dw, const Tensor& dy, const Tensor& x,
                 const std::vector<int64_t>& groups) {
  if (q)
    q->push_back({dw, dy, x, groups});
  else if (groups.empty())
    sink.linear_weight_grad(dw, dy, x);
  else
    ops::grouped_linear_backward_weight(dw, dy, x, groups);
}
}  // namespace

void MoeMlp::backward(Tensor& dm, const Tensor& df, Saved& saved) {
  const auto& e = env_;
  WGradQueue* q = e.tp.deferring();
  const auto& mc = e.mc;
  auto& s = static_cast<MoeSaved&>(saved);
  const int64_t T = s.m.rows(), H = e.H, E = mc.num_local_experts, K = mc.num_experts_per_tok;
  const int64_t R = s.x.rows(), Fe = mc.expert_ffn();
  Tensor G1 = grouped(w1_->g, *w1_), G3 = grouped(w3_->g, *w3_), G2 = grouped(w2_->g, *w2_);
  Tensor dx = e.work(R, H);
  Tensor dp = Tensor::empty({R, 1}, MemCategory::Workspace, DType::F32);
  {
    Tensor dy = e.work(R, H);  // (R, H)
    dispatcher_->combine_backward(dy, df, *s.route);
    ops::row_dot(dp, dy, s.o);   // d p = dy . o
    ops::scale_rows(dy, dy, s.p);  // d o = p dy
    Tensor dg = e.work(R, Fe), du = e.work(R, Fe);
    Weights X(e.provider, {w1_, w3_, w2_});
    const Tensor W1 = grouped(X[0], *w1_), W3 = grouped(X[1], *w3_), W2 = grouped(X[2], *w2_);
    {
      Tensor ds = e.work(R, Fe);
      ops::grouped_linear_backward_input(ds, dy, W2, s.sizes);
      weight_grad(q, e.tp.sink(), G2, dy, s.s, s.sizes);
      ops::swiglu_backward(dg, du, ds, s.g, s.u);
    }
    ops::grouped_linear_backward_input(dx, dg, W1, s.sizes);
    {
      Tensor dxu = e.work(R, H);
      ops::grouped_linear_backward_input(dxu, du, W3, s.sizes);
      ops::add_(dx, dxu);
    }
    weight_grad(q, e.tp.sink(), G1, dg, s.x, s.sizes);
    weight_grad(q, e.tp.sink(), G3, du, s.x, s.sizes);
  }
  Tensor dw = Tensor::empty({T, K}, MemCategory::Workspace, DType::F32);  // (T, K)
  dispatcher_->dispatch_backward(dm, dw, dx, dp, *s.route);
  dx = Tensor(), dp = Tensor();
  // The router, in fp32.
  Weights W(e.provider, {router_});
  Tensor dlogits = Tensor::empty({T, E}, MemCategory::Workspace, DType::F32);  // (T, E)
  ops::moe_router_backward(dlogits, dw, s.probs, s.w, s.idx, s.aux_grad, K, mc.norm_topk_prob);
  dw = Tensor();
  weight_grad(q, e.tp.sink(), router_->g, dlogits, as_f32(s.m), {});
  Tensor dm32 = Tensor::empty({T, H}, MemCategory::Workspace, DType::F32);
  ops::linear_backward_input(dm32, dlogits, as_f32(W[0]));
  if (dm.dtype() == DType::F32) {
    ops::add_(dm, dm32);
  } else {
    Tensor c = e.work(T, H);
    ops::cast(c, dm32);
    ops::add_(dm, c);
  }
  s = MoeSaved{};
}

MoeLayerBytes moe_layer_bytes(const Dims& d, int64_t R, bool split) {
  const int64_t T = d.Ns, H = d.H, E = d.E, K = d.K, F = d.Fe, e = d.e, fp = Dims::fp;
  const bool bf16 = e != fp;
  MoeLayerBytes b;
  b.saved = fp * T * (E + K) + R * (2 * e * H + 3 * e * F + fp);
  b.ws.forward = std::max(fp * T * E + (bf16 ? fp * T * H + fp * E * H : 0), e * R * H + e * T * H);
  // Backward phases, after the block's dm: the experts; the combine's backward; the router;
  // its fp32 weight and input gradients; the block's dh. Under a split backward the expert
  // gradients' inputs (dy, dg, du) stay from the experts on, dlogits (and m32) from the router on.
  const int64_t dm = e * T * H, experts_kept = split ? e * R * H + 2 * e * R * F : 0;
  const int64_t router_kept = split ? fp * T * E + (bf16 ? fp * T * H : 0) : 0;
  const int64_t experts = dm + 2 * e * R * H + fp * R + 2 * e * R * F + e * R * std::max(F, H);
  const int64_t combine = dm + e * R * H + fp * R + fp * T * K + experts_kept;
  const int64_t router = dm + fp * T * (K + E) + experts_kept;
  const int64_t m32 = bf16 ? fp * T * H : 0;  // kept (split) or freed before dm32
  const int64_t dm32 = fp * T * H + (bf16 ? std::max(fp * E * H, e * T * H) : 0);
  const int64_t router_grads = dm + fp * T * E + experts_kept + (split ? m32 : 0) + dm32;  // dm32 >= m32
  b.ws.backward = std::max({experts, combine, router, router_grads, 2 * dm + experts_kept + router_kept});
  if (split) {
    b.act_kept = e * R * (H + F) + (bf16 ? 0 : e * T * H);
    b.ws_kept = experts_kept + router_kept;
  }
  return b;
}

}  // namespace pb
