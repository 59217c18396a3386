/* The distributed training run of one case: the process grid, the model and the optimizer,
 * then `steps` optimizer steps, each timed.
 *
 * A step on every rank: zero the gradients; m micro-batches of B sequences (m per DP rank;
 * DP rank d reads global micro-batches d*m .. d*m+m-1 of the reference's m*DP), either
 * through the pipeline executor (pp > 1: one schedule of `schedule` kind, the loss
 * all-reduced over pp from the last stage) or as m calls of forward_backward, each
 * gradient scaled by 1/m; the DP-averaged loss; the optimizer step (global gradient norm
 * before clipping); the device synchronized. The step time is the slowest rank's (MPI
 * max), from a barrier before the step to its last kernel. Every rank records its timeline
 * of compute and communication spans (core/timeline.h) for the hidden fraction.
 *
 * Knows nothing of the harness: a case arrives as a TrainStepConfig, and what the harness
 * reads of the model between steps (the step-1 gradients, the final parameters) it reads
 * in an after_step hook.
 */
#pragma once

#include <mpi.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "optimized/core/device.h"
#include "optimized/core/tensor.h"
#include "optimized/core/timeline.h"
#include "optimized/model/features.h"
#include "optimized/model/post_validation.h"
#include "optimized/parallel/layout.h"
#include "optimized/train/pp_executor.h"
#include "reference/model/config.h"

namespace pb {

class DistParams;
class ProcessGrid;

struct TrainStepConfig {
  ref::ModelConfig model;
  ref::TrainConfig train;          // B, S, m (micro-batches per DP rank), steps, seed, AdamW
  Layout layout;
  Features features;
  std::string schedule = "1f1b";   // pipeline schedule kind (used when pp > 1)
  DType dtype = DType::F32;        // weights and activations (bf16: fp32 master and grads)
  Device device = Device::CPU;
  bool nccl = false;               // collectives through NCCL; the pp group too where the schedule's order allows
  int inject_failure_rank = -1;    // test hook: this world rank throws during its first step
  double inject_delay_s = 0;       // test hook: every rank sleeps this long in its first step (a hang)
};

// Per-step results on every rank; with PP this rank's measured timeline of the last step.
struct TrainRun {
  std::vector<double> losses, grad_norms;  // DP-averaged loss; global gradient norm before clipping
  std::vector<double> step_ms;             // the slowest rank's time of each step
  PipelineStep last_pipeline_step;         // this rank's (PP only)
  double pp_busy_us = 0, pp_total_us = 0;  // summed over the timed steps (2..N, or 1 if N = 1)
  CommTime comm;                           // this rank's communication, total and exposed, over them
  std::vector<TimeSpan> last_timeline;     // this rank's spans of the last step, from its start (ms)
  PostValidationLog post_validation;       // this rank's (feature post_validation)
};

// Called on every rank after step `step` (0-based), once the optimizer has run: the
// gradients are the step's, the parameters updated. Must not use the accounted groups.
using AfterStep = std::function<void(int64_t step, DistParams& params, ProcessGrid& grid)>;

// Trains on comm (size == c.layout.world()). Every rank of comm calls it.
TrainRun train_distributed(const TrainStepConfig& c, MPI_Comm comm, const AfterStep& after_step = {});

}  // namespace pb
