/* The checks of a case (DESIGN.md, Checks): the distributed run's numbers against the
 * references with the dtype's tolerances, and its communication against the analytic
 * model, one row per (group, op, phase, bytes per call).
 *
 * Results entries: a check is {"tensor", "rel_err", "max_abs", "tol", "baseline_err",
 * "pass"}; a comm row is {"group", "op", "phase", "bytes_per_call", "calls", "bytes",
 * "bus_bytes", "predicted_calls", "predicted_bytes", "predicted_bus_bytes"} (rank 0's).
 */
#pragma once

#include <mpi.h>

#include <cstdint>

#include <nlohmann/json.hpp>

#include "harness/case.h"
#include "harness/dist_run.h"
#include "harness/reference_runs.h"

namespace pb::harness {

// The first step (1-based) at which the references cannot serve as an oracle: a loss or
// gradient norm of the fp32 reference or of the baseline (fp64, or one-rank bf16) is not
// finite, or the two are more than 100% apart (then a tolerance derived from their
// distance would pass anything: lr 1e30 made it 1.5e61); or the last step if a final
// parameter is. 0 when they agree.
int reference_diverged_at(const References& refs, int64_t nan_step = -1);  // (the injected NaN's step aside)

// Rank 0: per-step loss and gradient norm, every step-1 gradient and every final
// parameter of run against refs.ref32, in that order; a single failing "reference" check
// saying "reference diverged at step N" instead when the references diverged.
nlohmann::json numeric_checks(const Case& c, const DistRun& run, const References& refs);

struct CommCheck {
  nlohmann::json rows = nlohmann::json::array();  // this rank's measured and predicted rows
  int64_t worst = 0;                              // the largest difference of any rank of comm
};

// Every rank of comm: its ledger against the prediction for its pipeline rank. A row is
// one call size, matched exactly by (group, op, phase, bytes per call); the difference of
// a row is the largest of its calls, its payload bytes and its bus bytes (rounded to a byte).
CommCheck check_comm(const Case& c, MPI_Comm comm);

// The "comm" entry of the checks: passes when no rank differs.
nlohmann::json comm_check_entry(int64_t worst);

}  // namespace pb::harness
