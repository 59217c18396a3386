/* Hugging Face config.json for the reference model. */
#include "reference/io/checkpoint.h"

#include <fstream>

#include "reference/common/error.h"

namespace pb::io {

using nlohmann::json;

json hf_config_json(const ref::ModelConfig& c) {
  const bool moe = c.num_local_experts > 0;
  json j = {
      {"architectures", {moe ? "MixtralForCausalLM" : "LlamaForCausalLM"}},
      {"model_type", moe ? "mixtral" : "llama"},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", moe ? c.expert_ffn() : c.intermediate_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_attention_heads", c.num_attention_heads},
      {"num_key_value_heads", c.num_key_value_heads},
      {"head_dim", c.head_dim()},
      {"vocab_size", c.vocab_size},
      {"rms_norm_eps", c.rms_norm_eps},
      {"rope_theta", c.rope_theta},
      {"hidden_act", "silu"},
      {"initializer_range", c.initializer_range},
      {"tie_word_embeddings", false},
      {"attention_bias", false},
      {"mlp_bias", false},
      {"attention_dropout", 0.0},
      {"max_position_embeddings", 4096},
      {"torch_dtype", "float32"},
  };
  if (moe) {
    j["num_local_experts"] = c.num_local_experts;
    j["num_experts_per_tok"] = c.num_experts_per_tok;
    j["router_aux_loss_coef"] = c.router_aux_loss_coef;
    j["norm_topk_prob"] = c.norm_topk_prob;
    j["output_router_logits"] = false;
    // Megatron-LM's name; written only when set (absent: dropless).
    if (c.moe_expert_capacity_factor) j["moe_expert_capacity_factor"] = *c.moe_expert_capacity_factor;
    // parabench extensions: layers may mix dense and MoE; the dense MLP keeps its own size.
    j["parabench_moe_layers"] = c.moe_layers;
    j["parabench_dense_intermediate_size"] = c.intermediate_size;
  }
  return j;
}

ref::ModelConfig model_config_from_json(const json& j, const std::string& path) {
  PB_REQUIRE(j.is_object(), path, ": config is not a JSON object");
  ref::ModelConfig c;
  auto get_int = [&](const char* key, int64_t& dst, bool required) {
    if (!j.contains(key)) {
      PB_REQUIRE(!required, path, ": config lacks ", key);
      return;
    }
    PB_REQUIRE(j[key].is_number_integer(), path, ": ", key, " must be an integer, got ", j[key].dump());
    dst = j[key].get<int64_t>();
  };
  auto get_num = [&](const char* key, double& dst) {
    if (!j.contains(key)) return;
    PB_REQUIRE(j[key].is_number(), path, ": ", key, " must be a number, got ", j[key].dump());
    dst = j[key].get<double>();
  };
  get_int("hidden_size", c.hidden_size, true);
  get_int("num_attention_heads", c.num_attention_heads, true);
  c.num_key_value_heads = c.num_attention_heads;
  get_int("num_key_value_heads", c.num_key_value_heads, false);
  get_int("intermediate_size", c.intermediate_size, true);
  get_int("vocab_size", c.vocab_size, true);
  get_int("num_hidden_layers", c.num_hidden_layers, true);
  get_num("rms_norm_eps", c.rms_norm_eps);
  get_num("rope_theta", c.rope_theta);
  get_num("initializer_range", c.initializer_range);
  if (j.contains("head_dim") && !j["head_dim"].is_null()) {
    int64_t hd = 0;
    get_int("head_dim", hd, false);
    PB_REQUIRE(c.num_attention_heads > 0 && hd * c.num_attention_heads == c.hidden_size, path, ": head_dim ", hd,
               " must equal hidden_size / num_attention_heads (parabench ties them)");
  }
  if (j.contains("tie_word_embeddings"))
    PB_REQUIRE(j["tie_word_embeddings"] == false, path, ": tied embeddings are not supported (the LM head is untied)");
  get_int("num_local_experts", c.num_local_experts, false);
  // Read whatever num_local_experts is, so that validate() refuses it on a dense model
  // rather than it being ignored; null (Megatron's None) is dropless, like an absent key.
  if (j.contains("moe_expert_capacity_factor") && !j["moe_expert_capacity_factor"].is_null()) {
    double cf = 0;
    get_num("moe_expert_capacity_factor", cf);
    c.moe_expert_capacity_factor = cf;
  }
  if (c.num_local_experts > 0) {
    get_int("num_experts_per_tok", c.num_experts_per_tok, false);
    get_num("router_aux_loss_coef", c.router_aux_loss_coef);
    if (j.contains("norm_topk_prob")) {
      PB_REQUIRE(j["norm_topk_prob"].is_boolean(), path, ": norm_topk_prob must be true or false");
      c.norm_topk_prob = j["norm_topk_prob"].get<bool>();
    }
    // Mixtral's intermediate_size is the experts' size.
    c.moe_intermediate_size = c.intermediate_size;
    get_int("parabench_dense_intermediate_size", c.intermediate_size, false);
    if (j.contains("parabench_moe_layers")) {
      PB_REQUIRE(j["parabench_moe_layers"].is_array(), path, ": parabench_moe_layers must be an array");
      for (const auto& l : j["parabench_moe_layers"]) {
        PB_REQUIRE(l.is_number_integer(), path, ": parabench_moe_layers holds ", l.dump());
        c.moe_layers.push_back(l.get<int64_t>());
      }
    }
  }
  c.validate();
  return c;
}

ref::ModelConfig read_model_config(const std::string& path) {
  std::ifstream in(path);
  PB_REQUIRE(in.good(), "cannot open config ", path);
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw Error(path + ": malformed JSON (" + std::string(e.what()) + ")");
  }
  return model_config_from_json(j, path);
}

}  // namespace pb::io
