/* One Llama decoder layer (Touvron et al., arXiv 2302.13971), forward and backward.
 *
 *   a  = rmsnorm(x, g_in)                                   (N, H)     N = B*S
 *   q  = rope(a Wq^T), k = rope(a Wk^T), v = a Wv^T         (N, A*D), (N, G*D), (N, G*D)
 *   o, lse = causal_attention(q, k, v)                      (N, A*D), (B*A, S)
 *   h  = x + o Wo^T                                         (N, H)
 *   m  = rmsnorm(h, g_post)                                 (N, H)
 *   y  = h + mlp(m)   or   h + moe(m)                       (N, H)
 * Backward runs the same steps in reverse; the residuals pass the gradient through twice.
 */
#pragma once

#include "reference/model/config.h"
#include "reference/model/mlp.h"
#include "reference/model/moe.h"
#include "reference/model/params.h"
#include "reference/ops/attention.h"
#include "reference/ops/rmsnorm.h"
#include "reference/ops/rope.h"

namespace pb::ref {

template <class T>
struct LayerCache {
  Mat<T> x;                 // (N, H) layer input
  Vec<T> rstd1, rstd2;      // (N)
  Mat<T> a, q, k, v, o;     // (N, H), (N, A*D), (N, G*D), (N, G*D), (N, A*D); q, k after RoPE
  Mat<T> lse;               // (B*A, S)
  Mat<T> h, m;              // (N, H) after the attention residual, and its norm
  MlpCache<T> mlp;
  MoeCache<T> moe;
  T aux = 0;                // this layer's load-balancing loss (MoE only)
};

struct LayerShape {
  Index B, S;
  std::vector<int64_t> pos;  // (B*S) RoPE position of each token row
  std::vector<int64_t> moe_groups;  // (B*S) MoE routing group of each token row, empty: one
                                    // group (TrainConfig::moe_token_groups)
};

template <class T>
void layer_forward(Mat<T>& y, LayerCache<T>& c, const Mat<T>& x, const LayerParams<T>& p, const ModelConfig& cfg,
                   const LayerShape& sh) {
  const Index A = cfg.num_attention_heads, G = cfg.num_key_value_heads, D = cfg.head_dim();
  const T eps = T(cfg.rms_norm_eps);
  const AttentionShape ash{sh.B, sh.S, sh.S, A, G, D};
  const auto seq_pos = iota_positions(sh.S);
  c.x = x;
  rmsnorm_forward(c.a, c.rstd1, x, p.input_norm, eps);
  Mat<T> qp, kp, attn;
  linear_forward(qp, c.a, p.wq);
  linear_forward(kp, c.a, p.wk);
  linear_forward(c.v, c.a, p.wv);
  rope_forward(c.q, qp, sh.pos, D, cfg.rope_theta);
  rope_forward(c.k, kp, sh.pos, D, cfg.rope_theta);
  attention_forward(c.o, c.lse, c.q, c.k, c.v, ash, seq_pos, seq_pos);
  linear_forward(attn, c.o, p.wo);
  c.h = x + attn;
  rmsnorm_forward(c.m, c.rstd2, c.h, p.post_norm, eps);
  Mat<T> f;
  if (p.experts.empty()) {
    mlp_forward(f, c.mlp, c.m, p.gate, p.up, p.down);
    c.aux = 0;
  } else {
    moe_forward(f, c.moe, c.m, p, int(cfg.num_experts_per_tok), cfg.norm_topk_prob, T(cfg.router_aux_loss_coef),
                cfg.moe_expert_capacity_factor, sh.moe_groups);
    c.aux = c.moe.r.aux;
  }
  y = c.h + f;
}

// dx overwritten; grads in g accumulate. daux: gradient into this layer's aux loss.
template <class T>
void layer_backward(Mat<T>& dx, LayerParams<T>& g, const Mat<T>& dy, T daux, const LayerCache<T>& c,
                    const LayerParams<T>& p, const ModelConfig& cfg, const LayerShape& sh) {
  const Index A = cfg.num_attention_heads, G = cfg.num_key_value_heads, D = cfg.head_dim();
  const AttentionShape ash{sh.B, sh.S, sh.S, A, G, D};
  const auto seq_pos = iota_positions(sh.S);
  // MLP / MoE branch: y = h + f(rmsnorm(h))
  Mat<T> dm, dh;
  if (p.experts.empty())
    mlp_backward(dm, g.gate, g.up, g.down, dy, c.mlp, p.gate, p.up, p.down);
  else
    moe_backward(dm, g, dy, daux, c.moe, p, int(cfg.num_experts_per_tok), cfg.norm_topk_prob,
                 T(cfg.router_aux_loss_coef));
  rmsnorm_backward(dh, g.post_norm, dm, c.h, c.rstd2, p.post_norm);
  dh += dy;
  // Attention branch: h = x + o Wo^T
  Mat<T> dout, dq, dk, dv, dqp, dkp, da, da_k, da_v;
  linear_backward(dout, g.wo, dh, c.o, p.wo);
  attention_backward(dq, dk, dv, dout, c.q, c.k, c.v, c.o, c.lse, ash, seq_pos, seq_pos);
  rope_backward(dqp, dq, sh.pos, D, cfg.rope_theta);
  rope_backward(dkp, dk, sh.pos, D, cfg.rope_theta);
  linear_backward(da, g.wq, dqp, c.a, p.wq);
  linear_backward(da_k, g.wk, dkp, c.a, p.wk);
  linear_backward(da_v, g.wv, dv, c.a, p.wv);
  da += da_k + da_v;
  rmsnorm_backward(dx, g.input_norm, da, c.x, c.rstd1, p.input_norm);
  dx += dh;
}

}  // namespace pb::ref
