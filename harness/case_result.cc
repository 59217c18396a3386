/* Memory, pipeline and throughput tables and the results entry (see case_result.h). */
#include "harness/case_result.h"

#include <algorithm>
#include <numeric>

#include "harness/analytic.h"
#include "harness/runner.h"
#include "optimized/core/allocator.h"
#include "optimized/core/fatal.h"
#include "optimized/parallel/cp_ring.h"
#include "optimized/parallel/process_grid.h"
#include "optimized/train/pp_partition.h"
#include "optimized/train/pp_schedule.h"
#include "optimized/train/registry.h"

namespace pb::harness {

using nlohmann::json;

namespace {

int comm_size(MPI_Comm comm) {
  int size = 1;
  MPI_CHECK(MPI_Comm_size(comm, &size));
  return size;
}

int comm_rank(MPI_Comm comm) {
  int rank = 0;
  MPI_CHECK(MPI_Comm_rank(comm, &rank));
  return rank;
}

}  // namespace

json gather_memory(const Case& c, Device dev, MPI_Comm comm) {
  const int size = comm_size(comm);
  const auto& st = (dev == Device::CUDA ? TrackingAllocator::device() : TrackingAllocator::host()).stats();
  std::vector<int64_t> peaks(size_t(kMemCategories * size));
  MPI_CHECK(MPI_Gather(st.peak.data(), kMemCategories, MPI_INT64_T, peaks.data(), kMemCategories, MPI_INT64_T, 0, comm));
  // Each rank's prediction, given its own routing (MoE).
  const Prediction mine = predict(c, ProcessGrid::coords_of(c.layout, comm_rank(comm)).pp, &RoutingLog::get().records());
  std::vector<int64_t> pred(static_cast<size_t>(kMemCategories)), preds(static_cast<size_t>(kMemCategories * size));
  for (int k = 0; k < kMemCategories; ++k) {
    const auto it = mine.memory.find(MemCategory(k));
    pred[size_t(k)] = it == mine.memory.end() ? 0 : it->second;
  }
  MPI_CHECK(MPI_Gather(pred.data(), kMemCategories, MPI_INT64_T, preds.data(), kMemCategories, MPI_INT64_T, 0, comm));
  if (comm_rank(comm) != 0) return nullptr;
  json memory = json::array();
  for (int r = 0; r < size; ++r)
    for (int k = 0; k < kMemCategories; ++k)
      memory.push_back({{"rank", r}, {"category", category_name(MemCategory(k))},
                        {"measured_bytes", peaks[size_t(r * kMemCategories + k)]},
                        {"predicted_bytes", preds[size_t(r * kMemCategories + k)]}});
  return memory;
}

namespace {

// Every rank's busy and total time of the timed steps and its most weight versions at once
// (the last step's), then (op, mb, chunk, start, dur)
// per action of the last step, to rank 0: all ranks' values, and where each rank's start.
struct Timelines {
  std::vector<double> all;
  std::vector<int> counts, displs;
};

Timelines gather_timelines(const TrainRun& run, MPI_Comm comm) {
  const int size = comm_size(comm);
  std::vector<double> mine = {run.pp_busy_us, run.pp_total_us, double(run.last_pipeline_step.weight_versions)};
  for (const auto& e : run.last_pipeline_step.timeline)
    mine.insert(mine.end(), {double(int(e.action.op)), double(e.action.mb), double(e.action.chunk), e.start_us, e.dur_us});
  int n = int(mine.size());
  Timelines t{{}, std::vector<int>(size_t(size)), std::vector<int>(size_t(size))};
  MPI_CHECK(MPI_Gather(&n, 1, MPI_INT, t.counts.data(), 1, MPI_INT, 0, comm));
  int total = 0;
  for (int r = 0; r < size; ++r) t.displs[size_t(r)] = total, total += t.counts[size_t(r)];
  t.all.resize(size_t(comm_rank(comm) == 0 ? total : 0));
  MPI_CHECK(MPI_Gatherv(mine.data(), n, MPI_DOUBLE, t.all.data(), t.counts.data(), t.displs.data(), MPI_DOUBLE, 0, comm));
  return t;
}

json pipeline_json(const Case& c, const Timelines& t) {
  const Features f = c.typed_features();
  const pp::Schedule sched = schedule_for({c.model, c.train, c.layout, f, c.schedule});
  // The layers of each model stage; with an uneven split the simulation weights each stage's
  // actions by its training FLOPs (train/pp_partition.h), else unit costs.
  const std::vector<int64_t> layers = sched.layer_counts(c.model.num_hidden_layers);
  pp::Costs costs = pp::default_costs(sched);
  if (f.pp_split())
    costs.stage = sched.per_stage(pp::stage_weights(pp::analytic_layer_costs(c.model, c.train.seq_length), layers));
  const pp::SimResult sim = pp::simulate(sched, costs);
  std::vector<std::vector<pp::TraceEvent>> lines;
  json stages = json::array();
  for (int s = 0; s < c.layout.pp; ++s) {  // the first rank of every stage (TP 0, CP 0, DP 0)
    const int r = ProcessGrid::rank_of(c.layout, {0, 0, 0, s});
    const double* d = t.all.data() + t.displs[size_t(r)];
    std::vector<pp::TraceEvent> line;
    for (int k = 3; k + 5 <= t.counts[size_t(r)]; k += 5)
      line.push_back({{pp::Op(int(d[k])), int(d[k + 1]), int(d[k + 2])}, d[k + 3], d[k + 4]});
    lines.push_back(line);
    stages.push_back({{"stage", s}, {"rank", r}, {"busy_us", d[0]}, {"total_us", d[1]},
                      {"measured_idle_fraction", d[1] > 0 ? 1.0 - d[0] / d[1] : 0.0},
                      {"simulated_idle_fraction", double(sim.idle[size_t(s)]) / double(sim.total)},
                      {"simulated_peak_in_flight", sim.peak_in_flight[size_t(s)]},
                      {"simulated_peak_held", sim.peak_held[size_t(s)]},
                      {"weight_versions", int(d[2])}, {"predicted_weight_versions", pp::weight_versions(sched, s)}});
  }
  return {{"schedule", c.schedule}, {"pp", c.layout.pp}, {"vpp", c.layout.vpp},
          {"micro_batches", c.train.num_micro_batches}, {"simulated_total_units", sim.total},
          {"update_every", sched.update_every},
          {"stage_layers", layers}, {"stage_weights", costs.stage.empty() ? json(nullptr) : json(costs.stage)},
          {"stages", stages},
          {"trace", json::parse(pp::chrome_trace(lines, c.name + " (measured, last step)"))}};
}

}  // namespace

json gather_pipeline(const Case& c, const TrainRun& run, MPI_Comm comm) {
  const Timelines t = gather_timelines(run, comm);
  return comm_rank(comm) == 0 ? pipeline_json(c, t) : json(nullptr);
}

json gather_post_validation(const TrainRun& run, MPI_Comm comm) {
  const PostValidationLog& l = run.post_validation;
  const int64_t mine[6] = {l.steps, l.eager, l.kept, l.rolled_back, l.redone, l.skipped};
  std::vector<int64_t> all(size_t(comm_size(comm)) * 6);
  MPI_CHECK(MPI_Gather(mine, 6, MPI_INT64_T, all.data(), 6, MPI_INT64_T, 0, comm));
  if (comm_rank(comm) != 0) return nullptr;
  json ranks = json::array();
  for (size_t r = 0; r * 6 < all.size(); ++r) {
    const int64_t* x = &all[r * 6];
    ranks.push_back({{"rank", r}, {"steps", x[0]}, {"eager", x[1]}, {"kept", x[2]}, {"rolled_back", x[3]},
                     {"redone", x[4]}, {"skipped", x[5]}});
  }
  return {{"ranks", ranks}};
}

json gather_cp(const Case& c, MPI_Comm comm) {
  const int size = comm_size(comm);
  const int64_t mine = cp_attention_pairs();
  std::vector<int64_t> all(static_cast<size_t>(size));
  MPI_CHECK(MPI_Gather(&mine, 1, MPI_INT64_T, all.data(), 1, MPI_INT64_T, 0, comm));
  if (comm_rank(comm) != 0) return nullptr;
  const auto [lo, hi] = std::minmax_element(all.begin(), all.end());
  return {{"kind", c.cp_kind}, {"balance", c.typed_features().cp_contiguous ? "contiguous" : "zigzag"}, {"cp", c.layout.cp}, {"attention_pairs", all},
          {"attention_pairs_max_over_min", *lo > 0 ? double(*hi) / double(*lo) : 0.0}};
}

json gather_moe(const Case& c, MPI_Comm comm) {
  const int size = comm_size(comm);
  const int64_t E = c.model.num_local_experts;
  // Per record: step, layer, tokens, dropped, sent (E), received total.
  std::vector<int64_t> mine;
  for (const auto& r : RoutingLog::get().records()) {
    mine.insert(mine.end(), {r.step, r.layer, r.tokens, r.dropped, r.recv_total()});
    mine.insert(mine.end(), r.sent.begin(), r.sent.end());
  }
  int n = int(mine.size());
  std::vector<int> counts(static_cast<size_t>(size)), displs(static_cast<size_t>(size));
  MPI_CHECK(MPI_Gather(&n, 1, MPI_INT, counts.data(), 1, MPI_INT, 0, comm));
  int64_t total = 0;
  for (int r = 0; r < size; ++r) displs[size_t(r)] = int(total), total += counts[size_t(r)];
  std::vector<int64_t> all(size_t(comm_rank(comm) == 0 ? total : 0));
  MPI_CHECK(MPI_Gatherv(mine.data(), n, MPI_INT64_T, all.data(), counts.data(), displs.data(), MPI_INT64_T, 0, comm));
  if (comm_rank(comm) != 0) return nullptr;
  const int64_t rec = 5 + E;
  const size_t steps_n = size_t(c.train.steps), ranks_n = size_t(size);
  std::vector<std::vector<int64_t>> per_step(steps_n, std::vector<int64_t>(size_t(E), 0));
  using Grid = std::vector<std::vector<int64_t>>;  // (step, rank)
  Grid sent(steps_n, std::vector<int64_t>(ranks_n, 0)), recv = sent, drop = sent;
  for (int r = 0; r < size; ++r)
    for (int64_t i = displs[size_t(r)]; i < displs[size_t(r)] + counts[size_t(r)]; i += rec) {
      const int64_t* x = all.data() + i;
      const size_t st = size_t(x[0]);
      drop[st][size_t(r)] += x[3];
      recv[st][size_t(r)] += x[4];
      for (int64_t e = 0; e < E; ++e) {
        sent[st][size_t(r)] += x[5 + e];
        per_step[st][size_t(e)] += x[5 + e];
      }
    }
  auto run_total = [&](const Grid& g, size_t r) {
    int64_t s = 0;
    for (const auto& row : g) s += row[r];
    return s;
  };
  json ranks = json::array();
  int64_t dropped_all = 0;
  for (size_t r = 0; r < ranks_n; ++r) {
    dropped_all += run_total(drop, r);
    ranks.push_back({{"rank", r}, {"dispatched", run_total(sent, r)}, {"received", run_total(recv, r)},
                     {"dropped", run_total(drop, r)}});
  }
  json steps = json::array();
  for (size_t st = 0; st < steps_n; ++st) {
    const auto& t = per_step[st];
    const int64_t sum = std::accumulate(t.begin(), t.end(), int64_t(0));
    const int64_t mx = t.empty() ? 0 : *std::max_element(t.begin(), t.end());
    steps.push_back({{"tokens_per_expert", t}, {"max_over_mean", sum > 0 ? double(mx) * double(E) / double(sum) : 0.0},
                     {"dispatched_per_rank", sent[st]}, {"received_per_rank", recv[st]},
                     {"dropped_per_rank", drop[st]}});
  }
  const auto& cf = c.model.moe_expert_capacity_factor;
  return {{"dispatcher", c.moe_dispatcher}, {"ep", c.layout.ep}, {"experts", E},
          {"top_k", c.model.num_experts_per_tok}, {"capacity_factor", cf ? json(*cf) : json(nullptr)},
          {"steps", steps}, {"ranks", ranks}, {"dropped", dropped_all}};
}

json throughput(const Case& c, const TrainRun& run, double peak_tflops) {
  std::vector<double> timed(run.step_ms.size() > 1 ? run.step_ms.begin() + 1 : run.step_ms.begin(), run.step_ms.end());
  std::sort(timed.begin(), timed.end());
  const double med = timed[timed.size() / 2];
  const double tokens = double(c.global_batch() * c.train.seq_length);
  const double tflops = predict(c).flops_per_step / (med / 1e3) / 1e12;
  return {{"step_ms_median", med}, {"step_ms_min", timed.front()}, {"step_ms_max", timed.back()},
          {"tokens_per_s", tokens / (med / 1e3)}, {"model_tflops", tflops},
          {"mfu", peak_tflops > 0 ? json(tflops / peak_tflops) : json(nullptr)},
          {"peak_tflops", peak_tflops > 0 ? json(peak_tflops) : json(nullptr)}};
}

json case_result(const Case& c, Device dev, const CaseTables& t) {
  bool pass = true;
  for (const auto& ch : t.checks) pass = pass && ch["pass"].get<bool>();
  json result = error_result(c, pass ? "pass" : "fail", "");
  result.erase("error");
  for (const auto& ch : t.checks)
    if (ch.contains("error")) result["error"] = ch["error"];  // e.g. "reference diverged at step 2"
  result["train"] = {{"micro_batch_size", c.train.micro_batch_size}, {"seq_length", c.train.seq_length},
                     {"num_micro_batches", c.train.num_micro_batches}, {"global_batch_size", c.global_batch()},
                     {"lr", c.train.lr}, {"beta1", c.train.beta1}, {"beta2", c.train.beta2},
                     {"adam_eps", c.train.adam_eps}, {"weight_decay", c.train.weight_decay},
                     {"clip_grad", c.train.clip_grad}};
  result["params_total"] = predict(c).params_total;
  result["checks"] = t.checks;
  result["throughput"] = t.throughput;
  result["memory"] = t.memory;
  result["comm"] = t.comm;
  if (!t.pipeline.is_null()) result["pipeline"] = t.pipeline;
  if (!t.cp.is_null()) result["cp"] = t.cp;
  if (!t.moe.is_null()) result["moe"] = t.moe;
  if (!t.overlap.is_null()) result["overlap"] = t.overlap;
  if (!t.post_validation.is_null()) result["post_validation"] = t.post_validation;
  if (dev == Device::CUDA) {  // the caching allocator's view against the driver's (rank 0)
    const auto& da = TrackingAllocator::device();
    result["device_memory"] = {{"reserved_bytes", da.reserved()}, {"driver_used_bytes", da.driver_used_bytes()},
                               {"peak_in_use_bytes", da.stats().total_peak},
                               {"reserved_within_driver", da.reserved() <= da.driver_used_bytes()}};
  }
  return result;
}

}  // namespace pb::harness
