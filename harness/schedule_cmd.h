/* `parabench schedule`: a pipeline schedule (optimized/train/pp_schedule.h) simulated
 * and drawn, without MPI and without a model.
 *
 *   parabench schedule --kind gpipe|1f1b|interleaved|zb-h1|zb-v --pp P [--vpp V] --microbatches M
 *                      [--costs F,B[,W]] [--svg [FILE]] [--trace [FILE]]
 *
 * Prints the text timeline and a summary: total time, per-rank busy/idle with the idle
 * fraction as a fraction (idle/total), peak in-flight micro-batch chunks, and the analytic
 * bubble for comparison: (p-1)/(m+p-1) for gpipe and 1f1b (Huang et al. 2019; Narayanan
 * et al. 2021), (p-1)/(v*m+p-1) for interleaved, (p-1)(F+B-W) per rank for zb-h1 (Qi et al.
 * 2023), (p-1)F per rank for zb-v (--vpp 2; only rank p-1's start-up, at F = B = W and
 * m >= p), where a line also gives zb-h1 and 1f1b on the same ranks with the same per-stage
 * costs (a stage = both chunks of a rank: 2F, 2B, 2W) and the idle ratios.
 * --svg / --trace write the SVG timeline / Chrome trace, to FILE or, without one, to
 * schedule-<kind>-p<P>-v<V>-m<M>.svg / .trace.json in the current directory. Bad input
 * throws pb::Error (main prints "parabench: error: <line>" and exits 2).
 */
#pragma once

#include <string>

namespace CLI {
class App;
}

namespace pb::harness {

struct ScheduleArgs {
  std::string kind, costs;
  int pp = 0, vpp = 1, microbatches = 0;
  bool no_files = false;                          // --no-files
  bool write_svg = true, write_trace = true;      // unless --no-files
  std::string svg, trace;
};

// Registers the `schedule` subcommand and its options on app; fills args when parsed.
CLI::App* add_schedule_command(CLI::App& app, ScheduleArgs& args);

int cmd_schedule(const ScheduleArgs& args);

}  // namespace pb::harness
