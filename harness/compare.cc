/* Baseline vs current results: the regression gate (see compare.h).
 *
 * Both documents are first read into small structs by a strict reader that names the
 * document, case and field of anything malformed; the comparison then works on the structs
 * only, so no nlohmann type error can escape from it.
 */
#include "harness/compare.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "reference/common/error.h"

namespace pb::harness {
namespace {

using nlohmann::json;

constexpr const char* kSchema = "parabench.results/1";

struct Check {
  std::string tensor;
  double rel_err = 0, tol = 0;  // rel_err is NaN when the document holds null
  bool pass = true;
};

// group, op, phase, bytes per call (kWholePhase: every size of the group, op and phase)
using CommKey = std::tuple<std::string, std::string, std::string, int64_t>;
constexpr int64_t kWholePhase = -1;
struct CommRow {
  int64_t calls = 0, bytes = 0;
};

struct Case {
  std::string name, status, error;
  std::vector<Check> checks;
  std::map<CommKey, CommRow> comm;
  bool comm_sized = true;        // every comm row has "bytes_per_call" (false: an older document)
  std::optional<double> median;  // throughput.step_ms_median
};

// ---- strict reader

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
double need_number(const json& o, const char* key, const std::string& where) {
  const json& v = need(o, key, where);
  if (v.is_null()) return std::numeric_limits<double>::quiet_NaN();
  if (!v.is_number()) malformed(where, std::string("'") + key + "' is not a number but " + v.type_name());
  return v.get<double>();
}

int64_t need_integer(const json& o, const char* key, const std::string& where) {
  const json& v = need(o, key, where);
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float() && v.get<double>() == std::floor(v.get<double>()) && std::fabs(v.get<double>()) < 9e15)
    return int64_t(v.get<double>());
  malformed(where, std::string("'") + key + "' is not an integer but " + v.dump());
}

// An optional array of objects: absent or null reads as empty.
const json& objects(const json& o, const char* key, const std::string& where) {
  static const json empty = json::array();
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return empty;
  if (!it->is_array()) malformed(where, std::string("'") + key + "' is not an array but " + it->type_name());
  for (size_t i = 0; i < it->size(); ++i)
    if (!(*it)[i].is_object()) malformed(where, std::string(key) + "[" + std::to_string(i) + "] is not an object");
  return *it;
}

std::string key_text(const CommKey& k) {
  const int64_t size = std::get<3>(k);
  return "(" + std::get<0>(k) + ", " + std::get<1>(k) + ", " + std::get<2>(k) +
         (size == kWholePhase ? std::string() : ", " + std::to_string(size) + " B/call") + ")";
}

// One comm row. Rows written before a row was one call size have no "bytes_per_call":
// their size reads as bytes / calls.
void read_comm_row(const json& r, const std::string& w, Case& out) {
  const int64_t calls = need_integer(r, "calls", w), bytes = need_integer(r, "bytes", w);
  const bool sized = r.contains("bytes_per_call");
  const int64_t size = sized ? need_integer(r, "bytes_per_call", w) : calls > 0 ? bytes / calls : 0;
  out.comm_sized = out.comm_sized && sized;
  CommKey key{need_string(r, "group", w), need_string(r, "op", w), need_string(r, "phase", w), size};
  if (out.comm.count(key)) malformed(w, "duplicate row " + key_text(key));
  out.comm[key] = {calls, bytes};
}

Case read_case(const json& c, const std::string& at) {
  if (!c.is_object()) malformed(at, "not an object");
  Case out;
  out.name = need_string(c, "name", at);
  const std::string where = at + " (" + out.name + ")";
  out.status = need_string(c, "status", where);
  if (auto it = c.find("error"); it != c.end() && it->is_string()) out.error = it->get<std::string>();
  const json& checks = objects(c, "checks", where);
  for (size_t i = 0; i < checks.size(); ++i) {
    const std::string w = where + ": checks[" + std::to_string(i) + "]";
    const json& p = need(checks[i], "pass", w);
    if (!p.is_boolean()) malformed(w, "'pass' is not a boolean");
    out.checks.push_back({need_string(checks[i], "tensor", w), need_number(checks[i], "rel_err", w),
                          need_number(checks[i], "tol", w), p.get<bool>()});
  }
  const json& comm = objects(c, "comm", where);
  for (size_t i = 0; i < comm.size(); ++i) read_comm_row(comm[i], where + ": comm[" + std::to_string(i) + "]", out);
  if (auto it = c.find("throughput"); it != c.end() && !it->is_null()) {
    if (!it->is_object()) malformed(where, "'throughput' is not an object");
    if (it->contains("step_ms_median")) {
      double m = need_number(*it, "step_ms_median", where + ": throughput");
      if (!std::isnan(m)) out.median = m;
    }
  }
  return out;
}

std::vector<Case> read_document(const json& doc, const std::string& which) {
  if (!doc.is_object()) malformed(which, std::string("not a JSON object but ") + doc.type_name());
  auto schema = doc.find("schema");
  if (schema == doc.end() || !schema->is_string() || *schema != kSchema)
    malformed(which, "schema is " + (schema == doc.end() ? std::string("missing") : schema->dump()) + ", expected \"" +
                         kSchema + "\"");
  const json& cases = need(doc, "cases", which);
  if (!cases.is_array()) malformed(which, std::string("'cases' is not an array but ") + cases.type_name());
  std::vector<Case> out;
  std::set<std::string> names;
  for (size_t i = 0; i < cases.size(); ++i) {
    out.push_back(read_case(cases[i], which + ": cases[" + std::to_string(i) + "]"));
    if (!names.insert(out.back().name).second) malformed(which, "duplicate case name '" + out.back().name + "'");
  }
  return out;
}

// ---- comparison

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string worst_rel_err(const Case* c) {
  if (!c || c->checks.empty()) return "—";
  double worst = -1;
  for (const Check& ch : c->checks) {
    if (std::isnan(ch.rel_err)) return "NaN";
    worst = std::max(worst, ch.rel_err);
  }
  return fmt("%.2e", worst);
}

std::string median_text(const Case* c) { return c && c->median ? fmt("%.2f", *c->median) : "—"; }

void check_numerics(const Case& c, std::vector<std::string>& problems) {
  if (c.status != "pass")
    problems.push_back(c.name + ": status " + c.status + (c.error.empty() ? "" : " (" + c.error + ")") +
                       ", expected pass");
  for (const Check& ch : c.checks)
    if (!ch.pass || std::isnan(ch.rel_err) || ch.rel_err > ch.tol)
      problems.push_back(c.name + ": check " + ch.tensor + " rel_err " + fmt("%.2e", ch.rel_err) + " tol " +
                         fmt("%.2e", ch.tol) + (ch.pass ? "" : " (pass = false)"));
}

// The rows of each (group, op, phase) summed over their call sizes.
std::map<CommKey, CommRow> whole_phases(const std::map<CommKey, CommRow>& rows) {
  std::map<CommKey, CommRow> out;
  for (const auto& [k, r] : rows) {
    CommRow& o = out[{std::get<0>(k), std::get<1>(k), std::get<2>(k), kWholePhase}];
    o.calls += r.calls;
    o.bytes += r.bytes;
  }
  return out;
}

// Returns whether every row matches exactly: per (group, op, phase, bytes per call), or,
// when either document is older (an old row may mix sizes), per (group, op, phase) summed.
bool check_comm(const Case& base, const Case& cur, std::vector<std::string>& problems) {
  size_t before = problems.size();
  const bool sized = base.comm_sized && cur.comm_sized;
  const std::map<CommKey, CommRow> b_rows = sized ? base.comm : whole_phases(base.comm);
  const std::map<CommKey, CommRow> c_rows = sized ? cur.comm : whole_phases(cur.comm);
  for (const auto& [key, b] : b_rows) {
    auto it = c_rows.find(key);
    if (it == c_rows.end()) {
      problems.push_back(cur.name + ": comm row " + key_text(key) + " missing in current");
    } else if (it->second.calls != b.calls || it->second.bytes != b.bytes) {
      problems.push_back(cur.name + ": comm row " + key_text(key) + " calls " + std::to_string(b.calls) + " -> " +
                         std::to_string(it->second.calls) + ", bytes " + std::to_string(b.bytes) + " -> " +
                         std::to_string(it->second.bytes));
    }
  }
  for (const auto& [key, c] : c_rows)
    if (!b_rows.count(key)) problems.push_back(cur.name + ": comm row " + key_text(key) + " not in baseline");
  return problems.size() == before;
}

// Returns the "baseline → current (×ratio)" cell.
std::string check_timing(const Case& base, const Case& cur, const CompareOptions& opt,
                         std::vector<std::string>& problems) {
  std::string cell = median_text(&base) + " → " + median_text(&cur);
  if (!base.median || !cur.median || *base.median <= 0) {
    if (opt.timing && base.median && !cur.median && cur.status == "pass")
      problems.push_back(cur.name + ": no step_ms_median in current (baseline " + fmt("%.2f", *base.median) + " ms)");
    return cell;
  }
  double ratio = *cur.median / *base.median;
  if (opt.timing && *cur.median > *base.median * (1.0 + opt.time_tol))
    problems.push_back(cur.name + ": step_ms_median " + fmt("%.2f", *cur.median) + " ms vs baseline " +
                       fmt("%.2f", *base.median) + " ms, ratio " + fmt("%.2f", ratio) + " > " +
                       fmt("%.2f", 1.0 + opt.time_tol));
  return cell + " (×" + fmt("%.2f", ratio) + ")";
}

std::string md_cell(const std::string& v) {
  std::string out;
  for (char ch : v) out += ch == '|' ? std::string("\\|") : ch == '\n' ? std::string(" ") : std::string(1, ch);
  return out;
}

std::string row(const std::vector<std::string>& cells) {
  std::string l = "|";
  for (const auto& c : cells) l += " " + md_cell(c) + " |";
  return l + "\n";
}

}  // namespace

CompareResult compare_results(const nlohmann::json& baseline, const nlohmann::json& current,
                              const CompareOptions& opt) {
  if (!(opt.time_tol >= 0)) throw pb::Error("compare: time_tol must be >= 0, got " + fmt("%g", opt.time_tol));
  std::vector<Case> base, cur;
  try {
    base = read_document(baseline, "baseline");
    cur = read_document(current, "current");
  } catch (const nlohmann::json::exception& e) {
    throw pb::Error(std::string("compare: malformed results: ") + e.what());
  }
  std::map<std::string, const Case*> by_name;
  for (const Case& c : cur) by_name[c.name] = &c;

  CompareResult r;
  r.table = row({"case", "status", "worst rel_err (baseline → current)", "comm",
                 "step ms median (baseline → current)", "verdict"});
  r.table += "|---|---|---:|---|---:|---|\n";
  for (const Case& b : base) {
    auto it = by_name.find(b.name);
    if (it == by_name.end()) {
      r.problems.push_back(b.name + ": in baseline, missing in current");
      r.table += row({b.name, "missing", worst_rel_err(&b) + " → —", "—", median_text(&b) + " → —", "FAIL"});
      continue;
    }
    const Case& c = *it->second;
    size_t before = r.problems.size();
    check_numerics(c, r.problems);
    bool comm_same = check_comm(b, c, r.problems);
    std::string timing = check_timing(b, c, opt, r.problems);
    std::string status = b.status == c.status ? c.status : b.status + " → " + c.status;
    r.table += row({c.name, status, worst_rel_err(&b) + " → " + worst_rel_err(&c), comm_same ? "same" : "differs",
                    timing, r.problems.size() == before ? "ok" : "FAIL"});
  }
  std::set<std::string> in_base;
  for (const Case& b : base) in_base.insert(b.name);
  for (const Case& c : cur)
    if (!in_base.count(c.name))
      r.table += row({c.name, c.status, "— → " + worst_rel_err(&c), "—", "— → " + median_text(&c),
                      "note: new, not in baseline"});
  r.ok = r.problems.empty();
  return r;
}

}  // namespace pb::harness
