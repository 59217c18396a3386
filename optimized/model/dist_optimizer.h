/* The optimizer step of the distributed model: gradient synchronization, the global
 * gradient norm, clipping and AdamW on this rank's shards.
 *
 *   1. SP: all-reduce the replicated norm-weight gradients over TP (each rank saw only
 *      its N/TP rows) — one call over the leading block of the gradient buffer.
 *   2. DP: all-reduce the whole gradient buffer over DP and divide by DP (mean over
 *      the DP*m micro-batches, each already scaled by 1/m).
 *   3. norm^2 = sum over TP-sharded grads + (TP rank 0 only) replicated grads, all-reduced
 *      over the model-parallel group: every element of the global model counted once.
 *   4. AdamW with the clip coefficient min(1, clip / (norm + 1e-6)) (reference/model/adamw.h),
 *      in two launches over the contiguous buffers (norm weights without decay, matrices).
 * All calls are accounted in the optimizer phase. The memory techniques change where the
 * state lives and how the gradients arrive (Rajbhandari et al., arXiv 1910.02054):
 *   ZeRO-1 (step_sharded)      per bucket reduce-scatter over DP x CP (the experts' bucket
 *                              over expert_dp), AdamW on the rank's slices, per bucket
 *                              all-gather of the new weights
 *   ZeRO-2/3 (step_per_param)  the gradients already reduce-scattered per parameter into
 *                              the rank's slices (zero_grads.h); AdamW per slice; ZeRO-2
 *                              all-gathers each parameter, ZeRO-3 keeps the slices
 *                              (zero_params.h gathers where they are used)
 *   offload                    the reduced gradients to the host, AdamW there, the new
 *                              weights back (ZeRO-Offload, arXiv 2101.06840)
 *   reuse-fp32-param           the master rebuilt from (bf16, residual) halves
 */
#pragma once

#include "optimized/model/dist_model.h"
#include "optimized/model/post_validation.h"
#include "optimized/parallel/terms.h"
#include "reference/model/config.h"

namespace pb {

class DistOptimizer {
 public:
  DistOptimizer(DistModel& model, ProcessGrid& grid, const ref::TrainConfig& tc, bool post_validation = false)
      : model_(model), grid_(grid), tc_(tc), post_validation_(post_validation) {}
  // Returns the global gradient norm before clipping. A non-finite norm skips the step
  // (nothing changes, the step count included), as the reference does.
  double step();
  // The asynchronous pipelines' update of this rank's stage alone (train/pp_async.h): the
  // gradients averaged over DP (x CP), AdamW clipped by the stage's own norm; returns the
  // stage's squared norm (summed over TP). A non-finite norm skips it, as step() does.
  double step_stage();
  // Post-validation (model/post_validation.h): what this rank's steps did.
  const PostValidationLog& post_validation_log() const { return log_; }
  // The DP-averaged loss of the step (the mean of the ranks' local means; under CP also
  // over the CP ranks, which hold equal shares of each sequence).
  double average_loss(double local_mean);

 private:
  double step_sharded();    // the distributed optimizer (ZeRO-1)
  double step_per_param();  // ZeRO-2: the gradients already reduced into the rank's slices
  // The whole-buffer path's reduction (DP x CP mean, unless the backward summed them) and
  // this rank's squares: every element once across TP, the experts once across EP.
  double reduced_squares(bool summed);
  void sum_replicated_grads();  // SP: the replicated block's gradients summed over TP
  float clip_coefficient(double norm) const;  // min(1, clip / (norm + 1e-6)); 1 without clipping
  ops::AdamHyper hyper(double norm);  // this step's AdamW constants (counts the step; a
                                      // non-finite norm: skip_, not counted)
  // Post-validation (post_validation.cc): the step on the partial state along the pipeline,
  // validated by the full one; the copy of the state it may roll back to.
  double step_post_validated(double sq_here);
  void keep_state();
  void restore_state();
  void to_host(const Tensor& grads, int64_t at);        // ZeRO-Offload: reduced gradients to the host copy
  void from_host(Tensor& dst, const Tensor& master);    //   and the new weights back
  Stream& copy_stream();                                //   their side stream
  // The squares of the (expert or other) gradients in [from, to) of the buffer.
  double sum_squares(int64_t from, int64_t to, bool experts);
  // Clipping by the global norm and AdamW on elements [lo, hi) of the buffers; the master
  // and Adam state start at element base (0, or the range's start under ZeRO-1).
  void adamw(int64_t lo, int64_t hi, int64_t base, ops::AdamHyper h);
  // Where gradients are averaged: DP, or DP x CP under context parallelism (2.5D TP: with
  // its depth, process_grid.h).
  Communicator& grad_group() { return grid_.layout().cp > 1 || grid_.tp_grid().d > 1 ? grid_.dp_cp() : grid_.dp(); }
  DistModel& model_;
  ProcessGrid& grid_;
  ref::TrainConfig tc_;
  bool post_validation_ = false;
  int64_t t_ = 0;
  bool skip_ = false;  // this step's norm is not finite: AdamW leaves everything as it is
  Tensor kept_[3];     // post-validation: master (weights), m, v before the eager step
  PostValidationLog log_;
  Stream side_;  // offload's copies (created on first use)
};

// The optimizer's own terms: the squared-norm all-reduce over the model-parallel group
// (TP x PP > 1), one double a step; the per-rank parameter state, fp32 grads and Adam's m
// and v (+ the fp32 master in bf16): e + 4 + 8 (+ 4) bytes per local parameter.
void optimizer_terms(const Dims& d, Terms& t);
// ZeRO-Offload (dist_params.h): the optimizer state leaves the device for the host with a
// copy of the range's gradients, 16 bytes per element of the range (4 master, 8 Adam, 4
// gradients), plus the cast weights while the step sends them (bf16); per step the range's
// fp32 gradients to the host and its weights (e bytes) back.
void offload_terms(const Dims& d, Terms& t);

}  // namespace pb
