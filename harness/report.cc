/* Results file -> Markdown report and CSV tables (see report.h).
 *
 * The document is first validated by the reader compare uses (results_schema.h): what the
 * gate refuses, the report refuses, with the same one line. Each table is then built once
 * as strings (build_tables) and rendered either as a Markdown pipe table or as a CSV
 * section. Optional fields are read through the accessors below: one that is missing
 * prints "—" (Markdown) or an empty cell (CSV).
 */
#include "harness/report.h"
#include "harness/results_schema.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "reference/common/error.h"

namespace pb::harness {
namespace {

using nlohmann::json;

enum class Style { markdown, csv };

struct Table {
  std::string title;  // "Equivalence", ...
  std::string align;  // one 'l' or 'r' per column (Markdown)
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows = {};
};

// ---- lenient field access

const json* field(const json& o, const char* key) {
  if (!o.is_object()) return nullptr;
  auto it = o.find(key);
  return it == o.end() || it->is_null() ? nullptr : &*it;
}

std::string text(const json& o, const char* key, const std::string& fallback = "—") {
  const json* v = field(o, key);
  if (!v) return fallback;
  return v->is_string() ? v->get<std::string>() : v->dump();
}

std::optional<double> number(const json& o, const char* key) {
  const json* v = field(o, key);
  if (v && v->is_number()) return v->get<double>();
  return std::nullopt;
}

const json& object(const json& o, const char* key) {
  static const json empty = json::object();
  const json* v = field(o, key);
  return v && v->is_object() ? *v : empty;
}

const json& array(const json& o, const char* key) {
  static const json empty = json::array();
  const json* v = field(o, key);
  return v && v->is_array() ? *v : empty;
}

// ---- number formatting

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string none(Style s) { return s == Style::csv ? "" : "—"; }

std::string opt(const char* format, std::optional<double> v, Style s) { return v ? fmt(format, *v) : none(s); }

// Markdown: 512 B, 1.50 KiB, 3.25 MiB, 1.00 GiB. CSV: the exact count.
std::string bytes(std::optional<double> b, Style s) {
  if (!b) return none(s);
  if (s == Style::csv || std::fabs(*b) < 1024.0)
    return fmt(*b == std::floor(*b) ? "%.0f" : "%.2f", *b) + (s == Style::csv ? "" : " B");
  const char* units[] = {"KiB", "MiB", "GiB"};
  double v = *b / 1024.0;
  int u = 0;
  for (; u < 2 && std::fabs(v) >= 1024.0; ++u) v /= 1024.0;
  return fmt("%.2f ", v) + units[u];
}

// ---- the four tables

// "dp2 tp2", or "1 rank" when every degree is 1.
std::string layout(const json& c) {
  std::string out;
  for (const char* d : {"dp", "tp", "pp", "vpp", "cp", "ep"}) {
    auto n = number(object(c, "layout"), d);
    if (n && *n > 1) out += (out.empty() ? "" : " ") + std::string(d) + fmt("%.0f", *n);
  }
  const std::string kind = text(object(c, "tp_grid"), "kind", "1d");  // a grid of the tp ranks: "tp4 (2d)"
  if (kind != "1d") {
    const auto depth = number(object(c, "tp_grid"), "depth");
    out += " (" + kind + (depth && *depth > 1 ? fmt(", d%.0f", *depth) : "") + ")";
  }
  return out.empty() ? "1 rank" : out;
}

std::string status(const json& c) {
  std::string s = text(c, "status", "unknown");
  if (field(c, "error") && (s == "error" || s == "skip")) s += ": " + text(c, "error");
  return s;
}

// "loss.step1" -> "loss"; "comm" -> "comm". Known kinds sort first, in this order.
std::string kind_of(const std::string& tensor) { return tensor.substr(0, tensor.find('.')); }
int kind_rank(const std::string& k) {
  const char* known[] = {"loss", "grad", "param", "comm"};
  for (int i = 0; i < 4; ++i)
    if (k == known[i]) return i;
  return 4;
}

struct KindSummary {
  int tensors = 0;
  std::optional<double> worst_rel, worst_abs, tol_min, tol_max;
  std::string worst_tensor;
  bool nan = false, fail = false;

  // One check; a missing (null) rel_err is NaN and makes its tensor the worst for good.
  void add(const std::string& tensor, std::optional<double> rel, std::optional<double> abs,
           std::optional<double> tol, bool pass) {
    ++tensors;
    fail = fail || !pass;
    if (!nan && (!rel || !worst_rel || *rel > *worst_rel)) {
      nan = !rel;
      worst_rel = rel;
      worst_tensor = tensor;
    }
    if (abs && (!worst_abs || *abs > *worst_abs)) worst_abs = abs;
    if (tol) {
      tol_min = std::min(*tol, tol_min.value_or(*tol));
      tol_max = std::max(*tol, tol_max.value_or(*tol));
    }
  }
};

Table equivalence(const json& cases, Style s) {
  Table t{"Equivalence", "lllrrlrrl",
          {"case", "status", "kind", "tensors", "worst rel_err", "worst tensor", "worst max_abs", "tol", "result"}};
  for (const json& c : cases) {
    std::map<std::pair<int, std::string>, KindSummary> kinds;
    for (const json& ch : array(c, "checks")) {
      std::string tensor = text(ch, "tensor", "?");
      KindSummary& k = kinds[{kind_rank(kind_of(tensor)), kind_of(tensor)}];
      auto rel = number(ch, "rel_err"), tol = number(ch, "tol");
      const json* pass = field(ch, "pass");  // without it: rel_err <= tol
      k.add(tensor, rel, number(ch, "max_abs"), tol,
            pass && pass->is_boolean() ? pass->get<bool>() : (rel && tol && *rel <= *tol));
    }
    if (kinds.empty()) {
      std::string st = text(c, "status", "unknown");
      std::transform(st.begin(), st.end(), st.begin(), [](unsigned char ch) { return std::toupper(ch); });
      t.rows.push_back({text(c, "name"), status(c), none(s), "0", none(s), none(s), none(s), none(s), st});
    }
    for (const auto& [key, k] : kinds) {
      std::string tol = opt("%.2e", k.tol_max, s);
      if (k.tol_min && *k.tol_min != *k.tol_max) tol = fmt("%.2e", *k.tol_min) + ".." + tol;
      t.rows.push_back({text(c, "name"), status(c), key.second, std::to_string(k.tensors),
                        k.nan ? "NaN" : opt("%.2e", k.worst_rel, s), k.worst_tensor.empty() ? none(s) : k.worst_tensor,
                        opt("%.2e", k.worst_abs, s), tol, k.fail ? "FAIL" : "PASS"});
    }
  }
  return t;
}

Table throughput(const json& cases, Style s) {
  Table t{"Throughput", "lllllrrrrrrr",
          {"case", "layout", "features", "backend", "dtype", "step ms median", "min", "max", "tokens/s",
           "model TFLOP/s", "MFU", "peak TFLOP/s"}};
  for (const json& c : cases) {
    std::string features;
    for (const json& f : array(c, "features"))
      features += (features.empty() ? "" : ",") + (f.is_string() ? f.get<std::string>() : f.dump());
    const json& tp = object(c, "throughput");
    auto mfu = number(tp, "mfu");
    t.rows.push_back({text(c, "name"), layout(c), features.empty() ? none(s) : features, text(c, "backend", none(s)),
                      text(c, "dtype", none(s)), opt("%.2f", number(tp, "step_ms_median"), s),
                      opt("%.2f", number(tp, "step_ms_min"), s), opt("%.2f", number(tp, "step_ms_max"), s),
                      opt("%.1f", number(tp, "tokens_per_s"), s), opt("%.4g", number(tp, "model_tflops"), s),
                      mfu ? fmt("%.2f%%", 100.0 * *mfu) : none(s), opt("%.1f", number(tp, "peak_tflops"), s)});
  }
  return t;
}

Table memory(const json& cases, Style s) {
  Table t{"Memory", "lrlrrr",
          {"case", "rank", "category", "measured", "predicted", "measured/predicted"}};
  for (const json& c : cases)
    for (const json& m : array(c, "memory")) {
      auto measured = number(m, "measured_bytes"), predicted = number(m, "predicted_bytes");
      std::string ratio = measured && predicted && *predicted != 0 ? fmt("%.3f", *measured / *predicted) : none(s);
      t.rows.push_back({text(c, "name"), text(m, "rank", none(s)), text(m, "category", none(s)), bytes(measured, s),
                        bytes(predicted, s), ratio});
    }
  return t;
}

// A row's payload bytes per call: its "bytes_per_call", or in results written before rows
// were one call size, bytes / calls (the average of the sizes it mixed).
std::optional<double> bytes_per_call(const json& r) {
  if (auto b = number(r, "bytes_per_call")) return b;
  auto calls = number(r, "calls"), b = number(r, "bytes");
  if (calls && b && *calls > 0) return *b / *calls;
  return std::nullopt;
}

// Rows sort by phase (forward, backward, optimizer), then group, op, and the largest call first.
auto comm_order(const json& r) {
  const std::string p = text(r, "phase");
  const int phase = p == "forward" ? 0 : p == "backward" ? 1 : p == "optimizer" ? 2 : 3;
  return std::tuple(phase, text(r, "group"), text(r, "op"), -bytes_per_call(r).value_or(0));
}

// Measured calls, payload and bus bytes equal the prediction (bus bytes to half a byte:
// a sum of per-call factors against one product); "—" without a prediction.
std::string comm_match(const json& r, Style s) {
  auto calls = number(r, "calls"), b = number(r, "bytes"), bus = number(r, "bus_bytes");
  auto pcalls = number(r, "predicted_calls"), pbytes = number(r, "predicted_bytes");
  auto pbus = number(r, "predicted_bus_bytes");
  if (!pcalls || !pbytes) return none(s);
  const bool bus_ok = !pbus || (bus && std::fabs(*bus - *pbus) < 0.5);
  return calls == pcalls && b == pbytes && bus_ok ? "✓" : "✗";
}

// One row per call size: payload and bus bytes (nccl-tests factors), per call and in all,
// measured next to predicted.
Table communication(const json& cases, Style s) {
  Table t{"Communication", "llllrrrrrrrrrl",
          {"case", "group", "op", "phase", "bytes/call", "calls", "total bytes", "bus bytes/call", "total bus bytes",
           "share %", "predicted calls", "predicted bytes", "predicted bus bytes", "match"}};
  for (const json& c : cases) {
    std::vector<const json*> rows;
    double total = 0;
    for (const json& r : array(c, "comm")) rows.push_back(&r), total += number(r, "bytes").value_or(0);
    std::stable_sort(rows.begin(), rows.end(),
                     [](const json* a, const json* b) { return comm_order(*a) < comm_order(*b); });
    for (const json* r : rows) {
      auto calls = number(*r, "calls"), b = number(*r, "bytes"), bus = number(*r, "bus_bytes");
      std::optional<double> bus_call;
      if (calls && bus && *calls > 0) bus_call = *bus / *calls;
      t.rows.push_back({text(c, "name"), text(*r, "group"), text(*r, "op"), text(*r, "phase"),
                        bytes(bytes_per_call(*r), s), opt("%.0f", calls, s), bytes(b, s), bytes(bus_call, s),
                        bytes(bus, s), b && total > 0 ? fmt("%.2f", 100.0 * *b / total) : none(s),
                        opt("%.0f", number(*r, "predicted_calls"), s), bytes(number(*r, "predicted_bytes"), s),
                        bytes(number(*r, "predicted_bus_bytes"), s), comm_match(*r, s)});
    }
  }
  return t;
}

// Pipeline cases: per stage, the measured bubble (idle fraction of the last step) next to
// the simulated one at unit costs, and the activation peak next to the schedule walk.
Table pipeline(const json& cases, Style s) {
  Table t{"Pipeline", "lllrrrrrrrrrr",
          {"case", "schedule", "layout", "m", "stage", "step ms median", "measured idle", "simulated idle",
           "sim. peak in flight", "sim. peak F-W", "weight versions", "activations measured", "predicted"}};
  for (const json& c : cases) {
    const json& pl = object(c, "pipeline");
    for (const json& st : array(pl, "stages")) {
      std::optional<double> meas, pred;
      for (const json& m : array(c, "memory"))
        if (text(m, "category") == "activations" && number(m, "rank") == number(st, "rank"))
          meas = number(m, "measured_bytes"), pred = number(m, "predicted_bytes");
      t.rows.push_back({text(c, "name"), text(pl, "schedule"), layout(c), opt("%.0f", number(pl, "micro_batches"), s),
                        opt("%.0f", number(st, "stage"), s), opt("%.2f", number(object(c, "throughput"), "step_ms_median"), s),
                        opt("%.3f", number(st, "measured_idle_fraction"), s),
                        opt("%.3f", number(st, "simulated_idle_fraction"), s),
                        opt("%.0f", number(st, "simulated_peak_in_flight"), s),
                        opt("%.0f", number(st, "simulated_peak_held"), s), opt("%.0f", number(st, "weight_versions"), s),
                        bytes(meas, s), bytes(pred, s)});
    }
  }
  return t;
}

// Context-parallel cases: the kind and split, and each rank's attention work (query-key
// pairs) with the max/min over ranks, so that the balance is visible.
Table context_parallel(const json& cases, Style s) {
  Table t{"Context parallelism", "lllrrrr", {"case", "kind", "balance", "cp", "rank", "attention pairs", "max / min"}};
  for (const json& c : cases) {
    const json& cp = object(c, "cp");
    const json& pairs = array(cp, "attention_pairs");
    for (size_t r = 0; r < pairs.size(); ++r)
      t.rows.push_back({text(c, "name"), text(cp, "kind"), text(cp, "balance"), opt("%.0f", number(cp, "cp"), s),
                        std::to_string(r), pairs[r].is_number() ? fmt("%.0f", pairs[r].get<double>()) : none(s),
                        opt("%.3f", number(cp, "attention_pairs_max_over_min"), s)});
  }
  return t;
}

// MoE cases: per rank the token copies it dispatched, the rows its experts received and
// the copies its capacity dropped; with the dispatcher, EP, and the last step's busiest
// expert over the mean (1 = balanced).
Table mixture_of_experts(const json& cases, Style s) {
  Table t{"Mixture of experts", "llrrrrrrrr",
          {"case", "dispatcher", "ep", "E", "K", "rank", "dispatched", "received", "dropped", "max / mean (last step)"}};
  for (const json& c : cases) {
    const json& moe = object(c, "moe");
    const json& steps = array(moe, "steps");
    const json last = steps.empty() ? json(nullptr) : steps.back();
    for (const json& r : array(moe, "ranks"))
      t.rows.push_back({text(c, "name"), text(moe, "dispatcher"), opt("%.0f", number(moe, "ep"), s),
                        opt("%.0f", number(moe, "experts"), s), opt("%.0f", number(moe, "top_k"), s),
                        opt("%.0f", number(r, "rank"), s), opt("%.0f", number(r, "dispatched"), s),
                        opt("%.0f", number(r, "received"), s), opt("%.0f", number(r, "dropped"), s),
                        last.is_null() ? none(s) : opt("%.3f", number(last, "max_over_mean"), s)});
  }
  return t;
}

// Communication overlap (core/timeline.h): per case the ranks' communication time of the
// timed steps, the part their compute threads waited on, and the hidden fraction.
Table overlap(const json& cases, Style s) {
  Table t{"Communication overlap", "lrrrl", {"case", "comm ms", "exposed ms", "hidden", "timeline"}};
  for (const json& c : cases) {
    const json& o = object(c, "overlap");
    if (o.empty()) continue;
    t.rows.push_back({text(c, "name"), opt("%.2f", number(o, "comm_ms"), s), opt("%.2f", number(o, "exposed_ms"), s),
                      opt("%.3f", number(o, "hidden_fraction"), s), o.contains("trace_file") ? text(o, "trace_file") : none(s)});
  }
  return t;
}

std::vector<Table> build_tables(const json& results, Style s) {
  read_results(results, "results");  // compare's validation: what it refuses, report refuses
  const json& list = array(results, "cases");
  std::vector<Table> tables = {equivalence(list, s), throughput(list, s), memory(list, s), communication(list, s)};
  Table pp = pipeline(list, s);
  if (!pp.rows.empty()) tables.push_back(pp);
  Table cp = context_parallel(list, s);
  if (!cp.rows.empty()) tables.push_back(cp);
  Table moe = mixture_of_experts(list, s);
  if (!moe.rows.empty()) tables.push_back(moe);
  Table ov = overlap(list, s);
  if (!ov.rows.empty()) tables.push_back(ov);
  return tables;
}

// ---- rendering

std::string md_cell(const std::string& v) {
  std::string out;
  for (char ch : v)
    out += ch == '|' ? std::string("\\|") : ch == '\n' || ch == '\r' ? std::string(" ") : std::string(1, ch);
  return out;
}

std::string render_markdown(const Table& t) {
  std::string out = "## " + t.title + "\n\n";
  if (t.rows.empty()) return out + "_no rows_\n\n";
  auto line = [](const std::vector<std::string>& cells) {
    std::string l = "|";
    for (const auto& c : cells) l += " " + md_cell(c) + " |";
    return l + "\n";
  };
  out += line(t.header) + "|";
  for (char a : t.align) out += a == 'r' ? "---:|" : "---|";
  out += "\n";
  for (const auto& r : t.rows) out += line(r);
  return out + "\n";
}

std::string csv_cell(const std::string& v) {
  if (v.find_first_of(",\"\n\r") == std::string::npos) return v;
  std::string out = "\"";
  for (char ch : v) out += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return out + "\"";
}

std::string render_csv(const Table& t) {
  std::string title = t.title;
  std::transform(title.begin(), title.end(), title.begin(), [](unsigned char ch) { return std::tolower(ch); });
  auto line = [](const std::vector<std::string>& cells) {
    std::string l;
    for (size_t i = 0; i < cells.size(); ++i) l += (i ? "," : "") + csv_cell(cells[i]);
    return l + "\n";
  };
  std::string out = "# " + title + "\n" + line(t.header);
  for (const auto& r : t.rows) out += line(r);
  return out;
}

// "suite **smoke** · created … · git … · host … · cpu … · world size 4 · mpi …", then counts.
std::string environment_line(const json& results) {
  const json& env = object(results, "env");
  const std::pair<std::string, std::string> items[] = {
      {"created", text(results, "created")}, {"git", text(env, "git_sha")}, {"host", text(env, "host")},
      {"cpu", text(env, "cpu_model")}, {"world size", text(env, "world_size")},
      {"threads per rank", text(env, "threads", "")},
      {"mpi", text(env, "mpi_library")}, {"gpu", text(env, "gpu", "")}};
  std::string out = "suite **" + md_cell(text(results, "suite")) + "**";
  for (const auto& [label, value] : items)
    if (!value.empty()) out += " · " + label + " " + md_cell(value);
  std::map<std::string, int> counts;
  for (const json& c : array(results, "cases")) ++counts[text(c, "status", "unknown")];
  out += "\n\ncases: " + std::to_string(array(results, "cases").size());
  for (const auto& [st, n] : counts) out += ", " + md_cell(st) + " " + std::to_string(n);
  if (const json* done = field(results, "complete"); done && !done->get<bool>())
    out += "\n\n**incomplete**: the job ended before its last case (these are the cases that finished)";
  return out + "\n\n";
}

// Any nlohmann error left (there should be none) becomes one pb::Error line.
template <class F>
std::string guarded(F make) {
  try {
    return make();
  } catch (const nlohmann::json::exception& e) {
    throw pb::Error(std::string("report: malformed results: ") + e.what());
  }
}

}  // namespace

std::string markdown_report(const nlohmann::json& results) {
  return guarded([&] {
    std::vector<Table> tables = build_tables(results, Style::markdown);
    std::string out = "# parabench report\n\n" + environment_line(results);
    for (const Table& t : tables) out += render_markdown(t);
    return out;
  });
}

std::string csv_tables(const nlohmann::json& results) {
  return guarded([&] {
    std::string out;
    for (const Table& t : build_tables(results, Style::csv)) out += (out.empty() ? "" : "\n") + render_csv(t);
    return out;
  });
}

}  // namespace pb::harness
