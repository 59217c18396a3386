/* Case-file parsing with one-line errors naming the file, the case and the key. */
#include "harness/case.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "reference/common/error.h"
#include "optimized/train/registry.h"
#include "reference/io/checkpoint.h"

namespace pb::harness {

using nlohmann::json;

std::string cases_dir() {
  if (const char* e = std::getenv("PB_CASES_DIR")) return e;
  return PB_SOURCE_DIR "/suites/cases";
}

std::vector<std::string> suite_names() {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& f : std::filesystem::directory_iterator(cases_dir(), ec))
    if (f.path().extension() == ".json") names.push_back(f.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

static void only_keys(const json& j, const std::set<std::string>& allowed, const std::string& where) {
  PB_REQUIRE(j.is_object(), where, ": expected a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it)
    PB_REQUIRE(allowed.count(it.key()), where, ": unknown key '", it.key(), "'");
}

template <class T>
static T get(const json& j, const char* key, const std::string& where) {
  try {
    return j.at(key).get<T>();
  } catch (const json::exception&) {
    throw Error(where + ": '" + key + "' has the wrong type (" + j.at(key).dump() + ")");
  }
}

static void apply_train(ref::TrainConfig& t, const json& j, const std::string& where) {
  only_keys(j, {"micro_batch_size", "seq_length", "num_micro_batches", "lr", "beta1", "beta2", "adam_eps",
                "weight_decay", "clip_grad"},
            where + ".train");
  if (j.contains("micro_batch_size")) t.micro_batch_size = get<int64_t>(j, "micro_batch_size", where);
  if (j.contains("seq_length")) t.seq_length = get<int64_t>(j, "seq_length", where);
  if (j.contains("num_micro_batches")) t.num_micro_batches = get<int64_t>(j, "num_micro_batches", where);
  if (j.contains("lr")) t.lr = get<double>(j, "lr", where);
  if (j.contains("beta1")) t.beta1 = get<double>(j, "beta1", where);
  if (j.contains("beta2")) t.beta2 = get<double>(j, "beta2", where);
  if (j.contains("adam_eps")) t.adam_eps = get<double>(j, "adam_eps", where);
  if (j.contains("weight_decay")) t.weight_decay = get<double>(j, "weight_decay", where);
  if (j.contains("clip_grad")) t.clip_grad = get<double>(j, "clip_grad", where);
}

static void apply_common(Case& c, const json& j, const std::string& where) {
  if (j.contains("backend")) c.backend = get<std::string>(j, "backend", where);
  if (j.contains("dtype")) c.dtype = get<std::string>(j, "dtype", where);
  if (j.contains("steps")) c.train.steps = get<int64_t>(j, "steps", where);
  if (j.contains("seed")) c.train.seed = get<uint64_t>(j, "seed", where);
  if (j.contains("train")) apply_train(c.train, j["train"], where);
}

Suite parse_suite(const json& j, const std::string& origin) {
  only_keys(j, {"suite", "description", "models", "defaults", "cases"}, origin);
  PB_REQUIRE(j.contains("cases") && j["cases"].is_array() && !j["cases"].empty(), origin,
             ": needs a non-empty 'cases' array");
  Suite s;
  s.name = j.contains("suite") ? get<std::string>(j, "suite", origin) : origin;
  const json models = j.value("models", json::object());
  PB_REQUIRE(models.is_object(), origin, ": 'models' must be an object");
  Case defaults;
  defaults.train.steps = 3;
  if (j.contains("defaults")) {
    only_keys(j["defaults"], {"backend", "dtype", "steps", "seed", "train", "model"}, origin + ": defaults");
    apply_common(defaults, j["defaults"], origin + ": defaults");
  }
  std::set<std::string> names;
  for (const auto& cj : j["cases"]) {
    PB_REQUIRE(cj.is_object() && cj.contains("name") && cj["name"].is_string(), origin,
               ": every case needs a string 'name'");
    const std::string where = origin + ": case " + cj["name"].get<std::string>();
    only_keys(cj, {"name", "model", "layout", "features", "schedule", "backend", "dtype", "steps", "seed", "train"},
              where);
    Case c = defaults;
    c.name = cj["name"].get<std::string>();
    PB_REQUIRE(names.insert(c.name).second, where, ": duplicate case name");
    json mj = cj.contains("model") ? cj["model"] : j.value("defaults", json::object()).value("model", json());
    if (mj.is_string()) {
      PB_REQUIRE(models.contains(mj.get<std::string>()), where, ": unknown model '", mj.get<std::string>(), "'");
      mj = models[mj.get<std::string>()];
    }
    PB_REQUIRE(mj.is_object(), where, ": 'model' must name a model or be a config object");
    try {
      c.model = io::model_config_from_json(mj, where + ": model");
    } catch (const Error& e) {
      throw Error(where + ": " + e.what());
    }
    c.model_json = io::hf_config_json(c.model);
    if (cj.contains("layout")) {
      const json& l = cj["layout"];
      only_keys(l, {Layout::keys().begin(), Layout::keys().end()}, where + ".layout");
      for (const auto& key : Layout::keys())
        if (l.contains(key)) *c.layout.degree(key) = get<int>(l, key.c_str(), where + ".layout");
    }
    if (cj.contains("features")) {
      c.features = get<std::vector<std::string>>(cj, "features", where);
      try {
        parse_features(c.features, true);  // every name a feature the registry knows
      } catch (const Error& e) {
        throw Error(where + ": " + e.what());
      }
    }
    if (cj.contains("schedule")) c.schedule = get<std::string>(cj, "schedule", where);
    apply_common(c, cj, where);
    s.cases.push_back(std::move(c));
  }
  return s;
}

Suite load_suite(const std::string& name_or_path) {
  std::string path = name_or_path;
  if (!std::filesystem::exists(path)) {
    path = cases_dir() + "/" + name_or_path + ".json";
    PB_REQUIRE(std::filesystem::exists(path), "no suite or case file '", name_or_path, "' (suites: ",
               [] {
                 std::string s;
                 for (const auto& n : suite_names()) s += (s.empty() ? "" : ", ") + n;
                 return s;
               }(),
               ")");
  }
  std::ifstream in(path);
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw Error(path + ": malformed JSON (" + std::string(e.what()) + ")");
  }
  return parse_suite(j, path);
}

}  // namespace pb::harness

namespace pb::harness {

Case Case::one_rank() const {
  Case c = *this;
  c.layout = Layout{};
  c.train.num_micro_batches = train.num_micro_batches * layout.dp;
  c.features.clear();
  for (const auto& f : features)
    if (find_technique(f)->single_rank) c.features.push_back(f);
  return c;
}

}  // namespace pb::harness
