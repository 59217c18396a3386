/* Parameter and FLOP counts of the decoder from the config alone (seed 001's formulas,
 * adapted to SwiGLU, GQA, no biases, an untied LM head and MoE).
 *
 * Parameters (D = H/A, so A*D = H):
 *   attention      H*A*D + 2*H*G*D + A*D*H      = 2H^2 + 2H*G*D      (q, k, v, o)
 *   dense MLP      3*H*F                                              (gate, up, down)
 *   MoE block      E*H + E*3*H*Fe                                     (router, experts)
 *   norms          2H per layer, H final
 *   embedding and LM head   2*V*H
 * Forward FLOPs per token (a multiply-add is 2 FLOPs):
 *   projections    2*(2H^2 + 2H*G*D)
 *   attention core 4*A*D*S/2  = 2*H*S    (QK^T and PV over the causal half, the
 *                                          FlashAttention convention: S^2/2 per head)
 *   dense MLP      6*H*F;   MoE  2*E*H + K*6*H*Fe (only the K routed experts run)
 *   LM head        2*V*H    (the embedding lookup is free)
 * Training FLOPs per token = 3 x forward (backward = 2 x forward; recompute not counted).
 * Norms, RoPE, softmax and the loss are O(H) per token and left out, as in Megatron-LM.
 */
#pragma once

#include "reference/model/config.h"

namespace pb::ref {

inline int64_t analytic_param_count(const ModelConfig& c) {
  const int64_t H = c.hidden_size, G = c.num_key_value_heads, D = c.head_dim(), V = c.vocab_size;
  const int64_t attn = 2 * H * H + 2 * H * G * D;
  int64_t n = 2 * V * H + H;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    n += attn + 2 * H;
    n += c.is_moe_layer(l) ? c.num_local_experts * H + c.num_local_experts * 3 * H * c.expert_ffn()
                           : 3 * H * c.intermediate_size;
  }
  return n;
}

// Decoder layer l's forward FLOPs per token, and the LM head's.
inline double layer_forward_flops_per_token(const ModelConfig& c, int64_t l, int64_t S) {
  const double H = double(c.hidden_size), G = double(c.num_key_value_heads), D = double(c.head_dim());
  return 2.0 * (2 * H * H + 2 * H * G * D) + 2.0 * H * double(S) +
         (c.is_moe_layer(l) ? 2.0 * double(c.num_local_experts) * H +
                                  double(c.num_experts_per_tok) * 6.0 * H * double(c.expert_ffn())
                            : 6.0 * H * double(c.intermediate_size));
}
inline double head_forward_flops_per_token(const ModelConfig& c) {
  return 2.0 * double(c.vocab_size) * double(c.hidden_size);
}

inline double forward_flops_per_token(const ModelConfig& c, int64_t S) {
  double f = head_forward_flops_per_token(c);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) f += layer_forward_flops_per_token(c, l, S);
  return f;
}

inline double train_flops_per_token(const ModelConfig& c, int64_t S) { return 3.0 * forward_flops_per_token(c, S); }

}  // namespace pb::ref
