/* `parabench schedule` (see schedule_cmd.h). */
#include "harness/schedule_cmd.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "optimized/train/pp_schedule.h"
#include "optimized/train/registry.h"
#include "reference/io/atomic_file.h"
#include "reference/common/error.h"

namespace pb::harness {

std::vector<double> parse_numbers(const std::string& text, const char* what) {
  std::vector<double> v;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    size_t used = 0;
    double x = 0;
    try {
      x = std::stod(item, &used);
    } catch (...) {
      used = 0;
    }
    PB_REQUIRE(used == item.size() && !item.empty() && std::isfinite(x), what, ": expected comma-separated numbers, got '",
               text, "'");
    v.push_back(x);
  }
  return v;
}

std::vector<int64_t> parse_counts(const std::string& text, const char* what) {
  std::vector<int64_t> n;
  for (const double x : parse_numbers(text, what)) {
    PB_REQUIRE(x == std::floor(x) && std::abs(x) < 1e15, what, ": expected comma-separated integers, got '", text, "'");
    n.push_back(int64_t(x));
  }
  return n;
}

namespace {

// "--costs F,B[,W]": positive integers; W only for a split backward (zb-h1, zb-h2, zb-v), where
// it defaults to B.
pp::Costs parse_costs(const std::string& text, const pp::Schedule& s) {
  pp::Costs c = pp::default_costs(s);
  if (text.empty()) return c;
  std::vector<int64_t> v;
  try {
    v = parse_counts(text, "--costs");
  } catch (const Error&) {
    v.clear();
  }
  PB_REQUIRE(!v.empty() && std::all_of(v.begin(), v.end(), [](int64_t x) { return x >= 1 && x <= 1000; }),
             "--costs: expected F,B or F,B,W with integers from 1 to 1000, got '", text, "'");
  PB_REQUIRE(v.size() == 2 || v.size() == 3, "--costs: expected F,B or F,B,W, got '", text, "'");
  PB_REQUIRE(v.size() == 2 || s.split_backward, "--costs: W applies only to a split backward (zb-h1, zb-h2, zb-v), got '", text,
             "' for ", s.kind);
  c.F = v[0];
  c.B = v[1];
  if (s.split_backward) c.W = v.size() == 3 ? v[2] : v[1];
  return c;
}

std::string fraction(int64_t num, int64_t den) {
  char buf[96];
  std::snprintf(buf, sizeof(buf), "%lld/%lld = %.3f", (long long)num, (long long)den,
                den ? double(num) / double(den) : 0.0);
  return buf;
}

void write_file(const std::string& path, const std::string& text) { io::write_file_atomic(path, text); }

// The split of --layers L over the schedule's stages, as the options say.
std::vector<int64_t> split_of(const ScheduleArgs& a, const pp::Schedule& s, const pp::LayerCosts& costs) {
  const int S = s.model_stages();
  const int ways = int(!a.pp_layers.empty()) + int(a.first_layers > 0 || a.last_layers > 0);
  PB_REQUIRE(ways <= 1, "give --pp-layers or --first-layers / --last-layers, not both");
  if (a.pp_layers == "balanced") return pp::balanced_split(costs, S);
  if (!a.pp_layers.empty()) {
    const std::vector<int64_t> n = parse_counts(a.pp_layers, "--pp-layers");
    pp::check_split(n, a.layers, S);
    return n;
  }
  if (a.first_layers > 0 || a.last_layers > 0) return pp::megatron_split(s, a.layers, a.first_layers, a.last_layers);
  return pp::uniform_split(a.layers, S);
}

std::string joined(const std::vector<double>& v, const char* fmt) {
  std::string out;
  char buf[64];
  for (const double x : v) std::snprintf(buf, sizeof(buf), fmt, x), out += (out.empty() ? "" : ", ") + std::string(buf);
  return out;
}

}  // namespace

pp::Costs print_split(const pp::Schedule& s, const pp::Costs& base, const pp::LayerCosts& costs,
                      const std::vector<int64_t>& layers) {
  const int S = s.model_stages();
  const int64_t L = int64_t(costs.layer.size());
  auto summary = [&](const std::vector<int64_t>& split, const char* label) {
    pp::Costs c = base;
    const std::vector<int64_t> weights = pp::stage_weights(costs, split);  // per model stage
    c.stage = s.per_stage(weights);
    const pp::SimResult r = pp::simulate(s, c);
    const std::vector<double> sc = pp::stage_costs(costs, split);
    double mean = 0, most = 0;
    for (const double x : sc) mean += x / double(sc.size()), most = std::max(most, x);
    std::vector<double> w(weights.begin(), weights.end()), idle;
    for (const int64_t x : r.idle) idle.push_back(double(x) / double(r.total));
    std::printf("%s split, layers per stage: %s | stage costs %s | weights %s | largest stage / mean %.3f | "
                "total %lld units, idle fraction per rank %s\n",
                label, pp::split_str(split).c_str(), joined(sc, "%.4g").c_str(), joined(w, "%.0f").c_str(),
                mean > 0 ? most / mean : 0.0, (long long)r.total, joined(idle, "%.3f").c_str());
    return c;
  };
  std::printf("stage weights: each stage's cost in quarters of the mean layer's (%s per layer%s%s), times F, B, W\n",
              costs.layer.empty() ? "-" : joined({costs.layer[0]}, "%.4g").c_str(),
              costs.head > 0 ? ("; head " + joined({costs.head}, "%.4g")).c_str() : "",
              costs.embed > 0 ? ("; embedding " + joined({costs.embed}, "%.4g")).c_str() : "");
  const pp::Costs chosen = summary(layers, "chosen");
  if (L % S == 0 && pp::uniform_split(L, S) != layers) summary(pp::uniform_split(L, S), "even");
  return chosen;
}

CLI::App* add_schedule_command(CLI::App& app, ScheduleArgs& a) {
  auto* sub = app.add_subcommand("schedule", "simulate and draw a pipeline schedule (no MPI, no model)");
  sub->add_option("--kind", a.kind, technique_names(TechniqueKind::Schedule))->required();
  sub->add_option("--pp", a.pp, "pipeline ranks p")->required();
  sub->add_option("--vpp", a.vpp, "model chunks per rank v (interleaved: >= 2; zb-v, dualpipev: 2)")->capture_default_str();
  sub->add_option("--microbatches,-m", a.microbatches, "micro-batches m (interleaved: a multiple of p)")->required();
  sub->add_option("--costs", a.costs,
                  "integer costs per chunk F,B[,W], 1..1000 (default 1,2; zb-h1, zb-h2, zb-v: 1,1,1, W = B when omitted)");
  sub->add_option("--svg", a.svg, "the SVG timeline's file (default schedule-<kind>-p<P>-v<V>-m<M>.svg)");
  sub->add_option("--trace", a.trace, "the Chrome trace's file (default schedule-<kind>-p<P>-v<V>-m<M>.trace.json)");
  sub->add_flag("--no-files", a.no_files, "print only: write neither the SVG nor the trace");
  sub->add_option("--layers", a.layers, "split L model layers over the stages; costs per stage follow the split");
  sub->add_option("--pp-layers", a.pp_layers, "with --layers: layers per stage N,N,.. (stage order), or balanced");
  sub->add_option("--first-layers", a.first_layers, "with --layers: pipeline rank 0's layers (Megatron)");
  sub->add_option("--last-layers", a.last_layers, "with --layers: pipeline rank p-1's layers (Megatron)");
  sub->add_option("--layer-costs", a.layer_costs, "with --layers: each layer's cost C,C,.. (default 1 each)");
  sub->add_option("--head-cost", a.head_cost, "with --layers: the LM head's cost, on the last stage (default 0)");
  sub->add_option("--embed-cost", a.embed_cost, "with --layers: the embedding's cost, on stage 0 (default 0)");
  sub->add_option("--update-every", a.update_every,
                  "pipedream-2bw: micro-batches per weight version (default p, at least p-1)");
  sub->add_option("--slices", a.slices, "terapipe: token slices per micro-batch (default 1; the timeline's units "
                                        "are micro-batch x slice)");
  sub->callback([&a] { a.write_svg = a.write_trace = !a.no_files; });
  return sub;
}

std::string weight_versions_line(const pp::Schedule& s) {
  std::string line = "weight update every " + std::to_string(s.update_every) +
                     " micro-batch(es) on each stage; weight versions held at most (current + stashed):";
  for (int k = 0; k < s.p; ++k) line += " " + std::to_string(pp::weight_versions(s, k));
  return line + " (rank 0.." + std::to_string(s.p - 1) + ")";
}

int cmd_schedule(const ScheduleArgs& a) {
  pp::Schedule s = pp::make_schedule(a.kind, a.pp, a.vpp, a.microbatches, false, a.update_every, a.slices);
  pp::Costs c = parse_costs(a.costs, s);
  PB_REQUIRE(a.layers > 0 || (a.pp_layers.empty() && a.layer_costs.empty() && a.first_layers == 0 &&
                              a.last_layers == 0 && a.head_cost == 0 && a.embed_cost == 0),
             "--pp-layers, --first-layers, --last-layers, --layer-costs, --head-cost and --embed-cost need --layers L");
  if (a.layers > 0) {  // the split and its stage weights
    pp::LayerCosts lc;
    lc.layer = a.layer_costs.empty() ? std::vector<double>(size_t(a.layers), 1.0)
                                     : parse_numbers(a.layer_costs, "--layer-costs");
    PB_REQUIRE(int64_t(lc.layer.size()) == a.layers, "--layer-costs: ", lc.layer.size(), " costs for --layers ", a.layers);
    for (const double x : lc.layer) PB_REQUIRE(x > 0, "--layer-costs: costs must be > 0, got '", a.layer_costs, "'");
    PB_REQUIRE(a.head_cost >= 0 && a.embed_cost >= 0, "--head-cost / --embed-cost must be >= 0");
    lc.head = a.head_cost, lc.embed = a.embed_cost;
    const std::vector<int64_t> split = split_of(a, s, lc);
    s.set_split(split);
    c = print_split(s, c, lc, split);
    std::printf("\n");
  }
  const pp::SimResult r = pp::simulate(s, c);
  const int64_t p = s.p, v = s.v, m = s.m;
  std::printf("pipeline schedule %s: p=%lld ranks, v=%lld chunk(s) per rank, m=%lld micro-batches; costs per chunk "
              "F=%lld B=%lld%s\n\n",
              s.kind.c_str(), (long long)p, (long long)v, (long long)m, (long long)c.F, (long long)c.B,
              s.split_backward ? (" W=" + std::to_string(c.W) + " (B input gradient, W weight gradient)").c_str() : "");
  if (s.slices > 0)  // TeraPipe: the timeline's "micro-batches" are the units
    std::printf("terapipe: %d micro-batches x %d token slices = %lld units; unit u is slice u %% %d of micro-batch "
                "u / %d\n\n", a.microbatches, s.slices, (long long)m, s.slices, s.slices);
  if (r.total <= 20000)
    std::printf("%s\n", pp::timeline_text(s, r).c_str());
  else
    std::printf("(text timeline omitted: %lld cost units; see --svg / --trace)\n\n", (long long)r.total);
  std::printf("total time: %lld units\n", (long long)r.total);
  // The peaks count micro-batch chunks: between F and B (in flight), B and W (pending W),
  // and F and W (held: what the activation memory follows; with an unsplit backward F-B).
  const char* unit = s.v > 1 ? "chunks" : "micro-batches";
  // gap: the idle between a rank's first and last action (the rest is its start-up and tail).
  std::printf("rank   busy   idle  idle/total               gap  peak F-B%s   (%s)\n",
              s.split_backward ? "  peak B-W  peak F-W" : "", unit);
  for (int k = 0; k < s.p; ++k) {
    const size_t K = size_t(k);
    std::printf("%4d %6lld %6lld  %-22s %6lld %8d", k, (long long)r.busy[K], (long long)r.idle[K],
                fraction(r.idle[K], r.total).c_str(), (long long)r.gaps[K], r.peak_in_flight[K]);
    if (s.split_backward) std::printf("  %8d  %8d", r.peak_pending_w[K], r.peak_held[K]);
    std::printf("\n");
  }
  if (s.split_backward) {  // the memory next to 1F1B's on the same ranks and layers
    const pp::SimResult o = pp::simulate(pp::make_schedule("1f1b", s.p, 1, s.m), {1, 2, 0});
    const int held = *std::max_element(r.peak_held.begin(), r.peak_held.end());
    const int base = (s.bidir ? 1 : s.v) * o.peak_in_flight[0];  // (two pipelines: a chunk is a whole stage)
    std::printf("peak F-W %d %s (most held rank); 1f1b on the same ranks and layers holds %d: %s\n", held, unit, base,
                held == base ? "equal" : held < base ? "less" : "more");
  }
  // The analytic bubble: the fraction of the total every rank idles.
  const pp::Bubble b = pp::analytic_bubble(s, c);
  const int64_t num = b.num, den = b.den;
  const std::string &formula = b.formula, &source = b.source;
  bool equal = true;
  for (int k = 0; k < s.p; ++k) equal = equal && r.idle[size_t(k)] * den == num * r.total;
  std::printf("analytic bubble %s = %s (%s): %s\n", formula.c_str(), fraction(num, den).c_str(), source.c_str(),
              equal ? "every rank's idle fraction equals it" : "the simulated idle fractions differ");
  if (s.split_backward && !s.vshape)
    std::printf("1f1b with the same costs (backward B+W): (p-1)/(m+p-1) = %s\n", fraction(p - 1, m + p - 1).c_str());
  if (s.vshape) {  // the one-chunk schedules on the same ranks: a stage is both chunks of a rank
    const pp::SimResult h = pp::simulate(pp::make_schedule("zb-h1", s.p, 1, s.m), {2 * c.F, 2 * c.B, 2 * c.W});
    const pp::SimResult o = pp::simulate(pp::make_schedule("1f1b", s.p, 1, s.m), {2 * c.F, 2 * (c.B + c.W), 0});
    auto most = [](const std::vector<int64_t>& idle) { return *std::max_element(idle.begin(), idle.end()); };
    const int64_t vi = most(r.idle), hi = most(h.idle), oi = most(o.idle);
    std::printf("same ranks and layers as one stage per rank (F=%lld B=%lld W=%lld): zb-h1 total %lld, idle %lld; "
                "1f1b (B+W) total %lld, idle %lld; %s idle %lld",
                (long long)(2 * c.F), (long long)(2 * c.B), (long long)(2 * c.W), (long long)h.total, (long long)hi,
                (long long)o.total, (long long)oi, s.kind.c_str(), (long long)vi);
    if (hi > 0 && oi > 0)
      std::printf(" = %s of zb-h1's, %s of 1f1b's", fraction(vi, hi).c_str(), fraction(vi, oi).c_str());
    std::printf(" (most idle rank)\n");
  }
  if (s.update_every > 0) std::printf("%s\n", weight_versions_line(s).c_str());
  const std::string stem = "schedule-" + s.kind + "-p" + std::to_string(p) + "-v" + std::to_string(v) + "-m" +
                           std::to_string(m);
  if (a.write_svg) {
    const std::string path = a.svg.empty() ? stem + ".svg" : a.svg;
    write_file(path, pp::timeline_svg(s, r));
    std::printf("wrote %s\n", path.c_str());
  }
  if (a.write_trace) {
    const std::string path = a.trace.empty() ? stem + ".trace.json" : a.trace;
    write_file(path, pp::chrome_trace(s, r));
    std::printf("wrote %s\n", path.c_str());
  }
  return 0;
}

}  // namespace pb::harness
