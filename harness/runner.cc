/* One case: validation, then the phases of run_case (see runner.h). */
#include "harness/runner.h"
#include "harness/size_check.h"

#include "harness/case_result.h"
#include "harness/checks.h"
#include "harness/dist_run.h"
#include "harness/reference_runs.h"
#include "optimized/comm/ledger.h"
#include "optimized/core/allocator.h"
#include "optimized/core/fatal.h"
#include "optimized/parallel/cp_ring.h"
#include "optimized/train/registry.h"
#include "reference/common/error.h"

namespace pb::harness {

using nlohmann::json;

void validate_case(const Case& c, int world_size) {
  c.model.validate();
  c.train.validate();
  PB_REQUIRE(c.train.steps >= 1, "case ", c.name, ": steps must be >= 1");
  check_case_sizes(c);  // before anything multiplies the sizes (size_check.h)
  PB_REQUIRE(c.backend == "cpu" || c.backend == "cuda", "case ", c.name, ": unknown backend '", c.backend,
             "' (cpu, cuda)");
  if (c.backend == "cuda") {
    PB_REQUIRE(cuda_built(), "case ", c.name, ": backend cuda: this build has no CUDA backend (no CUDA toolkit found)");
    PB_REQUIRE(cuda_device_count() > 0, "case ", c.name, ": backend cuda: no CUDA device is visible on this machine");
  }
  PB_REQUIRE(c.dtype == "fp32" || c.dtype == "bf16", "case ", c.name, ": unknown dtype '", c.dtype, "' (fp32, bf16)");
  try {  // the features, the layout and each active technique's needs (the schedule's too)
    const Features f = c.typed_features();
    validate_case_spec({c.model, c.train, c.layout, f, c.schedule});
  } catch (const Error& e) {
    throw Error("case " + c.name + ": " + e.what());
  }
  PB_REQUIRE(c.layout.world() <= world_size, "case ", c.name, ": layout ", c.layout.str(), " needs ",
             c.layout.world(), " ranks, only ", world_size, " started");
}

json error_result(const Case& c, const std::string& status, const std::string& message) {
  return {{"name", c.name},
          {"features", c.features},
          {"schedule", c.layout.pp > 1 ? json(c.schedule) : json(nullptr)},
          {"layout", {{"dp", c.layout.dp}, {"tp", c.layout.tp}, {"pp", c.layout.pp}, {"vpp", c.layout.vpp},
                      {"cp", c.layout.cp}, {"ep", c.layout.ep}}},
          {"tp_grid", {{"kind", c.tp_kind}, {"depth", c.tp_depth}}},  // how the tp ranks are arranged (tp_grid.h)
          {"backend", c.backend},
          {"dtype", c.dtype},
          {"steps", c.train.steps},
          {"seed", c.train.seed},
          {"model", c.model_json},
          {"status", status},
          {"error", message},
          {"checks", json::array()},
          {"memory", json::array()},
          {"comm", json::array()}};
}

CaseOutcome run_case(const Case& case_in, MPI_Comm comm, const RunOptions& opt) {
  Case c = case_in;
  if (opt.inject_nan_step >= 0) c.train.inject_nan_step = opt.inject_nan_step;
  int rank = 0;
  MPI_CHECK(MPI_Comm_rank(comm, &rank));
  const Device dev = case_device(c);
  const References refs = rank == 0 ? run_references(c, dev) : References{};  // rank 0 only

  CommLedger::get().clear();  // the distributed run, measured from here
  TrackingAllocator::host().reset_peaks();
  reset_cp_attention_pairs();
  const bool nccl = dev == Device::CUDA && select_device(comm);
  const DistRun run = run_distributed(c, comm, dev, nccl, opt);
  CaseOutcome out;
  out.losses = run.train.losses;
  out.grad_norms = run.train.grad_norms;

  CaseTables t;  // every rank takes part in the gathers; rank 0 keeps the tables
  t.memory = gather_memory(c, dev, comm);
  const CommCheck cc = check_comm(c, comm);
  t.comm = cc.rows;
  t.pipeline = c.layout.pp > 1 ? gather_pipeline(c, run.train, comm) : json(nullptr);
  t.cp = c.layout.cp > 1 ? gather_cp(c, comm) : json(nullptr);
  t.moe = c.model.num_local_experts > 0 ? gather_moe(c, comm) : json(nullptr);
  t.overlap = gather_overlap(run.train, comm);
  t.post_validation = c.typed_features().post_validation ? gather_post_validation(run.train, comm) : json(nullptr);
  if (rank != 0) return out;

  t.checks = numeric_checks(c, run, refs);
  t.checks.push_back(comm_check_entry(cc.worst));
  t.throughput = throughput(c, run.train, opt.peak_tflops);
  for (const auto& name : refs.ref32.names) {  // in the reference's order
    const auto& v = run.final.at(name);
    out.params.emplace_back(v.begin(), v.end());
  }
  out.result = case_result(c, dev, t);
  return out;
}

}  // namespace pb::harness
