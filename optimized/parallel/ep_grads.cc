/* Expert gradient reduction (see ep_grads.h). */
#include "optimized/parallel/ep_grads.h"

#include "optimized/parallel/dp_grad_sync.h"

namespace pb {

void ep_grad_terms(const Dims& d, Terms& t) {
  if (d.params_expert == 0) return;
  const int64_t edp = d.t * d.d * d.c / d.ep;
  if (!d.zero_params.empty()) {  // ZeRO-2/3: each local expert group like a parameter, over expert_dp
    for (const auto& p : d.zero_params)
      if (p.expert) zero_unit_terms(d, p, "expert_dp", edp, t);
    t.call("expert_dp", CommOp::AllReduce, Phase::Optimizer, d.steps, 8, edp);  // the slices' squares
  } else if (d.zero) {  // the distributed optimizer: the experts' bucket reduce-scattered and gathered over expert_dp
    for (const int64_t b : d.zero_expert_buckets) {
      t.call("expert_dp", CommOp::ReduceScatter, d.grad_phase(), d.steps, Dims::fp * b, edp);
      t.call("expert_dp", CommOp::AllGather, Phase::Optimizer, d.steps, d.e * b, edp);
    }
    t.call("expert_dp", CommOp::AllReduce, Phase::Optimizer, d.steps, 8, edp);  // the slices' squares
  } else {
    t.call("expert_dp", CommOp::AllReduce, d.grad_phase(), d.steps, Dims::fp * d.params_expert, edp);
  }
  t.call("ep", CommOp::AllReduce, Phase::Optimizer, d.steps, 8, d.ep);
}

}  // namespace pb
