/* The reference training loop: m micro-batches of B sequences per step, gradients of the
 * mean loss accumulated over them (grad_scale 1/m), then one AdamW step.
 *
 * Step n (0-based) trains on global batch n (sequences n*m*B .. (n+1)*m*B-1; batch 0
 * every step with fixed_batch); micro-batch j holds the j-th B of them. Every micro-batch
 * routes its MoE tokens with the same groups, tc.moe_token_groups (the expert capacity).
 */
#pragma once

#include <chrono>
#include <limits>
#include <utility>

#include "reference/model/adamw.h"
#include "reference/model/init.h"
#include "reference/model/transformer.h"

namespace pb::ref {

struct StepRecord {
  int64_t step = 0;     // 1-based
  double loss = 0;      // mean over micro-batches of (ce + aux)
  double ce = 0, aux = 0;
  double grad_norm = 0; // before clipping
  double ms = 0;        // wall time of forward + backward + optimizer
};

// The batch of micro-batch j of step n (both 0-based).
inline Batch train_batch(const ModelConfig& mc, const TrainConfig& tc, int64_t n, int64_t j) {
  const int64_t batch = tc.fixed_batch ? 0 : n;
  return make_batch(tc.seed, batch * tc.global_batch() + j * tc.micro_batch_size, tc.micro_batch_size,
                    tc.seq_length, mc.vocab_size);
}

template <class T>
class Trainer {
 public:
  Trainer(ModelConfig mc, TrainConfig tc, ModelParams<T> initial)
      : mc_(std::move(mc)), tc_(std::move(tc)), params_(std::move(initial)), adam_(adam_init<T>(mc_)) {}

  StepRecord step() {
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t n = steps_++, m = tc_.num_micro_batches;
    grads_ = zero_params<T>(mc_);
    StepRecord rec;
    rec.step = n + 1;
    for (int64_t j = 0; j < m; ++j) {
      const auto l = model_forward_backward(grads_, params_, mc_, train_batch(mc_, tc_, n, j), tc_.micro_batch_size,
                                            tc_.seq_length, T(1) / T(m), tc_.moe_token_groups);
      rec.loss += double(l.total) / double(m);
      rec.ce += double(l.ce) / double(m);
      rec.aux += double(l.aux) / double(m);
    }
    if (n == tc_.inject_nan_step) grads_.embed(0, 0) = std::numeric_limits<T>::quiet_NaN();
    rec.grad_norm = adamw_step(params_, grads_, adam_, tc_);
    rec.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    return rec;
  }

  const ModelParams<T>& params() const { return params_; }
  const ModelParams<T>& last_grads() const { return grads_; }  // raw (unclipped) grads of the last step
  const ModelConfig& model_config() const { return mc_; }
  const TrainConfig& train_config() const { return tc_; }

 private:
  ModelConfig mc_;
  TrainConfig tc_;
  ModelParams<T> params_, grads_;
  AdamState<T> adam_;
  int64_t steps_ = 0;  // steps run (a skipped step counts here, not in adam_.t)
};

}  // namespace pb::ref
