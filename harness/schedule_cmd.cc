/* `parabench schedule` (see schedule_cmd.h). */
#include "harness/schedule_cmd.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "optimized/train/pp_schedule.h"
#include "optimized/train/registry.h"
#include "reference/io/atomic_file.h"
#include "reference/common/error.h"

namespace pb::harness {

namespace {

// "--costs F,B[,W]": positive integers; W only for a split backward (zb-h1, zb-h2, zb-v), where
// it defaults to B.
pp::Costs parse_costs(const std::string& text, const pp::Schedule& s) {
  pp::Costs c = pp::default_costs(s);
  if (text.empty()) return c;
  std::vector<int64_t> v;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    size_t used = 0;
    long long x = 0;
    try {
      x = std::stoll(item, &used);
    } catch (...) {
      used = 0;
    }
    PB_REQUIRE(used == item.size() && !item.empty() && x >= 1 && x <= 1000, "--costs: expected F,B or F,B,W with ",
               "integers from 1 to 1000, got '", text, "'");
    v.push_back(x);
  }
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

}  // namespace

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
  sub->callback([&a] { a.write_svg = a.write_trace = !a.no_files; });
  return sub;
}

int cmd_schedule(const ScheduleArgs& a) {
  const pp::Schedule s = pp::make_schedule(a.kind, a.pp, a.vpp, a.microbatches);
  const pp::Costs c = parse_costs(a.costs, s);
  const pp::SimResult r = pp::simulate(s, c);
  const int64_t p = s.p, v = s.v, m = s.m;
  std::printf("pipeline schedule %s: p=%lld ranks, v=%lld chunk(s) per rank, m=%lld micro-batches; costs per chunk "
              "F=%lld B=%lld%s\n\n",
              s.kind.c_str(), (long long)p, (long long)v, (long long)m, (long long)c.F, (long long)c.B,
              s.split_backward ? (" W=" + std::to_string(c.W) + " (B input gradient, W weight gradient)").c_str() : "");
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
    const int base = s.v * o.peak_in_flight[0];
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
