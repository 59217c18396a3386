/* Model state in Hugging Face form: parameters (and gradients) as safetensors with
 * LlamaForCausalLM / MixtralForCausalLM tensor names, and config.json with Hugging Face
 * field names, so a dump loads into transformers and a Hugging Face checkpoint of the same
 * shape starts a run here.
 */
#pragma once

#include <cmath>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "reference/common/error.h"
#include "reference/io/safetensors.h"
#include "reference/model/params.h"

namespace pb::io {

// Parameters as safetensors tensors (F32 for float, F64 for double), norms 1-D.
template <class T>
SafetensorsFile params_to_safetensors(const ref::ModelParams<T>& p) {
  SafetensorsFile f;
  ref::for_each_param(p, [&](const std::string& name, const ref::Mat<T>& m, bool vec) {
    std::vector<int64_t> shape = vec ? std::vector<int64_t>{m.cols()} : std::vector<int64_t>{m.rows(), m.cols()};
    if constexpr (std::is_same_v<T, double>)
      f.tensors.emplace_back(name, make_f64(shape, m.data()));
    else
      f.tensors.emplace_back(name, make_f32(shape, m.data()));
  });
  return f;
}

// Fills p (already shaped by zero_params for the config) from a file: every parameter must
// be present with its exact shape and finite values, and the file must hold nothing else.
template <class T>
void params_from_safetensors(ref::ModelParams<T>& p, const SafetensorsFile& f, const std::string& path) {
  size_t used = 0;
  ref::for_each_param(p, [&](const std::string& name, ref::Mat<T>& m, bool vec) {
    const TensorData* t = f.find(name);
    PB_REQUIRE(t, path, ": missing parameter ", name);
    std::vector<int64_t> want = vec ? std::vector<int64_t>{m.cols()} : std::vector<int64_t>{m.rows(), m.cols()};
    if (t->shape != want) {
      std::string got, exp;
      for (auto d : t->shape) got += (got.empty() ? "" : ",") + std::to_string(d);
      for (auto d : want) exp += (exp.empty() ? "" : ",") + std::to_string(d);
      throw Error(path + ": parameter " + name + " has shape [" + got + "], the config needs [" + exp + "]");
    }
    const auto v = to_f64(*t, path + ": " + name);
    for (size_t i = 0; i < v.size(); ++i)
      PB_REQUIRE(std::isfinite(v[i]), path, ": parameter ", name, " holds a non-finite value (", v[i], ") at element ", i);
    for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = T(v[size_t(i)]);
    ++used;
  });
  for (const auto& [name, t] : f.tensors) {
    (void)t;
    bool known = false;
    ref::for_each_param(p, [&](const std::string& n, const ref::Mat<T>&, bool) { known = known || n == name; });
    PB_REQUIRE(known, path, ": unexpected tensor ", name, " (not a parameter of this config)");
  }
}

// config.json with Hugging Face field names (architectures, hidden_size, ...).
nlohmann::json hf_config_json(const ref::ModelConfig& c);
// Reads a config written by hf_config_json (or a Hugging Face Llama/Mixtral config.json).
ref::ModelConfig model_config_from_json(const nlohmann::json& j, const std::string& path);
ref::ModelConfig read_model_config(const std::string& path);

}  // namespace pb::io
