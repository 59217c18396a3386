/* The results document (schema parabench.results/1, results/README.md), read strictly:
 * the one validation that `parabench report` and `parabench compare` share.
 *
 * read_results() checks the shape results/README.md gives and returns what the gate
 * compares. Anything else throws pb::Error (a std::runtime_error) with one line naming the
 * document, the case and the field, e.g.
 *   results: cases[0] (tp2): checks is not an array but string
 *   baseline: schema is "parabench.results/2", expected "parabench.results/1"
 * Checked: the schema string; "cases" an array of objects with unique string names and a
 * status of pass | fail | error | skip; optional "complete" a boolean; per case, optional
 * arrays of objects "checks" (tensor: string, rel_err: number or null, tol: number, pass:
 * boolean; max_abs and baseline_err numbers or null when present), "memory" (rank: integer
 * >= 0, category: string, measured_bytes and predicted_bytes: integers or null) and "comm"
 * (group, op, phase: strings; calls, bytes: integers >= 0; bytes_per_call: integer when
 * present; unique per (group, op, phase, bytes per call)); "throughput" and "pipeline"
 * objects or null, their numbers numbers or null, pipeline.stages an array of objects.
 * Fields not named here (env, model, train, ...) are free: they are shown, never gated on.
 * A case file (suites/cases/NAME.json) is no results document: it has no schema.
 */
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace pb::harness {

constexpr const char* kResultsSchema = "parabench.results/1";

struct ResultCheck {
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

struct ResultCase {
  std::string name, status, error;
  std::vector<ResultCheck> checks;
  std::map<CommKey, CommRow> comm;
  bool comm_sized = true;        // every comm row has "bytes_per_call" (false: an older document)
  std::optional<double> median;  // throughput.step_ms_median
  std::map<std::pair<int64_t, std::string>, int64_t> memory;  // (rank, category) -> measured bytes
};

struct ResultsDocument {
  bool complete = true;  // false: the job ended before its last case (absent in older files: true)
  std::vector<ResultCase> cases;
};

// `which` names the document in errors ("results", "baseline", "current").
ResultsDocument read_results(const nlohmann::json& doc, const std::string& which);

// "(tp, all_reduce, forward, 4096 B/call)"; without the size for kWholePhase.
std::string comm_key_text(const CommKey& k);

}  // namespace pb::harness
