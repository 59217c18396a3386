/* Asynchronous pipelines: PipeDream's weight stashing (Narayanan et al., SOSP'19, arXiv
 * 1806.03377) and PipeDream-2BW's double-buffered weights (Narayanan et al., ICML'21, arXiv
 * 2006.09503), schedules pipedream and pipedream-2bw (pp_schedule.h: async_kind).
 *
 * Both run 1F1B's order. Each stage updates its own weights during the schedule, with no
 * flush between updates: after every g-th backward (g = update_every: 1 for PipeDream, the
 * micro-batches of one weight version for 2BW) the stage's gradients of those g micro-batches
 * (each loss scaled by 1/g) are averaged over DP and applied by AdamW, clipped by the stage's
 * own gradient norm (there is no global norm without a pipeline flush). A micro-batch's
 * forward runs on the stage's current version and its backward on the same one: with
 * w_s = min(p-s-1, m) warm-up forwards, micro-batch j's version on stage s is
 *     k_s(j) = floor(max(0, j - w_s) / g)          (updates of the stage before its F)
 * so the gradient applied by update u is that of the weights some updates back (PipeDream:
 * W(t+1) = W(t) - lr grad f(W_s(t - w_s)) per stage; 2BW with g >= p-1: W(t+1) = W(t) -
 * lr grad f(W(t-1)), one version of delay). Older versions still used by micro-batches in
 * flight are stashed copies of the stage's weights: up to p-s versions at once on stage s
 * for PipeDream, two for 2BW (pp_schedule.h: weight_versions).
 *
 * Here the pipeline drains at the end of every harness step (m micro-batches): each step
 * starts with all stages' weights current, as after PipeDream's periodic flush; within the
 * step the updates are asynchronous as above. The reference emulates exactly this
 * (reference/model/async_pipeline.h). The step reports the loss averaged over its m
 * micro-batches and, as its gradient norm, sqrt(sum over the step's updates and stages of
 * |g_{s,u}|^2).
 */
#pragma once

#include <functional>
#include <map>

#include "optimized/core/tensor.h"
#include "optimized/parallel/terms.h"
#include "optimized/train/pp_schedule.h"

namespace pb {

// One step's weight versions of this rank (made fresh each step: the pipeline drains).
class WeightVersions {
 public:
  // weights: the stage's weight buffer, updated in place by `update`; every: micro-batches per
  // update; zero_grads: clears the gradient buffer before a new update's micro-batches.
  WeightVersions(Tensor weights, int every, std::function<void()> update, std::function<void()> zero_grads);
  void forward(int mb);         // mb's forward runs on the current version
  void backward_begin(int mb);  // mb's version swapped in (a new update's first backward: gradients zeroed)
  void backward_end(int mb);    // the current version back; the update after every every-th backward
  int most_versions() const { return most_; }  // the current one and the stashed, at most at once
  int updates() const { return version_; }

 private:
  bool in_flight(int v) const;  // a micro-batch between F and B uses version v
  Tensor w_;
  int every_ = 1, backwards_ = 0, version_ = 0, most_ = 1;
  std::function<void()> update_, zero_grads_;
  std::map<int, int> version_of_;  // micro-batches between F and B -> their version
  std::map<int, Tensor> stash_;    // older versions still in use -> a copy of the weights (Params)
};

// The asynchronous kinds' terms for pipeline rank d.pp_rank: the stashed versions' weights
// (Params, e bytes per local parameter each); per update the stage's squared norm summed
// over TP (8 bytes); per step its sum over the stages (8 bytes over pp). The DP gradient
// all-reduce and SP's replicated sum run once per update (Dims::updates, in their own terms).
void async_terms(const pp::Schedule& s, const Dims& d, Terms& t);

}  // namespace pb
