/* Running one case: the reference on one process, the distributed implementation on the
 * case's ranks, and the comparison (DESIGN.md, Checks):
 *   per-step loss, every step-1 gradient and every parameter after the last step,
 *   gathered from the shards, as rel_err = ||out - ref|| / ||ref|| and max |out - ref|
 *   against the tolerance of the dtype; the communication ledger against the analytic
 *   model (exact, per call size); measured memory per category against the prediction;
 *   step times.
 *
 * run_case is the entry point; its phases live in their own files:
 *   reference_runs.h  the fp32 reference and the baseline (fp64 reference, or bf16 on one rank)
 *   dist_run.h        the device of the backend, the distributed run, the gather of its tensors
 *   checks.h          tolerances, the numerical checks, the communication check
 *   case_result.h     memory and pipeline tables, throughput, the results entry
 */
#pragma once

#include <mpi.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "harness/case.h"

namespace pb::harness {

struct RunOptions {
  double peak_tflops = 0;        // stated peak for MFU; 0: no MFU
  int inject_failure_rank = -1;  // test hook: this world rank throws during its first step
  double inject_delay_s = 0;     // test hook: every rank sleeps this long in its first step (a hang)
  int64_t inject_nan_step = -1;  // test hook: a NaN gradient in this step, reference and distributed
                                 // alike (ref::TrainConfig::inject_nan_step)
};

struct Tolerance {
  double loss, grad, param;  // the table (a floor when a baseline rule applies)
  double cap_loss, cap_grad, cap_param;  // bf16: no baseline rule may raise a tolerance past these
};
Tolerance tolerance_for(const std::string& dtype);  // checks.cc

// Checks that need no communication (features, layout, backend, dtype, world size).
// Throws pb::Error with one line; the same on every rank.
void validate_case(const Case& c, int world_size);

struct CaseOutcome {
  nlohmann::json result;                   // the case's results entry (rank 0 of the case)
  std::vector<double> losses;              // per-step loss (all ranks)
  std::vector<double> grad_norms;          // per-step global gradient norm before clipping (all ranks)
  std::vector<std::vector<float>> params;  // final parameters, gathered (rank 0)
};

// Runs a validated case on comm (size == c.layout.world()).
CaseOutcome run_case(const Case& c, MPI_Comm comm, const RunOptions& opt);

// The results entry of a case that could not run.
nlohmann::json error_result(const Case& c, const std::string& status, const std::string& message);

}  // namespace pb::harness
