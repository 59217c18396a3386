/* A run's state on disk, readable by Hugging Face transformers:
 *
 *   DIR/config.json                HF config + "parabench": train config, per-step losses,
 *                                  grad norms and step times
 *   DIR/model.safetensors          parameters at step 1 (before any update)
 *   DIR/grads_step1.safetensors    raw gradients of step 1 (mean loss, before clipping)
 *   DIR/final.safetensors          parameters after the last step
 *   DIR/batch_step1.safetensors    input_ids and labels of step 1, I64 [m*B, S]
 */
#pragma once

#include <string>
#include <vector>

#include "reference/model/train.h"

namespace pb::io {

struct RunLog {
  std::string dtype;                     // "float32" or "float64"
  std::vector<ref::StepRecord> steps;
};

template <class T>
void dump_run(const std::string& dir, const ref::ModelConfig& mc, const ref::TrainConfig& tc,
              const ref::ModelParams<T>& initial, const ref::ModelParams<T>* grads_step1,
              const ref::ModelParams<T>& final_params, const RunLog& log);

extern template void dump_run(const std::string&, const ref::ModelConfig&, const ref::TrainConfig&,
                              const ref::ModelParams<float>&, const ref::ModelParams<float>*,
                              const ref::ModelParams<float>&, const RunLog&);
extern template void dump_run(const std::string&, const ref::ModelConfig&, const ref::TrainConfig&,
                              const ref::ModelParams<double>&, const ref::ModelParams<double>*,
                              const ref::ModelParams<double>&, const RunLog&);

}  // namespace pb::io
