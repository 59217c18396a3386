/* Bad configurations are rejected with one clear message naming the problem. */
#include "reference/io/checkpoint.h"
#include "reference/model/config.h"
#include "test_util.h"

namespace pb::test {

static void expect_rejected(const ref::ModelConfig& c, const std::string& needle) {
  try {
    c.validate();
    ADD_FAILURE() << "config accepted, expected an error containing '" << needle << "'";
  } catch (const pb::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line: " << msg;
  }
}

TEST(Config, DefaultIsValid) {
  EXPECT_NO_THROW(ref::ModelConfig{}.validate());
  EXPECT_NO_THROW(ref::TrainConfig{}.validate());
}

TEST(Config, RejectsWhatDoesNotDivideOrIsNotPositive) {
  ref::ModelConfig c;
  c.hidden_size = 250;  // 250 % 8 != 0
  expect_rejected(c, "hidden_size 250 not divisible by num_attention_heads 8");
  c = {};
  c.num_key_value_heads = 3;
  expect_rejected(c, "num_attention_heads 8 not divisible by num_key_value_heads 3");
  c = {};
  c.hidden_size = 24;
  c.num_attention_heads = 8;  // D = 3: odd
  c.num_key_value_heads = 8;
  expect_rejected(c, "must be even for RoPE");
  for (auto field : {&ref::ModelConfig::hidden_size, &ref::ModelConfig::vocab_size, &ref::ModelConfig::num_hidden_layers,
                     &ref::ModelConfig::intermediate_size, &ref::ModelConfig::num_attention_heads}) {
    for (int64_t bad : {0, -3}) {
      c = {};
      c.*field = bad;
      expect_rejected(c, "must be positive");
    }
  }
  c = {};
  c.num_local_experts = 4;
  c.num_experts_per_tok = 5;
  expect_rejected(c, "num_experts_per_tok 5 must be in 1..num_local_experts");
  c.num_experts_per_tok = 2;
  c.moe_layers = {4};
  expect_rejected(c, "MoE layer 4 outside 0..3");
  c = {};
  c.moe_layers = {0};
  expect_rejected(c, "num_local_experts is 0");
  c = {};
  c.rms_norm_eps = 0;
  expect_rejected(c, "rms_norm_eps");
}

TEST(Config, RejectsBadTraining) {
  ref::TrainConfig t;
  t.seq_length = 0;
  EXPECT_THROW(t.validate(), pb::Error);
  t = {};
  t.micro_batch_size = -1;
  EXPECT_THROW(t.validate(), pb::Error);
  t = {};
  t.beta2 = 1.0;
  EXPECT_THROW(t.validate(), pb::Error);
  t = {};
  t.steps = -1;
  EXPECT_THROW(t.validate(), pb::Error);
}

// Megatron's moe_expert_capacity_factor in config.json: written only when set, read back
// unchanged; null reads as dropless; 0 is refused with validate()'s line.
TEST(Config, CapacityFactorRoundTripsThroughJson) {
  ref::ModelConfig c;
  c.num_local_experts = 4;
  EXPECT_FALSE(io::hf_config_json(c).contains("moe_expert_capacity_factor"));
  EXPECT_FALSE(io::model_config_from_json(io::hf_config_json(c), "cfg").moe_expert_capacity_factor.has_value());
  c.moe_expert_capacity_factor = 1.25;
  auto j = io::hf_config_json(c);
  EXPECT_EQ(j["moe_expert_capacity_factor"], 1.25);
  const auto back = io::model_config_from_json(j, "cfg");
  ASSERT_TRUE(back.moe_expert_capacity_factor.has_value());
  EXPECT_EQ(*back.moe_expert_capacity_factor, 1.25);
  EXPECT_EQ(io::hf_config_json(back), j);
  j["moe_expert_capacity_factor"] = nullptr;
  EXPECT_FALSE(io::model_config_from_json(j, "cfg").moe_expert_capacity_factor.has_value());
  j["moe_expert_capacity_factor"] = 0;
  try {
    io::model_config_from_json(j, "cfg");
    ADD_FAILURE() << "capacity factor 0 accepted";
  } catch (const pb::Error& e) {
    EXPECT_EQ(std::string(e.what()), "invalid model config: moe_expert_capacity_factor must be > 0, got 0");
  }
  j["moe_expert_capacity_factor"] = "big";
  EXPECT_THROW(io::model_config_from_json(j, "cfg"), pb::Error);
}

}  // namespace pb::test
