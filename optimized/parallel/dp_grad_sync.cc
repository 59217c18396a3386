/* DP gradient all-reduce and averaging (see dp_grad_sync.h). */
#include "optimized/parallel/dp_grad_sync.h"


namespace pb {

void zero_unit_terms(const Dims& d, const Dims::ZeroParam& p, const char* group, int64_t size, Terms& t) {
  t.call(group, CommOp::ReduceScatter, Phase::Backward, d.mb, Dims::fp * p.padded, size);
  if (d.zero_stage == 3) {  // gathered where used, forward and backward (the embedding: forward)
    t.call(group, CommOp::AllGather, Phase::Forward, d.mb, d.e * p.padded, size);
    t.call(group, CommOp::AllGather, Phase::Backward, p.embedding ? 0 : d.mb, d.e * p.padded, size);
  } else {
    t.call(group, CommOp::AllGather, Phase::Optimizer, d.steps, d.e * p.padded, size);
  }
}

void dp_terms(const Dims& d, Terms& t) {  // under CP the group is DP x CP ("dp_cp"); 2.5D TP: x its depth
  const char* group = d.c > 1 || d.td > 1 ? "dp_cp" : "dp";
  if (!d.zero_params.empty()) {  // ZeRO-2/3: each parameter every micro-batch; all-gathered each step
    for (const auto& p : d.zero_params)  // (the experts over expert_dp: ep_grads.cc)
      if (!p.expert) zero_unit_terms(d, p, group, d.d * d.c * d.td, t);
    t.call(group, CommOp::AllReduce, Phase::Optimizer, 2 * d.steps, 8, d.d * d.c * d.td);  // norm and loss
    return;
  }
  if (d.zero) {  // the distributed optimizer: per bucket reduce-scatter and all-gather; the squared norm
    for (const int64_t b : d.zero_buckets) {
      t.call(group, CommOp::ReduceScatter, d.grad_phase(), d.steps, Dims::fp * b, d.d * d.c * d.td);
      t.call(group, CommOp::AllGather, Phase::Optimizer, d.steps, d.e * b, d.d * d.c * d.td);
    }
    t.call(group, CommOp::AllReduce, Phase::Optimizer, 2 * d.steps, 8, d.d * d.c * d.td);  // norm and loss
    return;
  }
  const int64_t updates = d.steps * d.updates;  // the asynchronous pipelines: every update
  if (d.dp_buckets.empty())
    t.call(group, CommOp::AllReduce, Phase::Optimizer, updates, Dims::fp * (d.params_local - d.params_expert), d.d * d.c * d.td);
  for (const int64_t b : d.dp_buckets)  // bucket by bucket, at the step or in the backward
    t.call(group, CommOp::AllReduce, d.grad_phase(), updates, Dims::fp * b, d.d * d.c * d.td);
  t.call(group, CommOp::AllReduce, Phase::Optimizer, d.steps, 8, d.d * d.c * d.td);
}

}  // namespace pb
