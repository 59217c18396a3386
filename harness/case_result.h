/* The measured tables of a case and its results entry (results/README.md):
 *   memory      every rank's peak per category, gathered to rank 0, next to the analytic
 *               model's prediction for the rank's pipeline rank
 *   pipeline    (pp > 1) every stage's measured busy and total time and the last step's
 *               timeline (its first rank: TP 0, CP 0, DP 0), next to the schedule simulated
 *               at unit costs; the timelines as a Chrome trace
 *   throughput  step time median/min/max over the timed steps (2..N, or 1 if N = 1),
 *               tokens/s, model TFLOP/s, MFU against a stated peak
 */
#pragma once

#include <mpi.h>

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "harness/case.h"
#include "harness/dist_run.h"

namespace pb::harness {

// Every rank of comm: the peaks of the case's allocator (the device's for CUDA); on rank 0
// the memory rows of every rank, elsewhere null.
nlohmann::json gather_memory(const Case& c, Device dev, MPI_Comm comm);

// Every rank of comm (pp > 1): on rank 0 the "pipeline" object, elsewhere null.
nlohmann::json gather_pipeline(const Case& c, const TrainRun& run, MPI_Comm comm);

nlohmann::json throughput(const Case& c, const TrainRun& run, double peak_tflops);

struct CaseTables {
  nlohmann::json checks, throughput, memory, comm, pipeline, cp, moe;  // pipeline null without PP, cp without CP,
                                                                       // moe without experts
  nlohmann::json overlap;
  nlohmann::json post_validation;  // null without the feature
};

// Post-validation of the optimizer step (model/post_validation.h): per rank over the run,
// the steps taken on the partial state, kept, rolled back, redone clipped and skipped
// (on rank 0; null elsewhere).
nlohmann::json gather_post_validation(const TrainRun& run, MPI_Comm comm);

// Every rank of comm: on rank 0 the "overlap" object (overlap_result.cc): per rank the
// communication time of the timed steps, the part the compute thread waited on and the
// hidden fraction (core/timeline.h), their sums, and every rank's timeline of the last step
// as a Chrome trace ("trace"); null elsewhere.
nlohmann::json gather_overlap(const TrainRun& run, MPI_Comm comm);

// Context parallelism: the kind, the split and every rank's attention work (query-key
// pairs over the run, parallel/cp_ring.h), with its max/min (null on other ranks).
nlohmann::json gather_cp(const Case& c, MPI_Comm comm);

// MoE routing statistics from every rank's routing log (parallel/moe_routing.h): per step
// the copies each expert got (summed over layers and micro-batches) and their max / mean,
// and per rank the copies it dispatched, the rows its experts received and the copies its
// capacity dropped; the same per rank over the run (null on other ranks).
nlohmann::json gather_moe(const Case& c, MPI_Comm comm);

// The results entry: status "pass" when every check passes, else "fail".
nlohmann::json case_result(const Case& c, Device dev, const CaseTables& t);

}  // namespace pb::harness
