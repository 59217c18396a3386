/* The regression gate behind `parabench compare BASELINE CURRENT` (results/README.md).
 * Exit codes of the command: 0 no regression (warnings allowed), 1 a regression, 2 an input
 * error (a file missing, malformed or of another schema).
 *
 * Cases are matched by name. A problem (ok = false) is any of:
 *   - a baseline case missing from current
 *   - a current case whose status is not "pass"
 *   - a current check with pass == false, or rel_err over its tol (or rel_err null: NaN)
 *   - comm rows keyed by (group, op, phase, bytes per call) that differ from the baseline's:
 *     a row missing or extra, or calls / bytes not exactly equal. A document written before
 *     rows were one call size (rows without "bytes_per_call") reads bytes / calls as the
 *     size; since such a row may sum several sizes, a case with one is compared per
 *     (group, op, phase), its rows and the other document's summed over their sizes
 *   - with timing on: current step_ms_median > baseline median × (1 + time_tol)
 *   - a measured memory category of a rank above the baseline's × (1 + mem_tol), or in the
 *     baseline and missing in current
 * A warning (ok stays true) asks for a baseline refresh: with timing on, a step faster
 * than the baseline's × (1 − refresh_tol); a memory category below the baseline's ×
 * (1 − mem_tol), or only in current (a category the baseline predates). Cases only in
 * current are a note in the table, not a problem.
 *
 * Both documents must have schema "parabench.results/1" and the shape results/README.md
 * gives (read_results, results_schema.h, shared with report); anything else throws
 * pb::Error (a std::runtime_error) with one line that names the document, the case and
 * the field.
 */
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace pb::harness {

struct CompareOptions {
  double time_tol = 0.25;     // allowed relative slowdown of the median step time
  double refresh_tol = 0.20;  // a median step time faster by more than this: a warning
  double mem_tol = 0.05;      // allowed relative growth of a measured memory peak
  bool timing = true;         // false: step times are not compared (--no-timing)
};

struct CompareResult {
  bool ok = true;
  std::vector<std::string> problems;  // one line each, "case: what"
  std::vector<std::string> warnings;  // one line each: a baseline refresh is due
  std::string table;                  // Markdown, one row per case of either document
};

CompareResult compare_results(const nlohmann::json& baseline, const nlohmann::json& current, const CompareOptions& opt);

}  // namespace pb::harness
