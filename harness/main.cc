/* parabench: the harness command (run it under mpirun / srun for `run`).
 *
 *   parabench list
 *   parabench run --suite smoke|ci|full|FILE.json [--out R.json] [--md R.md] [--csv R.csv] [--timeout S]
 *   parabench analyze --model CONFIG.json|NAME --layout dp2,tp2 [--features sp] [--dtype fp32|bf16] [--micro-batch B] ...
 *   parabench report R.json [--csv]
 *   parabench compare BASELINE.json CURRENT.json [--time-tol 0.25] [--no-timing]
 *   parabench schedule --kind 1f1b --pp 4 --microbatches 8 [--vpp V] [--costs F,B[,W]] [--svg] [--trace]
 *
 * Errors: bad input prints one line (from rank 0 when every rank sees the same problem)
 * and exits non-zero; a failure on one rank aborts the whole job with that rank's
 * message; --timeout aborts a case that runs too long instead of hanging.
 */
#include <mpi.h>
#include <sched.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <mutex>
#include <thread>

#include "harness/analytic.h"
#include "harness/compare.h"
#include "harness/env.h"
#include "harness/interrupt.h"
#include "harness/report.h"
#include "harness/runner.h"
#include "harness/collectives_cmd.h"
#include "harness/report_page.h"
#include "harness/schedule_cmd.h"
#include "harness/tp_compare.h"
#include "harness/size_check.h"
#include "optimized/kernels/cpu/parallel.h"
#include "reference/model/sizes.h"
#include "optimized/core/device.h"
#include "optimized/core/fatal.h"
#include "optimized/train/registry.h"
#include "reference/common/error.h"
#include "reference/io/atomic_file.h"
#include "reference/io/checkpoint.h"

namespace {

using namespace pb;
using namespace pb::harness;
using nlohmann::json;

// Aborts the job if a case runs longer than the timeout.
class Watchdog {
 public:
  Watchdog(double seconds, std::string what) : thread_([this, seconds, what] {
      std::unique_lock<std::mutex> lk(mu_);
      if (!cv_.wait_for(lk, std::chrono::duration<double>(seconds), [this] { return done_; }))
        abort_job("timeout: " + what + " ran longer than --timeout " + std::to_string(seconds) + " s", 3);
    }) {}
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

void write_file(const std::string& path, const std::string& text) { io::write_file_atomic(path, text); }

// A case's timeline trace goes next to the results (RESULTS.timelines/CASE.json, named in
// the results as "trace_file", relative to the results' folder); without --out it is dropped.
void move_trace(json& result, const std::string& out) {
  if (!result.contains("overlap") || !result["overlap"].contains("trace")) return;
  json trace = std::move(result["overlap"]["trace"]);
  result["overlap"].erase("trace");
  if (out.empty()) return;
  const std::filesystem::path o(out);
  const std::filesystem::path dir = o.parent_path() / (o.stem().string() + ".timelines");
  std::filesystem::create_directories(dir);
  const std::string file = result["name"].get<std::string>() + ".json";
  write_file((dir / file).string(), trace.dump() + "\n");
  result["overlap"]["trace_file"] = (std::filesystem::path(o.stem().string() + ".timelines") / file).string();
}

// Rank 0 checks that every output path can be written and locks the results file against
// a second job, before the first case; the verdict goes to every rank, so the job ends
// with one line and exit 2 on every rank.
bool outputs_writable(const std::vector<std::string>& paths, int rank, std::unique_ptr<io::OutputLock>* lock,
                      const std::string& locked) {
  int ok = 1;
  if (rank == 0) {
    try {
      for (const auto& p : paths)
        if (!p.empty()) io::check_writable(p);
      if (lock) *lock = std::make_unique<io::OutputLock>(locked);
    } catch (const Error& e) {
      std::fprintf(stderr, "parabench: error: %s\n", e.what());
      ok = 0;
    }
  }
  MPI_CHECK(MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD));
  return ok == 1;
}

// Rank 0's text, on every rank.
std::string broadcast_text(const std::string& text) {
  int n = int(text.size());
  MPI_CHECK(MPI_Bcast(&n, 1, MPI_INT, 0, MPI_COMM_WORLD));
  std::string out = text;
  out.resize(size_t(n));
  MPI_CHECK(MPI_Bcast(out.data(), n, MPI_CHAR, 0, MPI_COMM_WORLD));
  return out;
}

// This process's rank as the MPI launcher set it (Open MPI, MPICH/Hydra, PMIx, Slurm), for
// messages before MPI_Init; 0 when not started by a launcher.
int launcher_rank() {
  for (const char* var : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"})
    if (const char* v = std::getenv(var)) return std::atoi(v);
  return 0;
}

json read_json(const std::string& path) {
  PB_REQUIRE(!std::filesystem::is_directory(path), path, " is a directory");
  std::ifstream in(path);
  PB_REQUIRE(in.good(), "cannot open ", path);
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    throw Error(path + ": malformed JSON (" + std::string(e.what()) + ")");
  }
}

int cmd_list() {
  const std::pair<TechniqueKind, const char*> kinds[] = {
      {TechniqueKind::Degree, "layout degrees (case key \"layout\", --layout)"},
      {TechniqueKind::Feature, "features (case key \"features\", --features)"},
      {TechniqueKind::Schedule, "pipeline schedules (case key \"schedule\", --schedule; with pp > 1)"}};
  for (const auto& [kind, title] : kinds) {
    std::printf("%s%s:\n", kind == TechniqueKind::Degree ? "" : "\n", title);
    for (const auto& t : techniques())
      if (t.kind == kind) std::printf("  %-22s %-5s %s\n", t.name, t.implemented ? "yes" : "no", t.summary);
  }
  std::printf("\nsuites (%s):\n", cases_dir().c_str());
  for (const auto& name : suite_names()) {
    const Suite s = load_suite(name);
    std::printf("  %s: %zu cases\n", name.c_str(), s.cases.size());
    for (const auto& c : s.cases) {
      std::string feats;
      for (const auto& f : c.features) feats += (feats.empty() ? "" : ",") + f;
      std::printf("    %-24s %-14s %-10s ranks %-3d %s %s, %lld steps%s\n", c.name.c_str(), c.layout_str().c_str(),
                  feats.empty() ? "-" : feats.c_str(), c.layout.world(), c.backend.c_str(), c.dtype.c_str(),
                  (long long)c.train.steps, c.layout.pp > 1 ? (", " + c.schedule).c_str() : "");
    }
  }
  return 0;
}

struct RunArgs {
  std::string suite, out, md, csv, backend;
  double timeout = 900;
  bool skip_larger = false;
  int threads = 0;  // CPU kernel threads per rank; 0: this rank's share of its node's cores
  RunOptions opt;
};

// The CPU kernels' threads of this rank: --threads, or the cores this process may run on
// shared by the ranks of its node (at least 1).
int kernel_threads(int requested) {
  if (requested > 0) return requested;
  MPI_Comm node;
  int on_node = 1;
  MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
  MPI_CHECK(MPI_Comm_size(node, &on_node));
  MPI_CHECK(MPI_Comm_free(&node));
  cpu_set_t set;
  const int usable = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
  const int cores = int(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, std::min(usable, cores / std::max(1, on_node)));
}

int cmd_run(const RunArgs& a) {
  int rank = 0, world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  Suite suite;
  try {
    suite = load_suite(a.suite);
  } catch (const Error& e) {  // identical on every rank: report once, exit cleanly
    if (rank == 0) std::fprintf(stderr, "parabench: error: %s\n", e.what());
    return 2;
  }
  if (!a.backend.empty())
    for (auto& c : suite.cases) c.backend = a.backend;
  std::unique_ptr<io::OutputLock> lock;  // rank 0 holds --out's lock for the whole run
  if (!outputs_writable({a.out, a.md, a.csv}, rank, a.out.empty() ? nullptr : &lock, a.out)) return 2;
  // SIGINT / SIGTERM: rank 0 says where the run was and what is saved (interrupt.h).
  install_interrupt_handlers(rank == 0, rank != 0 ? std::vector<std::string>{}
                                                  : std::vector<std::string>{lock ? lock->lock_path() : "",
                                                                             a.out.empty() ? "" : io::temp_path(a.out),
                                                                             a.md.empty() ? "" : io::temp_path(a.md),
                                                                             a.csv.empty() ? "" : io::temp_path(a.csv)});
  auto saved = [&](size_t finished) {
    const std::string cases = std::to_string(finished) + (finished == 1 ? " finished case is" : " finished cases are");
    if (finished == 0) return std::string("no case had finished");
    if (a.out.empty()) return "the " + cases + " not saved (no --out)";
    return "the " + cases + " saved in " + a.out + " (\"complete\": false)";
  };
  set_interrupt_context("before the first case; " + saved(0));
  const int threads = kernel_threads(a.threads);
  cpu::set_threads(threads);
  json results = {{"schema", "parabench.results/1"}, {"suite", suite.name}, {"env", environment(world)},
                  {"complete", false}, {"cases", json::array()}};
  results["env"]["threads"] = threads;
  {
    const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    char buf[32];
    std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
    results["created"] = buf;
  }
  // The ranks on rank 0's node (the memory fit of each case counts them against its memory).
  int local_ranks = 1;
  {
    MPI_Comm node;
    MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node));
    MPI_CHECK(MPI_Comm_size(node, &local_ranks));
    MPI_CHECK(MPI_Comm_free(&node));
    MPI_CHECK(MPI_Bcast(&local_ranks, 1, MPI_INT, 0, MPI_COMM_WORLD));
  }
  const auto t_start = std::chrono::steady_clock::now();
  int failures = 0;
  for (size_t i = 0; i < suite.cases.size(); ++i) {
    const Case& c = suite.cases[i];
    set_interrupt_context("in case '" + c.name + "' (" + std::to_string(i + 1) + " of " +
                          std::to_string(suite.cases.size()) + "); " + saved(i));
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    if (rank == 0) {
      // The estimated time remaining: the mean time of the cases so far, times the rest.
      const std::string eta = i == 0 ? std::string("") : " eta " + std::to_string(int(std::lround(
                                                            elapsed / double(i) * double(suite.cases.size() - i)))) + "s";
      std::fprintf(stderr, "[%zu/%zu %6.1fs%s] %-24s %-12s ... ", i + 1, suite.cases.size(), elapsed, eta.c_str(),
                   c.name.c_str(), c.layout_str().c_str());
      std::fflush(stderr);
    }
    json result;
    try {
      if (a.skip_larger && c.layout.world() > world)
        result = error_result(c, "skip", "needs " + std::to_string(c.layout.world()) + " ranks, " +
                                             std::to_string(world) + " started");
      else
        validate_case(c, world);
    } catch (const Error& e) {
      result = error_result(c, "error", e.what());
    }
    if (result.is_null()) {  // rank 0's verdict on the memory of its node, to every rank
      const std::string fit = rank == 0 ? memory_fit(c, local_ranks, ref::host_memory_available()) : std::string();
      const std::string verdict = broadcast_text(fit);
      if (!verdict.empty()) result = error_result(c, "error", verdict);
    }
    if (result.is_null()) {
      MPI_Comm comm;
      MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, rank < c.layout.world() ? 0 : MPI_UNDEFINED, rank, &comm));
      if (comm != MPI_COMM_NULL) {
        Watchdog dog(a.timeout, "case " + c.name);
        result = run_case(c, comm, a.opt).result;
        MPI_Comm_free(&comm);
      }
      MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));  // ranks outside the case wait here
    }
    if (rank == 0) {
      const std::string status = result["status"];
      failures += status != "pass" && status != "skip";
      if (status == "skip")
        std::fprintf(stderr, "SKIP (%s)\n", result["error"].get<std::string>().c_str());
      else if (status == "error" || (status == "fail" && result.contains("error")))
        std::fprintf(stderr, "%s\n  %s\n", status == "error" ? "ERROR" : "FAIL",
                     result["error"].get<std::string>().c_str());
      else
        std::fprintf(stderr, "%s  (%.2f ms/step)\n", status == "pass" ? "PASS" : "FAIL",
                     result["throughput"]["step_ms_median"].get<double>());
      try {
        move_trace(result, a.out);
      } catch (const std::exception& e) {  // the results matter more than the trace
        std::fprintf(stderr, "parabench: warning: timeline of %s not written: %s\n", c.name.c_str(), e.what());
      }
      results["cases"].push_back(result);
      // Saved as each case ends ("complete": false until the last), so a job killed or
      // timed out later keeps the finished cases; a failed write ends the job (one line).
      if (!a.out.empty() && i + 1 < suite.cases.size()) {
        try {
          write_file(a.out, results.dump(2) + "\n");
        } catch (const Error& e) {
          lock.reset();  // this job ends here: the results file is free again
          abort_job(std::string("parabench: error: ") + e.what(), 4);
        }
      }
    }
  }
  int write_failed = 0;
  set_interrupt_context("after the last case, while writing the results; " +
                        (suite.cases.size() > 1 ? saved(suite.cases.size() - 1) + " (the last save)"
                                                : std::string("nothing saved yet")));
  if (rank == 0) {
    results["complete"] = true;
    const std::string md = markdown_report(results);
    std::printf("%s\n", md.c_str());
    try {
      if (!a.out.empty()) write_file(a.out, results.dump(2) + "\n");
      if (!a.md.empty()) write_file(a.md, md);
      if (!a.csv.empty()) write_file(a.csv, csv_tables(results));
    } catch (const Error& e) {
      std::fprintf(stderr, "parabench: error: %s\n", e.what());
      write_failed = 1;
    }
    std::fprintf(stderr, "%zu cases, %d failing%s%s\n", suite.cases.size(), failures,
                 a.out.empty() || write_failed ? "" : ", results in ", write_failed ? "" : a.out.c_str());
    std::fflush(stdout);  // before any rank exits non-zero and mpiexec tears the job down
    std::fflush(stderr);
  }
  int verdict[2] = {failures, write_failed};
  MPI_CHECK(MPI_Bcast(verdict, 2, MPI_INT, 0, MPI_COMM_WORLD));
  return verdict[1] ? 4 : verdict[0] ? 1 : 0;
}

struct AnalyzeArgs {
  std::string model, layout = "", features, schedule, dtype = "fp32", cp_kind = "ring", cp_balance = "zigzag";
  int64_t micro_batch = 2, seq = 16, micro_batches = 1, steps = 1;
  int cp_ulysses = 1;
  std::string moe_dispatcher = "alltoall";
  std::string recompute_method = "uniform";
  int recompute_num_layers = 1;
  int zero_stage = 1;
  int64_t bucket_size = 0;
  int mc2_chunks = 2;
  std::string pp_layers;  // N,N,.. | balanced
  int64_t pp_first_layers = 0, pp_last_layers = 0;
  int pp_update_every = 0;  // pipedream-2bw
  int terapipe_slices = 0;  // terapipe
  std::string tp_kind = "1d";
  int tp_depth = 1;
  bool compare_tp = false;
};

Layout parse_layout(const std::string& s) {
  Layout l;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) {
    if (item.empty()) continue;
    size_t k = 0;
    while (k < item.size() && std::isalpha(static_cast<unsigned char>(item[k]))) ++k;
    const std::string key = item.substr(0, k);
    std::string val = item.substr(k);
    if (!val.empty() && val[0] == '=') val = val.substr(1);
    int v = 0;
    try {
      v = std::stoi(val);
    } catch (...) {
      throw Error("--layout: cannot read '" + item + "' (expected e.g. dp2,tp2)");
    }
    int* dst = l.degree(key);
    PB_REQUIRE(dst, "--layout: unknown degree '", key, "' (dp, tp, pp, vpp, cp, ep)");
    *dst = v;
  }
  return l;
}

// Bus bytes: whole numbers as such, fractions (factors such as 2(n-1)/n) to two places.
std::string bus_text(double b) {
  char buf[48];
  std::snprintf(buf, sizeof buf, b == std::floor(b) ? "%.0f" : "%.2f", b);
  return buf;
}

// One row per call size (analytic.h: CommRow): payload and bus bytes, per call and total.
void print_comm_rows(const std::vector<CommRow>& rows) {
  int64_t total = 0;
  for (const auto& r : rows) total += r.bytes;
  std::printf("\n| group | pattern | phase | bytes per call | calls | total bytes | bus bytes per call | total bus bytes "
              "| share |\n|---|---|---|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& r : rows)
    std::printf("| %s | %s | %s | %lld | %lld | %lld | %s | %s | %.1f%% |\n", r.group.c_str(), comm_op_name(r.op),
                phase_name(r.phase), (long long)r.bytes_per_call(), (long long)r.calls, (long long)r.bytes,
                bus_text(r.calls ? r.bus_bytes / double(r.calls) : 0.0).c_str(), bus_text(r.bus_bytes).c_str(),
                total ? 100.0 * double(r.bytes) / double(total) : 0.0);
}

int cmd_analyze(const AnalyzeArgs& a) {
  Case c;
  c.name = "analyze";
  json mj;
  if (std::ifstream(a.model).good()) {
    mj = read_json(a.model);
  } else {
    for (const auto& name : suite_names()) {
      const json s = read_json(cases_dir() + "/" + name + ".json");
      if (s.contains("models") && s["models"].contains(a.model)) mj = s["models"][a.model];
    }
    PB_REQUIRE(!mj.is_null(), "--model: no config file or suite model named '", a.model, "'");
  }
  c.model = io::model_config_from_json(mj, a.model);
  c.model_json = io::hf_config_json(c.model);
  c.layout = parse_layout(a.layout);
  std::stringstream fs(a.features);
  for (std::string f; std::getline(fs, f, ',');)
    if (!f.empty()) c.features.push_back(f);
  c.train.micro_batch_size = a.micro_batch;
  c.train.seq_length = a.seq;
  c.train.num_micro_batches = a.micro_batches;
  c.train.steps = a.steps;
  if (!a.schedule.empty()) c.schedule = a.schedule;
  c.cp_kind = a.cp_kind, c.cp_balance = a.cp_balance, c.cp_ulysses = a.cp_ulysses;
  c.moe_dispatcher = a.moe_dispatcher;
  c.recompute_method = a.recompute_method, c.recompute_num_layers = a.recompute_num_layers;
  c.zero_stage = a.zero_stage, c.bucket_size = a.bucket_size, c.mc2_chunks = a.mc2_chunks;
  if (a.pp_layers == "balanced")
    c.pp_balanced = true;
  else if (!a.pp_layers.empty())
    c.pp_layers = parse_counts(a.pp_layers, "--pp-layers");
  c.pp_first_layers = a.pp_first_layers, c.pp_last_layers = a.pp_last_layers;
  c.pp_update_every = a.pp_update_every;
  c.terapipe_slices = a.terapipe_slices;
  c.tp_kind = a.tp_kind, c.tp_depth = a.tp_depth;
  PB_REQUIRE(a.dtype == "fp32" || a.dtype == "bf16", "--dtype: unknown dtype '", a.dtype, "' (fp32, bf16)");
  c.dtype = a.dtype;
  if (a.compare_tp) {  // every arrangement of the layout's tp, each validated on its own
    std::printf("model: H=%lld A=%lld G=%lld F=%lld V=%lld L=%lld | layout %s | features %s | %s | B=%lld S=%lld\n",
                (long long)c.model.hidden_size, (long long)c.model.num_attention_heads,
                (long long)c.model.num_key_value_heads, (long long)c.model.intermediate_size,
                (long long)c.model.vocab_size, (long long)c.model.num_hidden_layers, c.layout_str().c_str(),
                a.features.empty() ? "-" : a.features.c_str(), c.dtype.c_str(), (long long)a.micro_batch,
                (long long)a.seq);
    print_tp_comparison(c);
    return 0;
  }
  validate_case(c, c.layout.world());
  const Prediction p = predict(c);
  std::printf("model: H=%lld A=%lld G=%lld F=%lld V=%lld L=%lld | layout %s | features %s | %s | B=%lld S=%lld m=%lld, %lld step(s)%s\n",
              (long long)c.model.hidden_size, (long long)c.model.num_attention_heads,
              (long long)c.model.num_key_value_heads, (long long)c.model.intermediate_size,
              (long long)c.model.vocab_size, (long long)c.model.num_hidden_layers,
              c.layout_str().c_str(),
              a.features.empty() ? "-" : a.features.c_str(), c.dtype.c_str(), (long long)a.micro_batch, (long long)a.seq,
              (long long)a.micro_batches, (long long)a.steps,
              c.layout.pp > 1 ? (" | schedule " + c.schedule).c_str() : "");
  if (c.model.num_local_experts > 0)
    std::printf("MoE: E=%lld K=%lld F_e=%lld, %s dispatcher; routing assumed uniform (each expert T*K/E copies of "
                "every rank's T tokens): a run's dispatcher bytes and routed memory follow its actual routing\n",
                (long long)c.model.num_local_experts, (long long)c.model.num_experts_per_tok,
                (long long)c.model.expert_ffn(), c.moe_dispatcher.c_str());
  std::printf("parameters: %lld total, %lld per rank | model FLOPs per step: %.4g\n", (long long)p.params_total,
              (long long)p.params_local, p.flops_per_step);
  if (c.layout.pp > 1) {  // the layers per stage, their costs and the bubble they give
    const Features f = c.typed_features();
    const pp::Schedule s = schedule_for({c.model, c.train, c.layout, f, c.schedule});
    const std::vector<int64_t> split = s.layer_counts(c.model.num_hidden_layers);
    std::printf("\npipeline stages (costs: training FLOPs per token, reference/model/flops.h)\n");
    print_split(s, pp::default_costs(s), pp::analytic_layer_costs(c.model, c.train.seq_length), split);
    if (s.update_every > 0) std::printf("%s\n", weight_versions_line(s).c_str());  // (in each stage's Params)
  }
  // One block per pipeline stage (the ranks of a stage hold and move the same amounts).
  for (int stage = 0; stage < c.layout.pp; ++stage) {
    const Prediction ps = stage == 0 ? p : predict(c, stage);
    if (c.layout.pp > 1)
      std::printf("\n## pipeline stage %d: %lld parameters per rank\n", stage, (long long)ps.params_local);
    std::printf("\n| memory per rank | bytes |\n|---|---:|\n");
    for (const auto& [cat, bytes] : ps.memory) std::printf("| %s | %lld |\n", category_name(cat), (long long)bytes);
    print_comm_rows(ps.comm);
  }
  if (p.comm.empty()) std::printf("| (none: one rank) | | | | | | | | |\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"parabench: distributed-training techniques, checked against the reference and measured"};
  app.require_subcommand(1);
  auto* list = app.add_subcommand("list", "techniques, suites and cases");
  RunArgs ra;
  auto* run = app.add_subcommand("run", "run a suite under mpirun; exit 1 if any case does not pass");
  run->add_option("--suite", ra.suite, "smoke | ci | full | path to a case file")->required();
  run->add_option("--out", ra.out, "results JSON");
  run->add_option("--md", ra.md, "Markdown report");
  run->add_option("--csv", ra.csv, "CSV tables");
  run->add_option("--backend", ra.backend, "run every case on this backend (overrides the case files)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  run->add_flag("--skip-larger", ra.skip_larger, "skip (instead of failing) cases that need more ranks than started");
  run->add_option("--threads", ra.threads,
                  "CPU kernel threads per rank (results are bitwise the same for any count); default: the "
                  "rank's share of its node's cores");
  run->add_option("--timeout", ra.timeout, "seconds per case before the job is aborted")->capture_default_str();
  run->add_option("--peak-tflops", ra.opt.peak_tflops, "stated peak TFLOP/s per rank for MFU");
  run->add_option("--inject-failure", ra.opt.inject_failure_rank, "(test) this rank throws in its first step")
      ->group("");
  run->add_option("--inject-delay", ra.opt.inject_delay_s, "(test) every rank sleeps this long in its first step")
      ->group("");
  run->add_option("--inject-nan", ra.opt.inject_nan_step,
                  "(test) this step (0-based) gets a NaN gradient, in the reference and the distributed run")
      ->group("");
  AnalyzeArgs aa;
  auto* analyze = app.add_subcommand("analyze", "analytic predictions only (no run)");
  analyze->add_option("--model", aa.model, "HF config.json, or a model name from a suite file")->required();
  analyze->add_option("--layout", aa.layout, "degrees, e.g. dp2,tp2");
  analyze->add_option("--features", aa.features, "comma-separated, e.g. sp");
  analyze->add_option("--micro-batch", aa.micro_batch, "B")->capture_default_str();
  analyze->add_option("--seq", aa.seq, "S")->capture_default_str();
  analyze->add_option("--micro-batches", aa.micro_batches, "m per DP rank")->capture_default_str();
  analyze->add_option("--steps", aa.steps, "steps")->capture_default_str();
  analyze->add_option("--dtype", aa.dtype, "fp32 | bf16 (weights and activations; bf16 with fp32 master and grads)")
      ->capture_default_str();
  analyze->add_option("--cp-kind", aa.cp_kind, "with cp > 1: ring | ulysses | hybrid")->capture_default_str();
  analyze->add_option("--cp-balance", aa.cp_balance, "ring: zigzag | contiguous")
      ->check(CLI::IsMember({"zigzag", "contiguous"}))
      ->capture_default_str();
  analyze->add_option("--cp-ulysses", aa.cp_ulysses, "hybrid: the Ulysses degree u")->capture_default_str();
  analyze->add_option("--moe-dispatcher", aa.moe_dispatcher, "MoE token dispatcher: alltoall | allgather")
      ->capture_default_str();
  analyze->add_option("--recompute-method", aa.recompute_method, "recompute_full: uniform | block")
      ->capture_default_str();
  analyze->add_option("--recompute-num-layers", aa.recompute_num_layers,
                      "recompute_full: layers per group (uniform) or first layers of each stage (block)")
      ->capture_default_str();
  analyze->add_option("--zero-stage", aa.zero_stage, "distributed_optimizer: 1 (optimizer state) | 2 (and gradients) | 3 (and weights)")
      ->capture_default_str();
  analyze->add_option("--pp-layers", aa.pp_layers, "pp: layers per stage N,N,.. (stage order) or balanced");
  analyze->add_option("--pp-first-layers", aa.pp_first_layers, "pp: pipeline rank 0's layers (Megatron)");
  analyze->add_option("--pp-last-layers", aa.pp_last_layers, "pp: pipeline rank p-1's layers (Megatron)");
  analyze->add_option("--pp-update-every", aa.pp_update_every,
                      "pipedream-2bw: micro-batches per weight version (default p)");
  analyze->add_option("--terapipe-slices", aa.terapipe_slices, "terapipe: token slices per sequence (default 1)");
  analyze->add_option("--tp-kind", aa.tp_kind, "tp's arrangement: 1d | 2d | 2.5d | 3d")->capture_default_str();
  analyze->add_option("--tp-depth", aa.tp_depth, "tp-kind 2.5d: the depth d (tp = q x q x d)")->capture_default_str();
  analyze->add_flag("--compare-tp", aa.compare_tp, "instead: every TP arrangement of the layout's tp side by side (1d, "
                    "1d + sp, 2d, 2.5d for each depth, 3d)");
  analyze->add_option("--bucket-size", aa.bucket_size,
                      "DP gradient buckets (ZeRO-1 shards each): elements per bucket (0: one)")
      ->capture_default_str();
  analyze->add_option("--mc2-chunks", aa.mc2_chunks, "mc2: chunks each split linear runs in")->capture_default_str();
  analyze->add_option("--schedule", aa.schedule, "pipeline schedule with pp > 1 (default 1f1b): " + technique_names(TechniqueKind::Schedule));
  std::vector<std::string> report_in;
  std::string report_html, report_md;
  bool report_csv = false;
  auto* report = app.add_subcommand("report", "Markdown tables of a results file; with --html, a page for several side by side");
  report->add_option("results", report_in, "results JSON (several, and collectives JSON, with --html / --md)")->required();
  report->add_flag("--csv", report_csv, "CSV instead of Markdown");
  report->add_option("--html", report_html, "write one self-contained page (tables and plots) here");
  report->add_option("--md", report_md, "write the page's tables as Markdown here");
  std::string base, cur;
  CompareOptions co;
  bool no_timing = false;
  auto* compare = app.add_subcommand("compare", "regression gate: exit 1 on a numerics, comm or time regression");
  compare->add_option("baseline", base, "baseline results JSON")->required();
  compare->add_option("current", cur, "current results JSON")->required();
  compare->footer("Exit codes: 0 no regression (warnings allowed), 1 a regression, 2 an input error.");
  compare->add_option("--time-tol", co.time_tol, "allowed relative step-time increase")->capture_default_str();
  compare->add_option("--refresh-tol", co.refresh_tol, "a step faster by more than this warns: refresh the baseline")
      ->capture_default_str();
  compare->add_option("--mem-tol", co.mem_tol, "allowed relative growth of a measured memory peak")
      ->capture_default_str();
  compare->add_flag("--no-timing", no_timing, "ignore step times (noisy machines, CI)");
  ScheduleArgs sa;
  auto* schedule = add_schedule_command(app, sa);
  CollectivesArgs ca;
  auto* collectives = add_collectives_command(app, ca);

  try {
    app.parse(argc, argv);
    PB_REQUIRE(!run->parsed() || (ra.threads >= 0 && ra.threads <= 1024), "--threads must be 1 .. 1024 (or 0: "
               "the default), got ", ra.threads);
    PB_REQUIRE(!run->parsed() || (std::isfinite(ra.timeout) && ra.timeout > 0),
               "--timeout must be a positive number of seconds, got ", ra.timeout);
    PB_REQUIRE(!run->parsed() || ra.opt.inject_nan_step == -1 || ra.opt.inject_nan_step >= 1,
               "--inject-nan: a step >= 1 (step 0's gradients are checked against the reference), got ",
               ra.opt.inject_nan_step);
    if (collectives->parsed()) check_collectives_args(ca);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const std::exception& e) {  // before MPI_Init: the launcher's rank 0 says it, once
    if (launcher_rank() == 0) {
      std::fprintf(stderr, "parabench: error: %s\n", e.what());
      std::fflush(stderr);
    } else {  // the others leave after it: mpiexec ends the job at the first non-zero exit
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    return 2;
  }
  try {
    if (list->parsed()) return cmd_list();
    if (schedule->parsed()) return cmd_schedule(sa);
    if (analyze->parsed()) return cmd_analyze(aa);
    if (report->parsed()) {
      if (!report_html.empty() || !report_md.empty()) {
        PB_REQUIRE(!report_csv, "report: --csv goes with one file, not with --html / --md");
        write_report_page(report_in, report_html.empty() ? report_md + ".html" : report_html, report_md);
        return 0;
      }
      PB_REQUIRE(report_in.size() == 1, "report: ", report_in.size(), " files: several need --html or --md");
      const json r = read_json(report_in[0]);
      std::printf("%s\n", (report_csv ? csv_tables(r) : markdown_report(r)).c_str());
      return 0;
    }
    if (compare->parsed()) {
      co.timing = !no_timing;
      const CompareResult r = compare_results(read_json(base), read_json(cur), co);
      std::printf("%s\n", r.table.c_str());
      for (const auto& p : r.problems) std::fprintf(stderr, "regression: %s\n", p.c_str());
      for (const auto& w : r.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
      std::printf("%s\n", r.ok ? "compare: OK" : "compare: REGRESSION");
      return r.ok ? 0 : 1;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "parabench: error: %s\n", e.what());
    return 2;
  }
  // run and collectives: under MPI; any exception on a rank aborts the job with its message.
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int code = 0;
  try {
    code = collectives->parsed() ? cmd_collectives(ca) : cmd_run(ra);
  } catch (const std::exception& e) {
    abort_job(std::string("parabench: error: ") + e.what());
  }
  MPI_Finalize();
  return code;
}
