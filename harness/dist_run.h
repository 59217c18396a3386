/* The distributed run of a case as the harness sees it: the device of its backend, the
 * training run (optimized/train/train_step.h), and the tensors the checks compare,
 * gathered from the shards to rank 0 by name (DistParams::gather_global, raw MPI, not
 * accounted): every gradient after step 1 and every fp32 master weight after the last.
 */
#pragma once

#include <mpi.h>

#include <map>
#include <string>
#include <vector>

#include "harness/case.h"
#include "harness/runner.h"
#include "optimized/core/device.h"
#include "optimized/train/train_step.h"

namespace pb::harness {

using TensorsByName = std::map<std::string, std::vector<double>>;  // Hugging Face name -> row-major values

struct DistRun {
  TrainRun train;                // per-step loss, gradient norm and time (every rank), PP timeline
  TensorsByName grads1, final;   // rank 0: step-1 gradients, final fp32 master weights
};

Device case_device(const Case& c);

// CUDA: picks this rank's GPU (its rank among the ranks of its node) and resets the
// device's peaks; returns whether NCCL carries the collectives (not with more ranks than
// GPUs on a node, nor without NCCL: then MPI, staged through host memory, said once).
bool select_device(MPI_Comm comm);

// What train_distributed needs of a case.
TrainStepConfig train_config(const Case& c, Device dev, bool nccl, const RunOptions& opt);

// Trains the case on comm and gathers its tensors to rank 0.
DistRun run_distributed(const Case& c, MPI_Comm comm, Device dev, bool nccl, const RunOptions& opt);

}  // namespace pb::harness
