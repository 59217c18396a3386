/* Writes a run's state as Hugging Face-compatible files (see dump.h). */
#include "reference/io/dump.h"

#include "reference/io/atomic_file.h"

#include <filesystem>
#include <fstream>

#include "reference/io/checkpoint.h"

namespace pb::io {

template <class T>
void dump_run(const std::string& dir, const ref::ModelConfig& mc, const ref::TrainConfig& tc,
              const ref::ModelParams<T>& initial, const ref::ModelParams<T>* grads_step1,
              const ref::ModelParams<T>& final_params, const RunLog& log) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  PB_REQUIRE(!ec, "cannot create dump directory ", dir, ": ", ec.message());

  nlohmann::json j = hf_config_json(mc);
  j["torch_dtype"] = log.dtype;
  nlohmann::json steps = nlohmann::json::array();
  for (const auto& s : log.steps)
    steps.push_back({{"step", s.step}, {"loss", s.loss}, {"ce", s.ce}, {"aux", s.aux}, {"grad_norm", s.grad_norm}, {"ms", s.ms}});
  j["parabench"] = {
      {"micro_batch_size", tc.micro_batch_size}, {"seq_length", tc.seq_length},
      {"num_micro_batches", tc.num_micro_batches}, {"steps", tc.steps}, {"seed", tc.seed},
      {"fixed_batch", tc.fixed_batch}, {"lr", tc.lr}, {"beta1", tc.beta1}, {"beta2", tc.beta2},
      {"adam_eps", tc.adam_eps}, {"weight_decay", tc.weight_decay}, {"clip_grad", tc.clip_grad},
      {"loss", "mean cross-entropy over all m*B*S tokens + sum of per-layer MoE aux losses"},
      {"history", steps}};
  write_file_atomic(dir + "/config.json", j.dump(2) + "\n");

  write_safetensors(dir + "/model.safetensors", params_to_safetensors(initial));
  write_safetensors(dir + "/final.safetensors", params_to_safetensors(final_params));
  if (grads_step1) write_safetensors(dir + "/grads_step1.safetensors", params_to_safetensors(*grads_step1));

  // Step 1's batch: the m micro-batches back to back, [m*B, S].
  std::vector<int64_t> ids, labels;
  for (int64_t mb = 0; mb < tc.num_micro_batches; ++mb) {
    const auto b = ref::train_batch(mc, tc, 0, mb);
    ids.insert(ids.end(), b.tokens.begin(), b.tokens.end());
    labels.insert(labels.end(), b.labels.begin(), b.labels.end());
  }
  SafetensorsFile batch;
  const std::vector<int64_t> shape{tc.global_batch(), tc.seq_length};
  batch.tensors.emplace_back("input_ids", make_i64(shape, ids.data()));
  batch.tensors.emplace_back("labels", make_i64(shape, labels.data()));
  write_safetensors(dir + "/batch_step1.safetensors", batch);
}

template void dump_run(const std::string&, const ref::ModelConfig&, const ref::TrainConfig&,
                       const ref::ModelParams<float>&, const ref::ModelParams<float>*, const ref::ModelParams<float>&,
                       const RunLog&);
template void dump_run(const std::string&, const ref::ModelConfig&, const ref::TrainConfig&,
                       const ref::ModelParams<double>&, const ref::ModelParams<double>*,
                       const ref::ModelParams<double>&, const RunLog&);

}  // namespace pb::io
