/* Model and training configuration of the Llama-style decoder, and its validation.
 *
 * Dimension letters (DESIGN.md): B micro-batch, S sequence, H hidden, A heads, G kv heads,
 * D head dim = H/A, F ffn hidden, V vocab, L layers, E experts, K top-k, m micro-batches.
 * Field names follow Hugging Face's LlamaConfig / MixtralConfig where one exists.
 */
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace pb::ref {

struct ModelConfig {
  int64_t hidden_size = 256;            // H
  int64_t num_attention_heads = 8;      // A
  int64_t num_key_value_heads = 4;      // G (GQA when G < A)
  int64_t intermediate_size = 768;      // F of the dense SwiGLU MLP
  int64_t vocab_size = 2048;            // V
  int64_t num_hidden_layers = 4;        // L
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  double initializer_range = 0.02;      // std of the normal init of every matrix
  // Mixture of experts (E = 0: every layer dense).
  int64_t num_local_experts = 0;        // E
  int64_t num_experts_per_tok = 2;      // K
  int64_t moe_intermediate_size = 0;    // F of each expert (0: intermediate_size)
  std::vector<int64_t> moe_layers;      // which layers are MoE (empty with E > 0: all)
  bool norm_topk_prob = true;           // renormalize the top-K probabilities (Mixtral)
  double router_aux_loss_coef = 0.0;    // load-balancing loss coefficient
  // Expert capacity (Fedus et al., Switch Transformers, arXiv 2101.03961; Megatron-LM's
  // moe_expert_capacity_factor): each expert takes at most ceil(n K / E * cf) of the n
  // rows of a routing group, the copies of lowest combine weight beyond that are dropped
  // (ops/moe_router.h, apply_capacity). Absent: dropless.
  std::optional<double> moe_expert_capacity_factor;

  // A dense config of the given sizes, everything else default.
  static ModelConfig dense(int64_t H, int64_t A, int64_t G, int64_t F, int64_t V, int64_t L) {
    ModelConfig c;
    c.hidden_size = H;
    c.num_attention_heads = A;
    c.num_key_value_heads = G;
    c.intermediate_size = F;
    c.vocab_size = V;
    c.num_hidden_layers = L;
    return c;
  }

  int64_t head_dim() const { return hidden_size / num_attention_heads; }          // D
  int64_t expert_ffn() const { return moe_intermediate_size > 0 ? moe_intermediate_size : intermediate_size; }
  bool is_moe_layer(int64_t layer) const;
  // Throws pb::Error with one line naming the first thing wrong.
  void validate() const;
};

struct TrainConfig {
  int64_t micro_batch_size = 4;         // B sequences per micro-batch
  int64_t seq_length = 128;             // S
  int64_t num_micro_batches = 1;        // m (gradient accumulation)
  int64_t steps = 10;
  uint64_t seed = 1234;                 // parameters and data
  bool fixed_batch = false;             // reuse batch 0 every step
  // AdamW (Loshchilov & Hutter, arXiv 1711.05101) with global-norm clipping.
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double adam_eps = 1e-8;
  double weight_decay = 0.1;            // matrices only; norm weights are not decayed
  double clip_grad = 1.0;               // max global grad norm; 0 disables clipping
  // Routing groups of the expert capacity (ModelConfig::moe_expert_capacity_factor): the
  // group id (>= 0) of each of the B*S token rows of a micro-batch, row t = b*S + s, the
  // same for every micro-batch; empty: all rows form one group. Capacity is applied per
  // group because Megatron-LM drops on each rank over the tokens that rank routes, so a
  // distributed run is reproduced by giving each row the id of the rank that routes it.
  // Without a capacity factor the groups change nothing.
  std::vector<int64_t> moe_token_groups;
  // Test hook: step n (0-based) gets a NaN in one gradient, so that its optimizer step is
  // skipped (a non-finite global norm skips the step: adamw.h); -1: none.
  int64_t inject_nan_step = -1;

  int64_t global_batch() const { return micro_batch_size * num_micro_batches; }
  void validate() const;
};

}  // namespace pb::ref
