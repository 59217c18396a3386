/* The pipeline executor: runs one rank's actions of a schedule (pp_schedule.h) on the
 * distributed model for one optimizer step's m micro-batches.
 *
 *   F (mb, c)  model.forward_chunk   (input: the batch on stage 0, else the received x)
 *   B (mb, c)  model.backward_chunk  (input: the loss on the last stage, else the received
 *              dy); with a split backward only the input gradient, W computes the rest
 *   R (mb, c)  model.recompute_chunk (recompute in advance): runs after the batch before it
 *              was posted and before it is waited for
 *   Send/Recv  consecutive communication actions are one batch_p2p over the pp group
 *              (posted together, all waited), each tensor (N_s, H) = [B, S/CP, H] / TP
 *              under SP: activations in the forward phase, gradients in the backward
 * Every micro-batch's loss is scaled by 1/m, so the accumulated gradients are those of
 * the mean loss over the m micro-batches, as the reference accumulates them. The
 * asynchronous kinds (versions: pp_async.h) scale by 1/update_every instead, run each B on
 * its F's weight version and update the stage's weights after every update_every-th B. Tags tell
 * activations from gradients between the same pair of ranks (interleaving with p = 2).
 * Works on any device: the tensors are the model's, the transfers the Communicator's; the
 * per-action timeline comes from device marks (CUDA events on the GPU, core/device.h).
 */
#pragma once

#include <chrono>
#include <functional>
#include <vector>

#include "optimized/model/dist_model.h"
#include "optimized/train/pp_schedule.h"

namespace pb {

struct PipelineStep {
  double loss = 0;                       // mean loss over the m micro-batches (last stage; 0 elsewhere)
  std::vector<pp::TraceEvent> timeline;  // this rank's compute actions, from the step's start
  double busy_us = 0, total_us = 0;      // compute time and the rank's whole step
  int weight_versions = 1;               // the most weight versions held at once (asynchronous kinds)
};

class WeightVersions;

PipelineStep run_pipeline(const pp::Schedule& s, DistModel& model, ProcessGrid& grid,
                          const std::function<ref::Batch(int mb)>& batch_of,
                          std::chrono::steady_clock::time_point t0, WeightVersions* versions = nullptr);

}  // namespace pb
