/* The whole decoder: embedding -> L layers -> final RMSNorm -> LM head -> mean
 * cross-entropy (+ the MoE load-balancing losses), forward and hand-written backward.
 *
 *   x0 = embed(tokens)                         (N, H)     N = B*S, row t = b*S + s
 *   x_{l+1} = layer_l(x_l)                     (N, H)
 *   z  = rmsnorm(x_L, g_final) Wlm^T           (N, V)     untied LM head
 *   loss = mean_t CE(z_t, label_t) + sum_l aux_l
 * With an expert capacity factor every MoE layer drops per routing group (moe.h).
 */
#pragma once

#include <vector>

#include "reference/model/data.h"
#include "reference/model/layer.h"
#include "reference/ops/cross_entropy.h"
#include "reference/ops/embedding.h"

namespace pb::ref {

template <class T>
struct Loss {
  T total = 0;  // ce + aux: what is differentiated
  T ce = 0;     // mean cross-entropy
  T aux = 0;    // sum of the layers' load-balancing losses
};

// moe_groups (B*S), in the overloads that take it: the MoE routing group of each token row
// for the expert capacity (TrainConfig::moe_token_groups); empty, and in the overloads
// without it: all B*S rows form one group. Only matters with a capacity factor.

// Forward only. If logits is given it receives (B*S, V).
template <class T>
Loss<T> model_forward(const ModelParams<T>& p, const ModelConfig& cfg, const Batch& batch, Index B, Index S,
                      Mat<T>* logits = nullptr);
template <class T>
Loss<T> model_forward(const ModelParams<T>& p, const ModelConfig& cfg, const Batch& batch, Index B, Index S,
                      const std::vector<int64_t>& moe_groups, Mat<T>* logits = nullptr);

// Forward and backward of one micro-batch. Gradients of (grad_scale * loss) accumulate
// into grads (zero_params-shaped), so m micro-batches with grad_scale 1/m give the
// gradient of the mean loss.
template <class T>
Loss<T> model_forward_backward(ModelParams<T>& grads, const ModelParams<T>& p, const ModelConfig& cfg,
                               const Batch& batch, Index B, Index S, T grad_scale);
template <class T>
Loss<T> model_forward_backward(ModelParams<T>& grads, const ModelParams<T>& p, const ModelConfig& cfg,
                               const Batch& batch, Index B, Index S, T grad_scale,
                               const std::vector<int64_t>& moe_groups);

// The per-row data every layer needs: RoPE positions and MoE routing groups.
inline LayerShape model_layer_shape(Index B, Index S, const std::vector<int64_t>& moe_groups) {
  PB_REQUIRE(moe_groups.empty() || Index(moe_groups.size()) == B * S, "moe_groups holds ", moe_groups.size(),
             " ids, expected B*S = ", B * S);
  return LayerShape{B, S, sequence_positions(B, S), moe_groups};
}

template <class T>
Loss<T> model_forward_backward(ModelParams<T>& grads, const ModelParams<T>& p, const ModelConfig& cfg,
                               const Batch& batch, Index B, Index S, T grad_scale) {
  return model_forward_backward(grads, p, cfg, batch, B, S, grad_scale, std::vector<int64_t>{});
}

template <class T>
Loss<T> model_forward_backward(ModelParams<T>& grads, const ModelParams<T>& p, const ModelConfig& cfg,
                               const Batch& batch, Index B, Index S, T grad_scale,
                               const std::vector<int64_t>& moe_groups) {
  PB_REQUIRE(Index(batch.tokens.size()) == B * S && Index(batch.labels.size()) == B * S,
             "batch holds ", batch.tokens.size(), " tokens, expected B*S = ", B * S);
  const T eps = T(cfg.rms_norm_eps);
  const LayerShape sh = model_layer_shape(B, S, moe_groups);
  const size_t L = p.layers.size();
  // forward
  std::vector<LayerCache<T>> caches(L);
  Mat<T> x, y;
  embedding_forward(x, batch.tokens, p.embed);
  for (size_t l = 0; l < L; ++l) {
    layer_forward(y, caches[l], x, p.layers[l], cfg, sh);
    std::swap(x, y);
  }
  Mat<T> xf, z, dz, dxf, dx;
  Vec<T> rstd, lse;
  rmsnorm_forward(xf, rstd, x, p.final_norm, eps);
  linear_forward(z, xf, p.lm_head);
  Loss<T> loss;
  loss.ce = cross_entropy_forward(lse, z, batch.labels);
  for (const auto& c : caches) loss.aux += c.aux;
  loss.total = loss.ce + loss.aux;
  // backward
  cross_entropy_backward(dz, grad_scale, z, lse, batch.labels);
  linear_backward(dxf, grads.lm_head, dz, xf, p.lm_head);
  rmsnorm_backward(dx, grads.final_norm, dxf, x, rstd, p.final_norm);
  for (size_t l = L; l-- > 0;) {
    layer_backward(y, grads.layers[l], dx, grad_scale, caches[l], p.layers[l], cfg, sh);
    std::swap(dx, y);
  }
  embedding_backward(grads.embed, dx, batch.tokens);
  return loss;
}

template <class T>
Loss<T> model_forward(const ModelParams<T>& p, const ModelConfig& cfg, const Batch& batch, Index B, Index S,
                      Mat<T>* logits) {
  return model_forward(p, cfg, batch, B, S, std::vector<int64_t>{}, logits);
}

template <class T>
Loss<T> model_forward(const ModelParams<T>& p, const ModelConfig& cfg, const Batch& batch, Index B, Index S,
                      const std::vector<int64_t>& moe_groups, Mat<T>* logits) {
  const LayerShape sh = model_layer_shape(B, S, moe_groups);
  Mat<T> x, y, xf, z;
  Vec<T> rstd, lse;
  LayerCache<T> cache;
  Loss<T> loss;
  embedding_forward(x, batch.tokens, p.embed);
  for (const auto& layer : p.layers) {
    layer_forward(y, cache, x, layer, cfg, sh);
    loss.aux += cache.aux;
    std::swap(x, y);
  }
  rmsnorm_forward(xf, rstd, x, p.final_norm, T(cfg.rms_norm_eps));
  linear_forward(z, xf, p.lm_head);
  loss.ce = cross_entropy_forward(lse, z, batch.labels);
  loss.total = loss.ce + loss.aux;
  if (logits) *logits = std::move(z);
  return loss;
}

extern template Loss<float> model_forward_backward(ModelParams<float>&, const ModelParams<float>&,
                                                   const ModelConfig&, const Batch&, Index, Index, float);
extern template Loss<double> model_forward_backward(ModelParams<double>&, const ModelParams<double>&,
                                                    const ModelConfig&, const Batch&, Index, Index, double);
extern template Loss<float> model_forward(const ModelParams<float>&, const ModelConfig&, const Batch&, Index,
                                          Index, Mat<float>*);
extern template Loss<double> model_forward(const ModelParams<double>&, const ModelConfig&, const Batch&, Index,
                                           Index, Mat<double>*);

}  // namespace pb::ref
