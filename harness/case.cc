/* Case-file parsing with one-line errors naming the file, the case and the key. */
#include "harness/case.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "reference/common/error.h"
#include "optimized/parallel/cp_ring.h"
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

// A value of the type asked for, never a bent one: integers must be JSON integers in the
// type's range (2.9, true, 4294967298 for an int, -1 for a seed are refused), numbers
// finite; anything else the exact JSON type.
template <class T>
static T get(const json& j, const char* key, const std::string& where) {
  const json& v = j.at(key);
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    PB_REQUIRE(v.is_number_integer(), where, ": '", key, "' must be an integer, got ", v.dump());
    if constexpr (std::is_unsigned_v<T>) {
      PB_REQUIRE(v.is_number_unsigned(), where, ": '", key, "' must be a non-negative integer, got ", v.dump());
      PB_REQUIRE(v.get<uint64_t>() <= uint64_t(std::numeric_limits<T>::max()), where, ": '", key, "' is out of range (",
                 v.dump(), ")");
      return T(v.get<uint64_t>());
    } else {
      const bool fits = v.is_number_unsigned() ? v.get<uint64_t>() <= uint64_t(std::numeric_limits<T>::max())
                                               : v.get<int64_t>() >= int64_t(std::numeric_limits<T>::min()) &&
                                                     v.get<int64_t>() <= int64_t(std::numeric_limits<T>::max());
      PB_REQUIRE(fits, where, ": '", key, "' is out of range (", v.dump(), ")");
      return T(v.get<int64_t>());
    }
  } else if constexpr (std::is_floating_point_v<T>) {
    PB_REQUIRE(v.is_number() && std::isfinite(v.get<double>()), where, ": '", key, "' must be a finite number, got ",
               v.dump());
    return T(v.get<double>());
  } else {
    try {
      return v.get<T>();
    } catch (const json::exception&) {
      throw Error(where + ": '" + key + "' has the wrong type (" + v.dump() + ")");
    }
  }
}

// The keys a model object may hold: what the config reader uses and what a Hugging Face
// config.json written by parabench carries (so such a file can be pasted in); a misspelt
// key (hiden_size) is an error, never silently ignored.
static const std::set<std::string>& model_keys() {
  static const std::set<std::string> keys = [] {
    std::set<std::string> k = {"head_dim", "tie_word_embeddings", "num_local_experts", "num_experts_per_tok",
                               "router_aux_loss_coef", "norm_topk_prob", "output_router_logits",
                               "parabench_dense_intermediate_size", "parabench_moe_layers", "moe_expert_capacity_factor"};
    const json hf = io::hf_config_json(ref::ModelConfig::dense(8, 2, 2, 8, 8, 1));
    for (const auto& [key, v] : hf.items()) k.insert(key);
    return k;
  }();
  return keys;
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
    only_keys(cj, {"name", "model", "layout", "features", "schedule", "backend", "dtype", "steps", "seed", "train",
                   "cp_kind", "cp_balance", "cp_ulysses", "moe_dispatcher", "recompute_method", "recompute_num_layers", "zero_stage", "bucket_size", "mc2_chunks",
                   "pp_layers", "pp_first_layers", "pp_last_layers", "chimera_pipelines", "pp_update_every", "terapipe_slices",
                   "tp_kind", "tp_depth"},
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
    only_keys(mj, model_keys(), where + ": model");
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
    if (cj.contains("cp_kind")) c.cp_kind = get<std::string>(cj, "cp_kind", where);
    if (cj.contains("cp_balance")) c.cp_balance = get<std::string>(cj, "cp_balance", where);
    if (cj.contains("cp_ulysses")) c.cp_ulysses = get<int>(cj, "cp_ulysses", where);
    if (cj.contains("moe_dispatcher")) c.moe_dispatcher = get<std::string>(cj, "moe_dispatcher", where);
    if (cj.contains("recompute_method")) c.recompute_method = get<std::string>(cj, "recompute_method", where);
    if (cj.contains("recompute_num_layers")) c.recompute_num_layers = get<int>(cj, "recompute_num_layers", where);
    if (cj.contains("bucket_size")) {
      c.bucket_size = get<int64_t>(cj, "bucket_size", where);  // DP's buckets (ZeRO-1 shards each)
      PB_REQUIRE(c.bucket_size >= 0, where, ": bucket_size ", c.bucket_size, " (elements, >= 0)");
    }
    if (cj.contains("mc2_chunks")) {
      c.mc2_chunks = get<int>(cj, "mc2_chunks", where);
      PB_REQUIRE(std::find(c.features.begin(), c.features.end(), "mc2") != c.features.end(), where,
                 ": mc2_chunks needs the feature mc2");
    }
    if (cj.contains("pp_layers")) {
      if (cj["pp_layers"].is_string()) {
        PB_REQUIRE(cj["pp_layers"] == "balanced", where, ": pp_layers is a list of layers per stage or \"balanced\", "
                   "got \"", cj["pp_layers"].get<std::string>(), "\"");
        c.pp_balanced = true;
      } else {
        c.pp_layers = get<std::vector<int64_t>>(cj, "pp_layers", where);
      }
    }
    if (cj.contains("chimera_pipelines")) c.chimera_pipelines = get<int>(cj, "chimera_pipelines", where);
    if (cj.contains("terapipe_slices")) c.terapipe_slices = get<int>(cj, "terapipe_slices", where);
    if (cj.contains("tp_kind")) c.tp_kind = get<std::string>(cj, "tp_kind", where);
    if (cj.contains("tp_depth")) c.tp_depth = get<int>(cj, "tp_depth", where);
    if (cj.contains("pp_update_every")) c.pp_update_every = get<int>(cj, "pp_update_every", where);
    if (cj.contains("pp_first_layers")) c.pp_first_layers = get<int64_t>(cj, "pp_first_layers", where);
    if (cj.contains("pp_last_layers")) c.pp_last_layers = get<int64_t>(cj, "pp_last_layers", where);
    for (const char* k : {"terapipe_slices", "pp_update_every", "pp_first_layers", "pp_last_layers", "tp_depth"})
      PB_REQUIRE(!cj.contains(k) || cj[k].get<int64_t>() >= 1, where, ": ", k, " must be >= 1, got ",
                 cj.contains(k) ? cj[k].get<int64_t>() : 0);
    if (cj.contains("zero_stage")) {
      c.zero_stage = get<int>(cj, "zero_stage", where);
      PB_REQUIRE(std::find(c.features.begin(), c.features.end(), "distributed_optimizer") != c.features.end(), where,
                 ": zero_stage needs the feature distributed_optimizer");
    }
    PB_REQUIRE(c.cp_balance == "zigzag" || c.cp_balance == "contiguous", where, ": unknown cp_balance '",
               c.cp_balance, "' (zigzag, contiguous)");
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
  PB_REQUIRE(!std::filesystem::is_directory(path), path, " is a directory");
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

Features Case::typed_features() const {
  Features f = parse_features(features);
  f.cp_kind = cp_kind;
  f.cp_contiguous = cp_balance == "contiguous" || cp_kind == "ulysses";  // Ulysses splits contiguously
  f.cp_ulysses = cp_kind == "hybrid" ? cp_ulysses : 1;
  f.moe_dispatcher = moe_dispatcher;
  f.recompute_method = recompute_method;
  f.recompute_num_layers = recompute_num_layers;
  f.zero_stage = zero_stage;
  f.bucket_size = bucket_size;
  f.mc2_chunks = mc2_chunks;
  f.pp_layers = pp_layers;
  f.pp_balanced = pp_balanced;
  f.pp_first_layers = pp_first_layers;
  f.pp_last_layers = pp_last_layers;
  f.chimera_pipelines = chimera_pipelines;
  f.pp_update_every = pp_update_every;
  f.terapipe_slices = terapipe_slices;
  f.tp_kind = tp_kind;
  f.tp_depth = tp_depth;
  f.bf16 = dtype == "bf16";
  return f;
}

ref::TrainConfig Case::reference_train() const {
  ref::TrainConfig t = train;
  t.num_micro_batches = train.num_micro_batches * layout.dp;
  if (model.num_local_experts > 0 && model.moe_expert_capacity_factor) {
    // Capacity is per rank (Megatron drops locally): the group of a row is the (CP, TP)
    // rank that routes it -- its CP chunks, split in TP blocks under SP.
    const int64_t B = train.micro_batch_size, S = train.seq_length, c = layout.cp, tp = layout.tp;
    t.moe_token_groups.assign(size_t(B * S), 0);
    const Features f = typed_features();
    for (int64_t r = 0; r < c; ++r) {
      std::vector<int64_t> rows(size_t(B * S));
      if (c > 1)
        rows = cp_rows(B, S, int(c), int(r), f.cp_contiguous, f.cp_ulysses);
      else
        for (int64_t i = 0; i < B * S; ++i) rows[size_t(i)] = i;
      const int64_t per = int64_t(rows.size()) / tp;
      for (size_t i = 0; i < rows.size(); ++i) t.moe_token_groups[size_t(rows[i])] = r * tp + int64_t(i) / per;
    }
  }
  return t;
}

std::string Case::layout_str() const {
  if (tp_kind == "1d") return layout.str();
  return layout.str() + " (" + tp_kind + (tp_depth > 1 ? ", d" + std::to_string(tp_depth) : "") + ")";
}

Case Case::one_rank() const {
  Case c = *this;
  c.layout = Layout{};
  c.train.num_micro_batches = train.num_micro_batches * layout.dp;
  c.features.clear();
  c.pp_layers.clear(), c.pp_balanced = false, c.pp_first_layers = c.pp_last_layers = 0;  // one stage
  c.tp_kind = "1d", c.tp_depth = 1;  // no TP grid
  for (const auto& f : features)
    if (find_technique(f)->single_rank) c.features.push_back(f);
  return c;
}

}  // namespace pb::harness
