/* Validation of ModelConfig and TrainConfig: one clear line for the first problem. */
#include "reference/model/config.h"

#include <algorithm>
#include <cmath>

#include "reference/common/error.h"

namespace pb::ref {

bool ModelConfig::is_moe_layer(int64_t layer) const {
  if (num_local_experts == 0) return false;
  if (moe_layers.empty()) return true;
  return std::find(moe_layers.begin(), moe_layers.end(), layer) != moe_layers.end();
}

void ModelConfig::validate() const {
  auto positive = [](const char* name, int64_t v) {
    PB_REQUIRE(v > 0, "invalid model config: ", name, " must be positive, got ", v);
  };
  positive("hidden_size", hidden_size);
  positive("num_attention_heads", num_attention_heads);
  positive("num_key_value_heads", num_key_value_heads);
  positive("intermediate_size", intermediate_size);
  positive("vocab_size", vocab_size);
  positive("num_hidden_layers", num_hidden_layers);
  PB_REQUIRE(hidden_size % num_attention_heads == 0, "invalid model config: hidden_size ", hidden_size,
             " not divisible by num_attention_heads ", num_attention_heads);
  PB_REQUIRE(num_attention_heads % num_key_value_heads == 0, "invalid model config: num_attention_heads ",
             num_attention_heads, " not divisible by num_key_value_heads ", num_key_value_heads);
  PB_REQUIRE(head_dim() % 2 == 0, "invalid model config: head dim ", head_dim(), " (hidden_size/num_attention_heads) must be even for RoPE");
  PB_REQUIRE(rms_norm_eps > 0 && std::isfinite(rms_norm_eps), "invalid model config: rms_norm_eps must be positive");
  PB_REQUIRE(rope_theta > 1 && std::isfinite(rope_theta), "invalid model config: rope_theta must be > 1");
  PB_REQUIRE(initializer_range > 0 && std::isfinite(initializer_range), "invalid model config: initializer_range must be positive");
  if (moe_expert_capacity_factor)
    PB_REQUIRE(*moe_expert_capacity_factor > 0 && std::isfinite(*moe_expert_capacity_factor),
               "invalid model config: moe_expert_capacity_factor must be > 0, got ", *moe_expert_capacity_factor);
  PB_REQUIRE(num_local_experts >= 0, "invalid model config: num_local_experts must be >= 0, got ", num_local_experts);
  if (num_local_experts > 0) {
    PB_REQUIRE(num_experts_per_tok >= 1 && num_experts_per_tok <= num_local_experts,
               "invalid model config: num_experts_per_tok ", num_experts_per_tok, " must be in 1..num_local_experts (",
               num_local_experts, ")");
    PB_REQUIRE(moe_intermediate_size >= 0, "invalid model config: moe_intermediate_size must be >= 0");
    for (int64_t l : moe_layers)
      PB_REQUIRE(l >= 0 && l < num_hidden_layers, "invalid model config: MoE layer ", l, " outside 0..",
                 num_hidden_layers - 1);
    PB_REQUIRE(router_aux_loss_coef >= 0 && std::isfinite(router_aux_loss_coef),
               "invalid model config: router_aux_loss_coef must be >= 0");
  } else {
    PB_REQUIRE(moe_layers.empty(), "invalid model config: moe_layers given but num_local_experts is 0");
    PB_REQUIRE(!moe_expert_capacity_factor,
               "invalid model config: moe_expert_capacity_factor given but num_local_experts is 0");
  }
}

void TrainConfig::validate() const {
  PB_REQUIRE(micro_batch_size > 0, "invalid train config: micro_batch_size must be positive, got ", micro_batch_size);
  PB_REQUIRE(seq_length > 0, "invalid train config: seq_length must be positive, got ", seq_length);
  PB_REQUIRE(num_micro_batches > 0, "invalid train config: num_micro_batches must be positive, got ", num_micro_batches);
  PB_REQUIRE(steps >= 0, "invalid train config: steps must be >= 0, got ", steps);
  PB_REQUIRE(lr >= 0 && std::isfinite(lr), "invalid train config: lr must be >= 0");
  PB_REQUIRE(beta1 >= 0 && beta1 < 1, "invalid train config: beta1 must be in [0, 1)");
  PB_REQUIRE(beta2 >= 0 && beta2 < 1, "invalid train config: beta2 must be in [0, 1)");
  PB_REQUIRE(adam_eps > 0, "invalid train config: adam eps must be positive");
  PB_REQUIRE(weight_decay >= 0, "invalid train config: weight_decay must be >= 0");
  PB_REQUIRE(clip_grad >= 0, "invalid train config: clip_grad must be >= 0 (0 disables clipping)");
  if (!moe_token_groups.empty()) {
    PB_REQUIRE(int64_t(moe_token_groups.size()) == micro_batch_size * seq_length,
               "invalid train config: moe_token_groups holds ", moe_token_groups.size(),
               " ids, expected micro_batch_size*seq_length = ", micro_batch_size * seq_length);
    for (size_t t = 0; t < moe_token_groups.size(); ++t)
      PB_REQUIRE(moe_token_groups[t] >= 0, "invalid train config: moe_token_groups[", t, "] must be >= 0, got ",
                 moe_token_groups[t]);
  }
}

}  // namespace pb::ref
