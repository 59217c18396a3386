/* The asynchronous pipelines, emulated in one process: PipeDream's weight stashing
 * (Narayanan et al., "PipeDream: Generalized Pipeline Parallelism for DNN Training",
 * SOSP'19, arXiv 1806.03377) and PipeDream-2BW's double-buffered weights (Narayanan et al.,
 * "Memory-Efficient Pipeline-Parallel DNN Training", ICML'21, arXiv 2006.09503). This is
 * the reference of the distributed schedules pipedream and pipedream-2bw
 * (optimized/train/pp_async.h).
 *
 * p stages: stage s holds decoder layers [bounds[s], bounds[s+1]), plus the embedding on
 * stage 0 and the final norm and LM head on stage p-1. A step runs m micro-batches on each
 * of dp data-parallel replicas; micro-batch j (0-based) of replica d is the step's global
 * micro-batch d*m + j (train_batch of train.h, TrainConfig::num_micro_batches = m*dp).
 * Every stage keeps its own weights and its own AdamW state (moments and step count t),
 * and updates them every g = update_every micro-batches (PipeDream: g = 1; 2BW: g >= 1,
 * the paper's g >= p-1 for two versions), m/g updates per step:
 *
 *   G_{s,u}    = (1/dp) sum_d sum_{j = u*g}^{(u+1)*g-1} grad_s loss_{d,j} / g
 *                (model_forward_backward with grad_scale 1/(g*dp): the same sum)
 *   norm_{s,u} = sqrt(sum of G_{s,u}^2 over stage s's elements)      (double, each tensor once)
 *   update u of stage s: adamw_step (adamw.h) on stage s's parameters alone, clipped by
 *                min(1, clip / (norm_{s,u} + 1e-6)) when clip > 0; a non-finite norm skips
 *                it (the stage's t is not counted; its weights stay, its version still counts)
 *
 * Weight stashing: micro-batch j's forward and backward on stage s use version k_s(j) of
 * the stage's weights (version 0: the weights at the start of the step, version k: after
 * the stage's k-th update of the step), the version that 1F1B's order has made when j's
 * forward runs:
 *
 *   w_s    = min(p - s - 1, m)                       1F1B's warm-up forwards on stage s
 *   k_s(j) = floor(max(0, j - w_s) / g)              async_version
 *
 * So micro-batch j's gradient is the exact gradient of the mixed model whose stage-s
 * parameters are version k_s(j) of stage s, for every s (the same on every replica).
 * PipeDream's update is W_s(t+1) = W_s(t) - lr * grad f(W_0(t - w_0), ..., W_{p-1}(t - w_{p-1}))
 * in steady state; 2BW with g >= p-1 uses the previous version or the current one.
 * Since k_s(j)*g <= j, running the micro-batches in order j = 0..m-1 and applying update u
 * of every stage as soon as micro-batches [u*g, (u+1)*g) are done gives every version
 * before it is needed; this emulation keeps every version of the step (memory is no
 * concern here), a real pipeline only the stashed ones (async_stashed_versions).
 *
 * The pipeline drains at the end of every step (as after PipeDream's periodic flush): each
 * step starts with every stage's weights current. Versions and updates count from 0 again.
 *
 * Step record: loss, ce, aux: the mean over the dp*m micro-batches of their unscaled
 * losses (as Trainer); grad_norm = sqrt(sum over u and s of norm_{s,u}^2) (there is no
 * global norm without a flush).
 *
 * With one stage and g = m this is Trainer bit for bit; with g = m (one update per step,
 * every micro-batch on version 0) and clip_grad = 0 it is Trainer bit for bit for any p
 * (per-stage AdamW without clipping is element-wise the global one).
 *
 * TrainConfig::inject_nan_step is ignored here (the distributed asynchronous schedules
 * refuse it). MoE models work as in Trainer (tc.moe_token_groups routes every micro-batch).
 */
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "reference/common/error.h"
#include "reference/model/adamw.h"
#include "reference/model/train.h"
#include "reference/model/transformer.h"

namespace pb::ref {

struct AsyncPipelineConfig {
  std::vector<int64_t> bounds;  // p+1 layer bounds: stage s holds layers [bounds[s], bounds[s+1])
  int64_t update_every = 1;     // g: micro-batches per weight update (PipeDream 1; 2BW >= 1)
  int64_t dp = 1;               // data-parallel replicas (TrainConfig::num_micro_batches = m*dp)
};

// w_s: the forwards stage s runs in 1F1B's warm-up, before its first backward.
inline int64_t async_warmup(int64_t p, int64_t s, int64_t m) { return std::min(p - s - 1, m); }

inline void async_check(int64_t p, int64_t s, int64_t m, int64_t g) {
  PB_REQUIRE(p >= 1, "async pipeline: p (stages) must be >= 1, got ", p);
  PB_REQUIRE(s >= 0 && s < p, "async pipeline: stage ", s, " is not in 0..", p - 1);
  PB_REQUIRE(m >= 1, "async pipeline: m (micro-batches) must be >= 1, got ", m);
  PB_REQUIRE(g >= 1 && m % g == 0, "async pipeline: update_every ", g, " must be >= 1 and divide m = ", m);
}

// k_s(j): the version of stage s's weights that micro-batch j (0-based) uses in a step of m
// micro-batches with an update every g: the stage's updates before j's forward in 1F1B.
inline int64_t async_version(int64_t p, int64_t s, int64_t m, int64_t g, int64_t j) {
  async_check(p, s, m, g);
  PB_REQUIRE(j >= 0 && j < m, "async pipeline: micro-batch ", j, " is not in 0..", m - 1);
  return std::max<int64_t>(0, j - async_warmup(p, s, m)) / g;
}

// The most weight versions stage s stashes at once: versions older than its current one
// that a micro-batch between its forward and its backward still uses. Walked through
// stage s's 1F1B order (F(0..w_s-1); F(w_s+i), B(i) for i = 0..m-w_s-1; B(m-w_s..m-1)),
// with an update right after B(j) when (j+1) % g == 0. The stage holds this many + 1.
//
// Closed form (checked by the walk for p <= 8, m <= 24, every g dividing m; the unit test
// asserts it), with w' = min(p-s-1, m-1):
//   stashed = 0 if g == m, else min(ceil(w'/g), ceil((m-w')/g))
// PipeDream (g = 1): min(w', m-w'); so p-s-1 stashed (p-s versions, the paper's "up to
//   p-s") once m >= 2(p-s-1), fewer on a short step (p = 8, m = 8: 1, 2, 3, 4, 3, 2, 1, 0
//   on stages 0..7: stage 0 drains its warm-up before it could stash more).
// 2BW with g >= p-1 and m > g: at most 1 stashed (2 versions: the paper's double buffer);
//   with g < p-1 more: p = 4, s = 0, g = 2, m >= 6: 2 stashed (3 versions).
// Once m >= 2(p-s-1) and m > g (long enough steps): ceil((p-s-1)/g).
inline int64_t async_stashed_versions(int64_t p, int64_t s, int64_t m, int64_t g) {
  async_check(p, s, m, g);
  const int64_t w = async_warmup(p, s, m);
  std::vector<std::pair<bool, int64_t>> order;  // (forward?, micro-batch)
  for (int64_t j = 0; j < w; ++j) order.push_back({true, j});
  for (int64_t i = 0; i < m - w; ++i) {
    order.push_back({true, w + i});
    order.push_back({false, i});
  }
  for (int64_t j = m - w; j < m; ++j) order.push_back({false, j});
  std::map<int64_t, int64_t> version_of;  // micro-batches in flight (F done, B not) -> their version
  int64_t current = 0, most = 0;
  for (const auto& [forward, j] : order) {
    if (forward) {
      // The forward runs on the current version: this is what async_version states.
      PB_REQUIRE(current == async_version(p, s, m, g, j), "async pipeline: the 1F1B walk gives micro-batch ", j,
                 " version ", current, ", async_version ", async_version(p, s, m, g, j));
      version_of[j] = current;
    } else {
      version_of.erase(j);
      if ((j + 1) % g == 0) ++current;  // the stage's update after this backward
    }
    std::set<int64_t> stashed;
    for (const auto& [mb, v] : version_of)
      if (v != current) stashed.insert(v);
    most = std::max(most, int64_t(stashed.size()));
  }
  return most;
}

// Stage s's part of a model (weights, gradients or Adam moments): a ModelParams holding the
// stage's layers only, with the embedding if s = 0 and the final norm and LM head if
// s = p-1; the tensors the stage does not own stay empty (0 x 0). for_each_param,
// global_grad_norm and adamw_step (adamw.h) on it therefore see exactly the stage's
// parameters, in the model's order: adamw_step on a stage part is the per-stage AdamW.
template <class T>
ModelParams<T> stage_part(const ModelParams<T>& whole, const std::vector<int64_t>& bounds, int64_t s) {
  const int64_t p = int64_t(bounds.size()) - 1;
  ModelParams<T> part;
  if (s == 0) part.embed = whole.embed;
  part.layers.assign(whole.layers.begin() + bounds[size_t(s)], whole.layers.begin() + bounds[size_t(s) + 1]);
  if (s == p - 1) {
    part.final_norm = whole.final_norm;
    part.lm_head = whole.lm_head;
  }
  return part;
}

// The whole model from the parts of stages 0..p-1 (stage_part's inverse).
template <class T>
ModelParams<T> join_stage_parts(const std::vector<const ModelParams<T>*>& parts) {
  ModelParams<T> whole;
  whole.embed = parts.front()->embed;
  for (const ModelParams<T>* part : parts)
    whole.layers.insert(whole.layers.end(), part->layers.begin(), part->layers.end());
  whole.final_norm = parts.back()->final_norm;
  whole.lm_head = parts.back()->lm_head;
  return whole;
}

template <class T>
class AsyncPipelineTrainer {
 public:
  // tc.num_micro_batches: m*dp, the micro-batches of all replicas together.
  AsyncPipelineTrainer(ModelConfig mc, TrainConfig tc, ModelParams<T> initial, AsyncPipelineConfig cfg)
      : mc_(std::move(mc)), tc_(std::move(tc)), cfg_(std::move(cfg)), params_(std::move(initial)) {
    const auto& b = cfg_.bounds;
    const int64_t L = mc_.num_hidden_layers;
    PB_REQUIRE(b.size() >= 2, "async pipeline: bounds needs p+1 >= 2 entries (stage s holds layers "
               "[bounds[s], bounds[s+1])), got ", b.size());
    PB_REQUIRE(b.front() == 0 && b.back() == L, "async pipeline: bounds must run from 0 to the ", L,
               " layers, got ", b.front(), " .. ", b.back());
    for (size_t s = 0; s + 1 < b.size(); ++s)
      PB_REQUIRE(b[s + 1] > b[s], "async pipeline: stage ", s, " holds no layer (bounds ", b[s], ", ", b[s + 1], ")");
    PB_REQUIRE(int64_t(params_.layers.size()) == L, "async pipeline: the initial parameters have ",
               params_.layers.size(), " layers, the config ", L);
    PB_REQUIRE(cfg_.dp >= 1, "async pipeline: dp must be >= 1, got ", cfg_.dp);
    PB_REQUIRE(tc_.num_micro_batches >= 1 && tc_.num_micro_batches % cfg_.dp == 0, "async pipeline: num_micro_batches ",
               tc_.num_micro_batches, " must be a positive multiple of dp = ", cfg_.dp, " (m per replica)");
    m_ = tc_.num_micro_batches / cfg_.dp;
    PB_REQUIRE(cfg_.update_every >= 1 && m_ % cfg_.update_every == 0, "async pipeline: update_every ",
               cfg_.update_every, " must be >= 1 and divide the m = ", m_, " micro-batches of a replica");
    p_ = int64_t(b.size()) - 1;
    const ModelParams<T> zero = zero_params<T>(mc_);
    for (int64_t s = 0; s < p_; ++s) adam_.push_back(AdamState<T>{stage_part(zero, b, s), stage_part(zero, b, s), 0});
    grads_ = zero;
  }

  StepRecord step() {
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t n = steps_++, g = cfg_.update_every, dp = cfg_.dp, M = tc_.num_micro_batches;
    // versions[s][k]: stage s's weights after k of its updates in this step.
    std::vector<std::vector<ModelParams<T>>> versions(static_cast<size_t>(p_));
    for (int64_t s = 0; s < p_; ++s) versions[size_t(s)].push_back(stage_part(params_, cfg_.bounds, s));
    std::vector<Loss<T>> losses(static_cast<size_t>(M));  // of global micro-batch d*m + j
    double sq = 0;                           // sum over u, s of norm_{s,u}^2
    for (int64_t u = 0; u < m_ / g; ++u) {
      // G_{s,u} of every stage at once: update u of every stage sums the same micro-batches.
      ModelParams<T> grads = zero_params<T>(mc_);
      for (int64_t d = 0; d < dp; ++d)
        for (int64_t j = u * g; j < (u + 1) * g; ++j) {
          std::vector<const ModelParams<T>*> used(static_cast<size_t>(p_));  // the stashed version of each stage
          for (int64_t s = 0; s < p_; ++s)
            used[size_t(s)] = &versions[size_t(s)][size_t(async_version(p_, s, m_, g, j))];
          losses[size_t(d * m_ + j)] =
              model_forward_backward(grads, join_stage_parts(used), mc_, train_batch(mc_, tc_, n, d * m_ + j),
                                     tc_.micro_batch_size, tc_.seq_length, T(1) / T(g * dp), tc_.moe_token_groups);
        }
      for (int64_t s = 0; s < p_; ++s) {  // update u of each stage: its own AdamW, its own clip
        ModelParams<T> w = versions[size_t(s)].back();
        const double norm = adamw_step(w, stage_part(grads, cfg_.bounds, s), adam_[size_t(s)], tc_);
        sq += norm * norm;
        versions[size_t(s)].push_back(std::move(w));
      }
      if (u == m_ / g - 1) grads_ = std::move(grads);
    }
    std::vector<const ModelParams<T>*> latest;
    for (const auto& v : versions) latest.push_back(&v.back());
    params_ = join_stage_parts(latest);
    StepRecord rec;
    rec.step = n + 1;
    for (const Loss<T>& l : losses) {  // in global micro-batch order, as Trainer
      rec.loss += double(l.total) / double(M);
      rec.ce += double(l.ce) / double(M);
      rec.aux += double(l.aux) / double(M);
    }
    rec.grad_norm = std::sqrt(sq);
    rec.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    return rec;
  }

  const ModelParams<T>& params() const { return params_; }    // every stage's current weights
  // Every stage's G_{s,u} of its last update (u = m/g-1) of the last step, raw (unclipped).
  const ModelParams<T>& last_grads() const { return grads_; }
  const ModelConfig& model_config() const { return mc_; }
  const TrainConfig& train_config() const { return tc_; }
  int64_t stages() const { return p_; }
  int64_t micro_batches_per_replica() const { return m_; }

 private:
  ModelConfig mc_;
  TrainConfig tc_;
  AsyncPipelineConfig cfg_;
  int64_t p_ = 1, m_ = 1;
  ModelParams<T> params_, grads_;    // whole-model shaped
  std::vector<AdamState<T>> adam_;   // per stage, stage_part-shaped (t counted per stage)
  int64_t steps_ = 0;
};

}  // namespace pb::ref
