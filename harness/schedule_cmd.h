/* `parabench schedule`: a pipeline schedule (optimized/train/pp_schedule.h) simulated
 * and drawn, without MPI and without a model.
 *
 *   parabench schedule --kind gpipe|1f1b|interleaved|zb-h1|zb-h2|zb-v|dualpipev --pp P [--vpp V]
 *                      --microbatches M [--costs F,B[,W]] [--svg [FILE]] [--trace [FILE]]
 *                      [--layers L [--pp-layers N,N,..|balanced | --first-layers N1 --last-layers NL]
 *                       [--layer-costs C,C,..] [--head-cost C] [--embed-cost C]]
 *
 * Prints the text timeline and a summary: total time, per-rank busy/idle with the idle
 * fraction as a fraction (idle/total), peak in-flight micro-batch chunks, and the analytic
 * bubble for comparison: (p-1)/(m+p-1) for gpipe and 1f1b (Huang et al. 2019; Narayanan
 * et al. 2021), (p-1)/(v*m+p-1) for interleaved, (p-1)(F+B-W) per rank for zb-h1 (Qi et al.
 * 2023), (p-1)F per rank for zb-v (--vpp 2; only rank p-1's start-up, at F = B = W and
 * m >= p), where a line also gives zb-h1 and 1f1b on the same ranks with the same per-stage
 * costs (a stage = both chunks of a rank: 2F, 2B, 2W) and the idle ratios.
 * With --layers the model's L layers are split over the p*v stages (train/pp_partition.h:
 * evenly, as given, Megatron's first / last rank counts, or balanced by the partitioner over
 * the layer costs, 1 each unless given, plus the head's and embedding's) and every action of
 * a stage costs its weight times F, B or W (pp_partition.h stage_weights): the split, the
 * stage costs and the simulated bubble are printed, next to the even split's where S divides L.
 * --svg / --trace write the SVG timeline / Chrome trace, to FILE or, without one, to
 * schedule-<kind>-p<P>-v<V>-m<M>.svg / .trace.json in the current directory. Bad input
 * throws pb::Error (main prints "parabench: error: <line>" and exits 2).
 */
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "optimized/train/pp_partition.h"
#include "optimized/train/pp_schedule.h"

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
  int64_t layers = 0;                             // --layers: split L layers over the stages
  std::string pp_layers, layer_costs;             // --pp-layers N,N,.. | balanced; --layer-costs C,C,..
  int64_t first_layers = 0, last_layers = 0;      // --first-layers / --last-layers (Megatron)
  double head_cost = 0, embed_cost = 0;
  int update_every = 0;                           // --update-every (pipedream-2bw)
  int slices = 0;                                 // --slices (terapipe)
};

// Registers the `schedule` subcommand and its options on app; fills args when parsed.
CLI::App* add_schedule_command(CLI::App& app, ScheduleArgs& args);

int cmd_schedule(const ScheduleArgs& args);

// The asynchronous kinds' line (pp_async.h): the update interval and each rank's most weight
// versions held at once ("... : 4 3 2 1 (rank 0..3)").
std::string weight_versions_line(const pp::Schedule& s);

// Comma-separated numbers / integers of an option (what names it in the one error line).
std::vector<double> parse_numbers(const std::string& text, const char* what);
std::vector<int64_t> parse_counts(const std::string& text, const char* what);

// A split of the layers over a schedule's stages (`schedule --layers`, `analyze`): layers,
// cost and weight per stage, and the schedule simulated at those weights (its total, every
// rank's idle fraction and the largest stage over the mean) next to the even split's where
// the stages divide the layers. Returns the weighted costs for the caller's own tables.
pp::Costs print_split(const pp::Schedule& s, const pp::Costs& base, const pp::LayerCosts& costs,
                      const std::vector<int64_t>& layers);

}  // namespace pb::harness
