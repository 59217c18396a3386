/* The strict reader of results documents (see results_schema.h). Every accessor names the
 * document, case and field of what it refuses; no nlohmann type error can escape. */
#include "harness/results_schema.h"

#include <cmath>
#include <limits>
#include <set>

#include "reference/common/error.h"

namespace pb::harness {
namespace {

using nlohmann::json;

[[noreturn]] void malformed(const std::string& where, const std::string& what) { throw pb::Error(where + ": " + what); }

const json& need(const json& o, const char* key, const std::string& where) {
  auto it = o.find(key);
  if (it == o.end()) malformed(where, std::string("missing '") + key + "'");
  return *it;
}

std::string need_string(const json& o, const char* key, const std::string& where) {
  const json& v = need(o, key, where);
  if (!v.is_string()) malformed(where, std::string("'") + key + "' is not a string but " + v.type_name());
  return v.get<std::string>();
}

// A number; null reads as NaN (the results writer turns NaN into null).
double number_or_null(const json& v, const char* key, const std::string& where) {
  if (v.is_null()) return std::numeric_limits<double>::quiet_NaN();
  if (!v.is_number()) malformed(where, std::string("'") + key + "' is not a number but " + v.type_name());
  return v.get<double>();
}

double need_number(const json& o, const char* key, const std::string& where) {
  return number_or_null(need(o, key, where), key, where);
}

void optional_number(const json& o, const char* key, const std::string& where) {
  if (auto it = o.find(key); it != o.end()) number_or_null(*it, key, where);
}

int64_t integer(const json& v, const char* key, const std::string& where) {
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float() && v.get<double>() == std::floor(v.get<double>()) && std::fabs(v.get<double>()) < 9e15)
    return int64_t(v.get<double>());
  malformed(where, std::string("'") + key + "' is not an integer but " + v.dump());
}

int64_t need_count(const json& o, const char* key, const std::string& where) {
  const int64_t n = integer(need(o, key, where), key, where);
  if (n < 0) malformed(where, std::string("'") + key + "' is negative: " + std::to_string(n));
  return n;
}

void integer_or_null(const json& o, const char* key, const std::string& where) {
  const json& v = need(o, key, where);
  if (!v.is_null()) integer(v, key, where);
}

// An optional array of objects: absent or null reads as empty.
const json& objects(const json& o, const char* key, const std::string& where) {
  static const json empty = json::array();
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return empty;
  if (!it->is_array()) malformed(where, std::string("'") + key + "' is not an array but " + it->type_name());
  for (size_t i = 0; i < it->size(); ++i)
    if (!(*it)[i].is_object())
      malformed(where, std::string(key) + "[" + std::to_string(i) + "] is not an object but " + (*it)[i].type_name());
  return *it;
}

// An optional object: absent or null reads as nullptr.
const json* object(const json& o, const char* key, const std::string& where) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return nullptr;
  if (!it->is_object()) malformed(where, std::string("'") + key + "' is not an object but " + it->type_name());
  return &*it;
}

// One comm row. Rows written before a row was one call size have no "bytes_per_call":
// their size reads as bytes / calls.
void read_comm_row(const json& r, const std::string& w, ResultCase& out) {
  const int64_t calls = need_count(r, "calls", w), bytes = need_count(r, "bytes", w);
  const bool sized = r.contains("bytes_per_call");
  const int64_t size = sized ? need_count(r, "bytes_per_call", w) : calls > 0 ? bytes / calls : 0;
  out.comm_sized = out.comm_sized && sized;
  CommKey key{need_string(r, "group", w), need_string(r, "op", w), need_string(r, "phase", w), size};
  if (out.comm.count(key)) malformed(w, "duplicate row " + comm_key_text(key));
  out.comm[key] = {calls, bytes};
  for (const char* k : {"bus_bytes", "predicted_calls", "predicted_bytes", "predicted_bus_bytes"}) optional_number(r, k, w);
}

void read_checks(const json& c, const std::string& where, ResultCase& out) {
  const json& checks = objects(c, "checks", where);
  for (size_t i = 0; i < checks.size(); ++i) {
    const std::string w = where + ": checks[" + std::to_string(i) + "]";
    const json& p = need(checks[i], "pass", w);
    if (!p.is_boolean()) malformed(w, std::string("'pass' is not a boolean but ") + p.dump());
    out.checks.push_back({need_string(checks[i], "tensor", w), need_number(checks[i], "rel_err", w),
                          need_number(checks[i], "tol", w), p.get<bool>()});
    optional_number(checks[i], "max_abs", w);
    optional_number(checks[i], "baseline_err", w);
  }
}

void read_memory(const json& c, const std::string& where, ResultCase& out) {
  const json& memory = objects(c, "memory", where);
  for (size_t i = 0; i < memory.size(); ++i) {
    const std::string w = where + ": memory[" + std::to_string(i) + "]";
    const int64_t rank = need_count(memory[i], "rank", w);
    const std::string category = need_string(memory[i], "category", w);
    integer_or_null(memory[i], "measured_bytes", w);
    integer_or_null(memory[i], "predicted_bytes", w);
    const json& m = memory[i]["measured_bytes"];
    if (m.is_number()) out.memory[{rank, category}] = m.get<int64_t>();
  }
}

void read_pipeline(const json& c, const std::string& where) {
  const json* pl = object(c, "pipeline", where);
  if (!pl) return;
  const std::string w = where + ": pipeline";
  for (const char* k : {"pp", "vpp", "micro_batches", "simulated_total_units", "update_every"}) optional_number(*pl, k, w);
  const json& stages = objects(*pl, "stages", w);
  for (size_t i = 0; i < stages.size(); ++i)
    for (const char* k : {"stage", "rank", "busy_us", "total_us", "measured_idle_fraction", "simulated_idle_fraction",
                          "simulated_peak_in_flight", "simulated_peak_held", "weight_versions",
                          "predicted_weight_versions"})
      optional_number(stages[i], k, w + ": stages[" + std::to_string(i) + "]");
}

ResultCase read_case(const json& c, const std::string& at) {
  if (!c.is_object()) malformed(at, std::string("not an object but ") + c.type_name());
  ResultCase out;
  out.name = need_string(c, "name", at);
  const std::string where = at + " (" + out.name + ")";
  out.status = need_string(c, "status", where);
  static const std::set<std::string> statuses = {"pass", "fail", "error", "skip"};
  if (!statuses.count(out.status))
    malformed(where, "status '" + out.status + "' is none of pass, fail, error, skip");
  if (auto it = c.find("error"); it != c.end() && !it->is_null()) {
    if (!it->is_string()) malformed(where, std::string("'error' is not a string but ") + it->type_name());
    out.error = it->get<std::string>();
  }
  read_checks(c, where, out);
  read_memory(c, where, out);
  const json& comm = objects(c, "comm", where);
  for (size_t i = 0; i < comm.size(); ++i) read_comm_row(comm[i], where + ": comm[" + std::to_string(i) + "]", out);
  if (const json* t = object(c, "throughput", where)) {
    const std::string w = where + ": throughput";
    for (const char* k : {"step_ms_min", "step_ms_max", "tokens_per_s", "model_tflops", "mfu", "peak_tflops"})
      optional_number(*t, k, w);
    if (t->contains("step_ms_median")) {
      const double m = need_number(*t, "step_ms_median", w);
      if (!std::isnan(m)) out.median = m;
    }
  }
  read_pipeline(c, where);
  if (const json* cp = object(c, "cp", where)) {
    const json& pairs = need(*cp, "attention_pairs", where + ": cp");
    if (!pairs.is_array()) malformed(where + ": cp", std::string("'attention_pairs' is not an array but ") + pairs.type_name());
    for (size_t i = 0; i < pairs.size(); ++i) integer(pairs[i], "attention_pairs", where + ": cp");
    optional_number(*cp, "attention_pairs_max_over_min", where + ": cp");
  }
  if (const json* moe = object(c, "moe", where)) {  // routing statistics
    const std::string w = where + ": moe";
    for (const char* k : {"steps", "ranks"}) {
      const json& a = need(*moe, k, w);
      if (!a.is_array()) malformed(w, std::string("'") + k + "' is not an array but " + a.type_name());
    }
    for (const json& r : (*moe)["ranks"]) {
      if (!r.is_object()) malformed(w, "a rank entry is not an object");
      for (const char* k : {"rank", "dispatched", "received", "dropped"}) integer(need(r, k, w), k, w);
    }
    for (const json& st : (*moe)["steps"]) {
      if (!st.is_object()) malformed(w, "a step entry is not an object");
      optional_number(st, "max_over_mean", w);
    }
  }
  return out;
}

}  // namespace

std::string comm_key_text(const CommKey& k) {
  const int64_t size = std::get<3>(k);
  return "(" + std::get<0>(k) + ", " + std::get<1>(k) + ", " + std::get<2>(k) +
         (size == kWholePhase ? std::string() : ", " + std::to_string(size) + " B/call") + ")";
}

ResultsDocument read_results(const json& doc, const std::string& which) {
  try {
    if (!doc.is_object()) malformed(which, std::string("not a JSON object but ") + doc.type_name());
    auto schema = doc.find("schema");
    if (schema == doc.end() || !schema->is_string() || *schema != kResultsSchema)
      malformed(which, "schema is " + (schema == doc.end() ? std::string("missing") : schema->dump()) +
                           ", expected \"" + kResultsSchema + "\"" +
                           (schema == doc.end() && doc.contains("cases") ? " (a case file? report and compare read "
                                                                           "the results of parabench run --out)"
                                                                         : ""));
    ResultsDocument out;
    if (auto it = doc.find("complete"); it != doc.end()) {
      if (!it->is_boolean()) malformed(which, std::string("'complete' is not a boolean but ") + it->dump());
      out.complete = it->get<bool>();
    }
    const json& cases = need(doc, "cases", which);
    if (!cases.is_array()) malformed(which, std::string("'cases' is not an array but ") + cases.type_name());
    std::set<std::string> names;
    for (size_t i = 0; i < cases.size(); ++i) {
      out.cases.push_back(read_case(cases[i], which + ": cases[" + std::to_string(i) + "]"));
      if (!names.insert(out.cases.back().name).second)
        malformed(which, "duplicate case name '" + out.cases.back().name + "'");
    }
    return out;
  } catch (const nlohmann::json::exception& e) {
    throw pb::Error(which + ": malformed results: " + e.what());
  }
}

}  // namespace pb::harness
