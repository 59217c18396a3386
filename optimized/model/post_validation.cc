/* Post-validation of the optimizer step (see post_validation.h): the DistOptimizer's
 * post-validated step, its copy and rollback, and the terms. */
#include "optimized/model/post_validation.h"

#include <cmath>

#include "optimized/kernels/ops.h"
#include "optimized/model/dist_optimizer.h"
#include "reference/common/error.h"

namespace pb {

namespace {
constexpr int kTag = 32767;  // above every pipeline tag (pp_executor.cc)
}  // namespace

void DistOptimizer::keep_state() {
  DistParams& P = model_.params();
  Tensor* from[3] = {&P.master_buffer(), &P.adam_m_buffer(), &P.adam_v_buffer()};
  for (int k = 0; k < 3; ++k) ops::copy(kept_[k], *from[k]);
}

void DistOptimizer::restore_state() {
  DistParams& P = model_.params();
  Tensor* to[3] = {&P.master_buffer(), &P.adam_m_buffer(), &P.adam_v_buffer()};
  for (int k = 0; k < 3; ++k) ops::copy(*to[k], kept_[k]);
  t_ -= 1;
}

double DistOptimizer::step_post_validated(double sq_here) {
  DistParams& P = model_.params();
  Communicator& pp = grid_.pp();
  for (Tensor& k : kept_)  // resident from the first step, used or not
    if (!k.defined()) k = Tensor::empty({P.master_buffer().numel()}, MemCategory::Optimizer, DType::F32);
  const int r = pp.rank(), p = pp.size();
  // 1. The stage's state, and the partial sums down the pipeline.
  const double stage = grid_.tp().all_reduce_scalar(sq_here);
  const double partial = (r > 0 ? pp.recv_scalar(r - 1, kTag) : 0.0) + stage;
  if (r + 1 < p) pp.send_scalar(partial, r + 1, kTag);
  // 2. The eager step: only where the partial state already allows it unclipped.
  const double partial_norm = std::sqrt(partial);
  const bool eager = std::isfinite(partial_norm) && clip_coefficient(partial_norm) == 1.0f;
  const int64_t n = P.weight_buffer().numel();
  if (eager) {
    keep_state();
    adamw(0, n, 0, hyper(partial_norm));
  }
  // 3. The full state, back up the pipeline.
  const double full = r + 1 < p ? pp.recv_scalar(r + 1, kTag) : partial;
  if (r > 0) pp.send_scalar(full, r - 1, kTag);
  // 4. Validation.
  const double norm = std::sqrt(full);
  log_.steps += 1;
  log_.eager += eager;
  if (!std::isfinite(norm)) {
    if (eager) restore_state(), log_.rolled_back += 1;
    log_.skipped += 1;
  } else if (clip_coefficient(norm) < 1.0f) {
    if (eager) restore_state(), log_.rolled_back += 1;
    adamw(0, n, 0, hyper(norm));
    log_.redone += 1;
  } else {
    PB_REQUIRE(eager, "post-validation: stage ", r, " skipped a step its full state allows (partial ", partial,
               " > full ", full, ")");
    log_.kept += 1;
  }
  if (eager || std::isfinite(norm)) P.master_to_weights();  // the weights as the master now is
  return norm;
}

void post_validation_terms(const Dims& d, Terms& t) {
  t.call("tp", CommOp::AllReduce, Phase::Optimizer, d.steps, 8, d.t);
  const int64_t up = d.pp_rank > 0, down = d.pp_rank + 1 < d.p;
  t.call("pp", CommOp::Recv, Phase::Optimizer, d.steps * (up + down), 8, d.p);
  t.call("pp", CommOp::Send, Phase::Optimizer, d.steps * (up + down), 8, d.p);
  t.memory[MemCategory::Optimizer] += 3 * Dims::fp * d.params_local;  // the copy: master (weights), m, v
}

}  // namespace pb
