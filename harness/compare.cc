/* Baseline vs current results: the regression gate (see compare.h).
 *
 * Both documents are first read into small structs by the strict reader report shares
 * (results_schema.h), which names the document, case and field of anything malformed; the
 * comparison then works on the structs only, so no nlohmann type error can escape from it.
 */
#include "harness/compare.h"
#include "harness/results_schema.h"

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

using Case = ResultCase;
using Check = ResultCheck;

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
      problems.push_back(cur.name + ": comm row " + comm_key_text(key) + " missing in current");
    } else if (it->second.calls != b.calls || it->second.bytes != b.bytes) {
      problems.push_back(cur.name + ": comm row " + comm_key_text(key) + " calls " + std::to_string(b.calls) + " -> " +
                         std::to_string(it->second.calls) + ", bytes " + std::to_string(b.bytes) + " -> " +
                         std::to_string(it->second.bytes));
    }
  }
  for (const auto& [key, c] : c_rows)
    if (!b_rows.count(key)) problems.push_back(cur.name + ": comm row " + comm_key_text(key) + " not in baseline");
  return problems.size() == before;
}

// Returns the "baseline → current (×ratio)" cell.
std::string check_timing(const Case& base, const Case& cur, const CompareOptions& opt,
                         std::vector<std::string>& problems, std::vector<std::string>& warnings) {
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
  if (opt.timing && *cur.median < *base.median * (1.0 - opt.refresh_tol))
    warnings.push_back(cur.name + ": step_ms_median " + fmt("%.2f", *cur.median) + " ms vs baseline " +
                       fmt("%.2f", *base.median) + " ms, ratio " + fmt("%.2f", ratio) + " < " +
                       fmt("%.2f", 1.0 - opt.refresh_tol) + ": faster, refresh the baseline");
  return cell + " (×" + fmt("%.2f", ratio) + ")";
}

// Returns "same", "within" (every category within mem_tol) or "differs".
std::string check_memory(const Case& base, const Case& cur, const CompareOptions& opt,
                         std::vector<std::string>& problems, std::vector<std::string>& warnings) {
  bool same = true, within = true;
  auto where = [&](const std::pair<int64_t, std::string>& k) {
    return cur.name + ": memory rank " + std::to_string(k.first) + " " + k.second;
  };
  for (const auto& [k, b] : base.memory) {
    auto it = cur.memory.find(k);
    if (it == cur.memory.end()) {
      problems.push_back(where(k) + " missing in current");
      within = same = false;
      continue;
    }
    const int64_t c = it->second;
    same = same && c == b;
    if (double(c) > double(b) * (1.0 + opt.mem_tol)) {
      problems.push_back(where(k) + " " + std::to_string(b) + " -> " + std::to_string(c) + " B, above " +
                         fmt("%.2f", 1.0 + opt.mem_tol) + " x the baseline");
      within = false;
    } else if (double(c) < double(b) * (1.0 - opt.mem_tol)) {
      warnings.push_back(where(k) + " " + std::to_string(b) + " -> " + std::to_string(c) +
                         " B: smaller, refresh the baseline");
    }
  }
  for (const auto& [k, c] : cur.memory)  // (a category the baseline predates)
    if (!base.memory.count(k)) {
      warnings.push_back(where(k) + " not in baseline: refresh the baseline");
      same = false;
    }
  return same ? "same" : within ? "within" : "differs";
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
  if (!(opt.refresh_tol >= 0 && opt.refresh_tol < 1))
    throw pb::Error("compare: refresh_tol must be in [0, 1), got " + fmt("%g", opt.refresh_tol));
  if (!(opt.mem_tol >= 0 && opt.mem_tol < 1)) throw pb::Error("compare: mem_tol must be in [0, 1), got " + fmt("%g", opt.mem_tol));
  const std::vector<Case> base = read_results(baseline, "baseline").cases;
  const std::vector<Case> cur = read_results(current, "current").cases;
  std::map<std::string, const Case*> by_name;
  for (const Case& c : cur) by_name[c.name] = &c;

  CompareResult r;
  r.table = row({"case", "status", "worst rel_err (baseline → current)", "comm", "memory",
                 "step ms median (baseline → current)", "verdict"});
  r.table += "|---|---|---:|---|---|---:|---|\n";
  for (const Case& b : base) {
    auto it = by_name.find(b.name);
    if (it == by_name.end()) {
      r.problems.push_back(b.name + ": in baseline, missing in current");
      r.table += row({b.name, "missing", worst_rel_err(&b) + " → —", "—", "—", median_text(&b) + " → —", "FAIL"});
      continue;
    }
    const Case& c = *it->second;
    size_t before = r.problems.size();
    check_numerics(c, r.problems);
    bool comm_same = check_comm(b, c, r.problems);
    const std::string memory = check_memory(b, c, opt, r.problems, r.warnings);
    std::string timing = check_timing(b, c, opt, r.problems, r.warnings);
    std::string status = b.status == c.status ? c.status : b.status + " → " + c.status;
    r.table += row({c.name, status, worst_rel_err(&b) + " → " + worst_rel_err(&c), comm_same ? "same" : "differs",
                    memory, timing, r.problems.size() == before ? "ok" : "FAIL"});
  }
  std::set<std::string> in_base;
  for (const Case& b : base) in_base.insert(b.name);
  for (const Case& c : cur)
    if (!in_base.count(c.name))
      r.table += row({c.name, c.status, "— → " + worst_rel_err(&c), "—", "—", "— → " + median_text(&c),
                      "note: new, not in baseline"});
  r.ok = r.problems.empty();
  return r;
}

}  // namespace pb::harness
