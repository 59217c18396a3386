/* Results file (schema parabench.results/1, results/README.md) -> human-readable tables.
 *
 * Four tables, as in DESIGN.md "Harness and results":
 *   equivalence    one row per case and check kind (loss, grad, param, comm, ...):
 *                  tensors checked, worst rel_err and which tensor, worst max_abs, tol,
 *                  PASS/FAIL, and the case status (with the error line for error/skip)
 *   throughput     step time median/min/max, tokens/s, model TFLOP/s, MFU, stated peak
 *   memory         per rank and category, measured vs predicted bytes
 *   communication  one row per (group, op, phase, bytes per call): payload bytes per call,
 *                  calls, total; bus bytes (nccl-tests factors) per call and total; share
 *                  of the case's payload bytes; the predicted calls, bytes and bus bytes;
 *                  match (calls and bytes exact, bus bytes within half a byte). Results
 *                  written before rows were one call size (no "bytes_per_call") show
 *                  bytes / calls as the size.
 * and, where cases have them, two more: pipeline (per stage measured vs simulated idle,
 * the simulated peaks, the activation peak against its prediction) and context
 * parallelism (per rank the attention work in query-key pairs, and max/min over ranks).
 *
 * Missing optional fields print "—" (Markdown) or an empty cell (CSV). A document that
 * compare would refuse (results_schema.h: another schema, a case file, "checks" that are
 * no array, ...) throws pb::Error (a std::runtime_error) with the same one line. A document
 * of a job that ended early ("complete": false) is reported with a line saying so.
 */
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace pb::harness {

// Markdown: a title, one environment line, then the four tables under "## " headings.
std::string markdown_report(const nlohmann::json& results);

// The same four tables as CSV, each section introduced by a line "# equivalence",
// "# throughput", "# memory", "# communication". Byte counts are exact integers here.
std::string csv_tables(const nlohmann::json& results);

}  // namespace pb::harness
