/* The parameters of the decoder, with their Hugging Face names and shapes.
 *
 * Shapes ([out, in] as nn.Linear):
 *   model.embed_tokens.weight                         (V, H)
 *   model.layers.{l}.input_layernorm.weight           (H)
 *   model.layers.{l}.self_attn.{q,k,v,o}_proj.weight  q (A*D, H), k/v (G*D, H), o (H, A*D)
 *   model.layers.{l}.post_attention_layernorm.weight  (H)
 *   dense: model.layers.{l}.mlp.{gate,up,down}_proj.weight        gate/up (F, H), down (H, F)
 *   MoE  : model.layers.{l}.block_sparse_moe.gate.weight          (E, H) router
 *          model.layers.{l}.block_sparse_moe.experts.{e}.w1.weight (F, H) gate
 *          model.layers.{l}.block_sparse_moe.experts.{e}.w3.weight (F, H) up
 *          model.layers.{l}.block_sparse_moe.experts.{e}.w2.weight (H, F) down
 *   model.norm.weight (H), lm_head.weight (V, H)  (untied)
 * Norm weights are stored as (1, H) rows and written to files as 1-D [H].
 */
#pragma once

#include <string>
#include <vector>

#include "reference/common/tensor.h"
#include "reference/model/config.h"

namespace pb::ref {

template <class T>
struct ExpertParams {
  Mat<T> w1, w3, w2;  // gate (F, H), up (F, H), down (H, F)
};

template <class T>
struct LayerParams {
  Mat<T> input_norm;                  // (1, H)
  Mat<T> wq, wk, wv, wo;              // (A*D, H), (G*D, H), (G*D, H), (H, A*D)
  Mat<T> post_norm;                   // (1, H)
  Mat<T> gate, up, down;              // dense MLP: (F, H), (F, H), (H, F); empty in MoE layers
  Mat<T> router;                      // MoE: (E, H); empty in dense layers
  std::vector<ExpertParams<T>> experts;
};

template <class T>
struct ModelParams {
  Mat<T> embed;                       // (V, H)
  std::vector<LayerParams<T>> layers;
  Mat<T> final_norm;                  // (1, H)
  Mat<T> lm_head;                     // (V, H)
};

// Calls f(name, matrix, is_vector) for every parameter, in a fixed order (the order of the
// model's forward). Works for const and non-const ModelParams.
template <class P, class F>
void for_each_param(P& p, F&& f) {
  f(std::string("model.embed_tokens.weight"), p.embed, false);
  for (size_t l = 0; l < p.layers.size(); ++l) {
    auto& L = p.layers[l];
    const std::string pre = "model.layers." + std::to_string(l) + ".";
    f(pre + "input_layernorm.weight", L.input_norm, true);
    f(pre + "self_attn.q_proj.weight", L.wq, false);
    f(pre + "self_attn.k_proj.weight", L.wk, false);
    f(pre + "self_attn.v_proj.weight", L.wv, false);
    f(pre + "self_attn.o_proj.weight", L.wo, false);
    f(pre + "post_attention_layernorm.weight", L.post_norm, true);
    if (L.experts.empty()) {
      f(pre + "mlp.gate_proj.weight", L.gate, false);
      f(pre + "mlp.up_proj.weight", L.up, false);
      f(pre + "mlp.down_proj.weight", L.down, false);
    } else {
      f(pre + "block_sparse_moe.gate.weight", L.router, false);
      for (size_t e = 0; e < L.experts.size(); ++e) {
        const std::string ex = pre + "block_sparse_moe.experts." + std::to_string(e) + ".";
        f(ex + "w1.weight", L.experts[e].w1, false);
        f(ex + "w2.weight", L.experts[e].w2, false);
        f(ex + "w3.weight", L.experts[e].w3, false);
      }
    }
  }
  f(std::string("model.norm.weight"), p.final_norm, true);
  f(std::string("lm_head.weight"), p.lm_head, false);
}

// Calls f(name, rows, cols, is_vector) for every parameter of config c in for_each_param's
// order, without allocating any (sizing a model larger than memory: shards, analytic terms).
template <class F>
void for_each_param_shape(const ModelConfig& c, F&& f) {
  const Index H = c.hidden_size, A = c.num_attention_heads, G = c.num_key_value_heads, D = c.head_dim();
  const Index F_ = c.intermediate_size, V = c.vocab_size, E = c.num_local_experts, Fe = c.expert_ffn();
  f(std::string("model.embed_tokens.weight"), V, H, false);
  for (Index l = 0; l < c.num_hidden_layers; ++l) {
    const std::string pre = "model.layers." + std::to_string(l) + ".";
    f(pre + "input_layernorm.weight", Index(1), H, true);
    f(pre + "self_attn.q_proj.weight", A * D, H, false);
    f(pre + "self_attn.k_proj.weight", G * D, H, false);
    f(pre + "self_attn.v_proj.weight", G * D, H, false);
    f(pre + "self_attn.o_proj.weight", H, A * D, false);
    f(pre + "post_attention_layernorm.weight", Index(1), H, true);
    if (!c.is_moe_layer(l)) {
      f(pre + "mlp.gate_proj.weight", F_, H, false);
      f(pre + "mlp.up_proj.weight", F_, H, false);
      f(pre + "mlp.down_proj.weight", H, F_, false);
    } else {
      f(pre + "block_sparse_moe.gate.weight", E, H, false);
      for (Index e = 0; e < E; ++e) {
        const std::string ex = pre + "block_sparse_moe.experts." + std::to_string(e) + ".";
        f(ex + "w1.weight", Fe, H, false);
        f(ex + "w2.weight", H, Fe, false);
        f(ex + "w3.weight", Fe, H, false);
      }
    }
  }
  f(std::string("model.norm.weight"), Index(1), H, true);
  f(std::string("lm_head.weight"), V, H, false);
}

// Parameters of the configured shapes, all zero (also the shape of gradients and Adam state).
template <class T>
ModelParams<T> zero_params(const ModelConfig& c) {
  const Index H = c.hidden_size, A = c.num_attention_heads, G = c.num_key_value_heads, D = c.head_dim();
  const Index F = c.intermediate_size, V = c.vocab_size, E = c.num_local_experts, Fe = c.expert_ffn();
  ModelParams<T> p;
  p.embed = Mat<T>::Zero(V, H);
  p.layers.resize(size_t(c.num_hidden_layers));
  for (Index l = 0; l < c.num_hidden_layers; ++l) {
    auto& L = p.layers[size_t(l)];
    L.input_norm = Mat<T>::Zero(1, H);
    L.wq = Mat<T>::Zero(A * D, H);
    L.wk = Mat<T>::Zero(G * D, H);
    L.wv = Mat<T>::Zero(G * D, H);
    L.wo = Mat<T>::Zero(H, A * D);
    L.post_norm = Mat<T>::Zero(1, H);
    if (c.is_moe_layer(l)) {
      L.router = Mat<T>::Zero(E, H);
      L.experts.resize(size_t(E));
      for (auto& ex : L.experts) {
        ex.w1 = Mat<T>::Zero(Fe, H);
        ex.w3 = Mat<T>::Zero(Fe, H);
        ex.w2 = Mat<T>::Zero(H, Fe);
      }
    } else {
      L.gate = Mat<T>::Zero(F, H);
      L.up = Mat<T>::Zero(F, H);
      L.down = Mat<T>::Zero(H, F);
    }
  }
  p.final_norm = Mat<T>::Zero(1, H);
  p.lm_head = Mat<T>::Zero(V, H);
  return p;
}

// Total number of parameter elements.
template <class T>
int64_t count_params(const ModelParams<T>& p) {
  int64_t n = 0;
  for_each_param(p, [&](const std::string&, const Mat<T>& m, bool) { n += m.size(); });
  return n;
}

}  // namespace pb::ref
