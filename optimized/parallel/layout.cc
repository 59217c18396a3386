/* Layout validation: what each parallel degree must divide. */
#include "optimized/parallel/layout.h"

#include "reference/common/error.h"

namespace pb {

std::string Layout::str() const {
  std::string s;
  auto add = [&](const char* n, int v) {
    if (v > 1) s += (s.empty() ? "" : " ") + std::string(n) + std::to_string(v);
  };
  add("dp", dp);
  add("tp", tp);
  add("pp", pp);
  add("vpp", vpp);
  add("cp", cp);
  add("ep", ep);
  return s.empty() ? "1 rank" : s;
}

const std::vector<FeatureInfo>& known_features() {
  static const std::vector<FeatureInfo> f = {
      {"sp", "Megatron sequence parallelism: norms and residuals on S/TP shards (arXiv 2205.05198)", true},
      {"distributed_optimizer", "ZeRO-1: Adam state sharded over DP, reduce-scatter + all-gather", false},
      {"recompute_full", "full activation recomputation per layer", false},
      {"recompute_selective", "recompute core attention only", false},
      {"swap_attention", "offload attention activations to host memory", false},
      {"reuse_fp32_param", "fp32 master shares storage with the bf16 weight", false},
      {"overlap_grad_reduce", "bucketed gradient reduction overlapped with backward", false},
      {"overlap_param_gather", "parameter all-gather overlapped with forward", false},
      {"mc2", "matmul fused with all-gather / reduce-scatter", false},
  };
  return f;
}

Features parse_features(const std::vector<std::string>& names) {
  Features f;
  for (const auto& n : names) {
    const FeatureInfo* info = nullptr;
    for (const auto& k : known_features())
      if (n == k.name) info = &k;
    PB_REQUIRE(info, "unknown feature '", n, "' (parabench list shows the known ones)");
    PB_REQUIRE(info->implemented, "feature '", n, "' is not available in this build yet");
    if (n == "sp") f.sp = true;
  }
  return f;
}

void validate_layout(const Layout& l, const ref::ModelConfig& mc, const ref::TrainConfig& tc, const Features& f) {
  for (auto [name, v] : {std::pair{"dp", l.dp}, {"tp", l.tp}, {"pp", l.pp}, {"vpp", l.vpp}, {"cp", l.cp}, {"ep", l.ep}})
    PB_REQUIRE(v >= 1, "invalid layout: ", name, " must be >= 1, got ", v);
  PB_REQUIRE(l.vpp == 1 || l.pp > 1, "invalid layout: vpp ", l.vpp, " needs pp > 1");
  PB_REQUIRE(mc.num_hidden_layers % (l.pp * l.vpp) == 0, "invalid layout: pp ", l.pp, " x vpp ", l.vpp,
             " does not divide num_hidden_layers ", mc.num_hidden_layers);
  PB_REQUIRE(l.cp == 1, "invalid layout: context parallelism (cp > 1) is not available in this build yet");
  PB_REQUIRE(l.ep == 1, "invalid layout: expert parallelism (ep > 1) is not available in this build yet");
  PB_REQUIRE(mc.num_local_experts == 0, "invalid layout: MoE layers need the expert-parallel implementation (not yet)");
  const int t = l.tp;
  PB_REQUIRE(mc.num_attention_heads % t == 0, "invalid layout: tp ", t, " does not divide num_attention_heads ",
             mc.num_attention_heads);
  PB_REQUIRE(mc.num_key_value_heads % t == 0, "invalid layout: tp ", t, " does not divide num_key_value_heads ",
             mc.num_key_value_heads);
  PB_REQUIRE(mc.intermediate_size % t == 0, "invalid layout: tp ", t, " does not divide intermediate_size ",
             mc.intermediate_size);
  PB_REQUIRE(mc.vocab_size % t == 0, "invalid layout: tp ", t, " does not divide vocab_size ", mc.vocab_size);
  if (f.sp) {
    PB_REQUIRE(t > 1, "invalid layout: sequence parallelism needs tp > 1");
    PB_REQUIRE(tc.seq_length % t == 0, "invalid layout: tp ", t, " does not divide seq_length ", tc.seq_length,
               " (sequence parallelism)");
  }
}

}  // namespace pb
