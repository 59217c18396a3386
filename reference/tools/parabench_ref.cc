/* parabench-ref: train the reference model on one process and print per-step loss and
 * step time; optionally dump the state as Hugging Face files or start from them.
 *
 *   parabench-ref [model flags | --config config.json] [train flags] [--dtype float|double]
 *                 [--init model.safetensors] [--dump DIR]
 * Errors (bad config, bad flag, bad file) print one line and exit 2.
 */
#include <CLI/CLI.hpp>
#include <charconv>
#include <algorithm>
#include <cstdio>
#include <iostream>

#include "reference/io/checkpoint.h"
#include "reference/io/dump.h"
#include "reference/model/flops.h"
#include "reference/model/init.h"
#include "reference/model/sizes.h"
#include "reference/model/train.h"

namespace {

using namespace pb;

struct Options {
  ref::ModelConfig mc;
  ref::TrainConfig tc;
  std::string dtype = "float";
  std::string config_path, init_path, dump_dir;
  bool quiet = false;
};

template <class T>
int run(const Options& o) {
  ref::ModelParams<T> initial = ref::init_params<T>(o.mc, o.tc.seed);
  if (!o.init_path.empty()) io::params_from_safetensors(initial, io::read_safetensors(o.init_path), o.init_path);
  const int64_t nparams = ref::count_params(initial);
  const int64_t tokens = o.tc.global_batch() * o.tc.seq_length;
  const double flops_per_step = ref::train_flops_per_token(o.mc, o.tc.seq_length) * double(tokens);
  std::printf("parabench-ref: %s, H=%lld A=%lld G=%lld F=%lld V=%lld L=%lld E=%lld K=%lld | B=%lld S=%lld m=%lld | %lld params "
              "(formula %lld) | %.3f GFLOP/step\n",
              o.dtype.c_str(), (long long)o.mc.hidden_size, (long long)o.mc.num_attention_heads,
              (long long)o.mc.num_key_value_heads, (long long)o.mc.intermediate_size, (long long)o.mc.vocab_size,
              (long long)o.mc.num_hidden_layers, (long long)o.mc.num_local_experts,
              (long long)(o.mc.num_local_experts ? o.mc.num_experts_per_tok : 0), (long long)o.tc.micro_batch_size,
              (long long)o.tc.seq_length, (long long)o.tc.num_micro_batches, (long long)nparams,
              (long long)ref::analytic_param_count(o.mc), flops_per_step / 1e9);
  ref::Trainer<T> trainer(o.mc, o.tc, initial);
  io::RunLog log{std::is_same_v<T, double> ? "float64" : "float32", {}};
  ref::ModelParams<T> grads1;
  for (int64_t s = 0; s < o.tc.steps; ++s) {
    const ref::StepRecord r = trainer.step();
    if (s == 0) grads1 = trainer.last_grads();
    log.steps.push_back(r);
    if (!o.quiet)
      std::printf("step %4lld/%lld  loss %.6f  ce %.6f  aux %.6f  grad_norm %.4f  %8.2f ms\n", (long long)r.step,
                  (long long)o.tc.steps, r.loss, r.ce, r.aux, r.grad_norm, r.ms);
  }
  if (!log.steps.empty()) {
    std::vector<double> ms;
    for (const auto& r : log.steps) ms.push_back(r.ms);
    std::sort(ms.begin(), ms.end());
    const double med = ms[ms.size() / 2];
    std::printf("step time: median %.2f ms, min %.2f, max %.2f over %zu steps | %.0f tokens/s | %.2f GFLOP/s\n", med,
                ms.front(), ms.back(), ms.size(), double(tokens) / (med / 1e3), flops_per_step / (med / 1e3) / 1e9);
  }
  if (!o.dump_dir.empty()) {
    io::dump_run(o.dump_dir, o.mc, o.tc, initial, log.steps.empty() ? nullptr : &grads1, trainer.params(), log);
    std::printf("dumped to %s\n", o.dump_dir.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"parabench-ref: the single-process reference model (Llama-style decoder, optional MoE), "
               "trained with AdamW; prints per-step loss and step time."};
  auto& mc = o.mc;
  auto& tc = o.tc;
  std::vector<CLI::Option*> model_flags = {
      app.add_option("--hidden", mc.hidden_size, "hidden size H")->capture_default_str(),
      app.add_option("--heads", mc.num_attention_heads, "attention heads A")->capture_default_str(),
      app.add_option("--kv-heads", mc.num_key_value_heads, "key/value heads G (GQA)")->capture_default_str(),
      app.add_option("--ffn", mc.intermediate_size, "dense MLP hidden F")->capture_default_str(),
      app.add_option("--vocab", mc.vocab_size, "vocabulary V")->capture_default_str(),
      app.add_option("--layers", mc.num_hidden_layers, "layers L")->capture_default_str(),
      app.add_option("--rms-eps", mc.rms_norm_eps, "RMSNorm epsilon")->capture_default_str(),
      app.add_option("--rope-theta", mc.rope_theta, "RoPE base")->capture_default_str(),
      app.add_option("--init-std", mc.initializer_range, "std of the normal init")->capture_default_str(),
      app.add_option("--experts", mc.num_local_experts, "experts E (0: dense)")->capture_default_str(),
      app.add_option("--topk", mc.num_experts_per_tok, "experts per token K")->capture_default_str(),
      app.add_option("--moe-ffn", mc.moe_intermediate_size, "expert hidden (0: --ffn)")->capture_default_str(),
      app.add_option("--moe-layers", mc.moe_layers, "MoE layer indices, comma separated (default: all)")
          ->delimiter(','),
      app.add_option("--aux-coef", mc.router_aux_loss_coef, "load-balancing loss coefficient")->capture_default_str(),
  };
  double capacity_factor = 0;  // set only when the flag is given (absent: dropless)
  auto* cf_opt = app.add_option("--capacity-factor", capacity_factor,
                                "expert capacity factor, Megatron's moe_expert_capacity_factor (default: dropless)");
  model_flags.push_back(cf_opt);
  bool no_norm_topk = false;
  model_flags.push_back(app.add_flag("--no-norm-topk", no_norm_topk, "do not renormalize the top-K probabilities"));
  auto* cfg_opt = app.add_option("--config", o.config_path, "model config.json (Hugging Face fields)")
                      ->check(CLI::ExistingFile);
  for (auto* f : model_flags) cfg_opt->excludes(f);
  app.add_option("--micro-batch", tc.micro_batch_size, "sequences per micro-batch B")->capture_default_str();
  app.add_option("--seq", tc.seq_length, "sequence length S")->capture_default_str();
  app.add_option("--micro-batches", tc.num_micro_batches, "micro-batches per step m")->capture_default_str();
  app.add_option("--steps", tc.steps, "optimizer steps")->capture_default_str();
  app.add_option("--seed", tc.seed, "seed of parameters and data")->capture_default_str();
  app.add_flag("--fixed-batch", tc.fixed_batch, "train on batch 0 every step");
  app.add_option("--lr", tc.lr, "AdamW learning rate")->capture_default_str();
  app.add_option("--beta1", tc.beta1, "AdamW beta1")->capture_default_str();
  app.add_option("--beta2", tc.beta2, "AdamW beta2")->capture_default_str();
  app.add_option("--adam-eps", tc.adam_eps, "AdamW epsilon")->capture_default_str();
  app.add_option("--weight-decay", tc.weight_decay, "AdamW weight decay (matrices)")->capture_default_str();
  app.add_option("--clip", tc.clip_grad, "max global grad norm (0: off)")->capture_default_str();
  app.add_option("--dtype", o.dtype, "scalar type")->check(CLI::IsMember({"float", "double"}))->capture_default_str();
  app.add_option("--init", o.init_path, "start from parameters in this safetensors file (HF names)");
  app.add_option("--dump", o.dump_dir, "write config.json and safetensors of the run to this directory");
  app.add_flag("--quiet", o.quiet, "print only the summary");
  // Integers are read exactly: a value out of the option's range is refused, not clamped.
  auto in_range = [](auto type) {
    return CLI::Validator(
        [](std::string& s) -> std::string {
          decltype(type) v = 0;
          const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
          return ec == std::errc::result_out_of_range ? "value " + s + " is out of range" : std::string();
        },
        "INT", "in range");
  };
  for (auto* opt : app.get_options()) {
    for (const char* name : {"--hidden", "--heads", "--kv-heads", "--ffn", "--vocab", "--layers", "--experts", "--topk",
                             "--moe-ffn", "--micro-batch", "--seq", "--micro-batches", "--steps"})
      if (opt->check_name(name)) opt->check(in_range(int64_t{}));
    if (opt->check_name("--seed")) opt->check(in_range(uint64_t{}));
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "parabench-ref: error: %s\n", e.what());
    return 2;
  }
  try {
    if (!o.config_path.empty()) o.mc = io::read_model_config(o.config_path);
    if (no_norm_topk) o.mc.norm_topk_prob = false;
    if (cf_opt->count() > 0) o.mc.moe_expert_capacity_factor = capacity_factor;
    o.mc.validate();
    o.tc.validate();
    ref::check_size_bounds(o.mc, o.tc, 1, "");  // before anything is allocated (sizes.h)
    const double need = ref::reference_bytes_lower_bound(o.mc, o.tc, o.dtype == "double" ? 8 : 4);
    const int64_t available = ref::host_memory_available();
    PB_REQUIRE(available < 0 || need <= double(available), "needs at least ", ref::human_bytes(need),
               " (parameters, gradients and AdamW moments of ", ref::analytic_param_count(o.mc),
               " parameters, logits and layer inputs of a micro-batch); this machine has ", ref::human_bytes(double(available)), " available");
    return o.dtype == "double" ? run<double>(o) : run<float>(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "parabench-ref: error: %s\n", e.what());
    return 2;
  }
}
