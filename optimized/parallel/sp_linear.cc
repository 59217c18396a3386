/* The sequence-parallel TP-linear strategy (see sp_linear.h). */
#include "optimized/parallel/sp_linear.h"

namespace pb {

Tensor TpSequenceParallel::gather(const Tensor& shard) { return all_gathered(tp_, shard); }

void TpSequenceParallel::reduce(Tensor& out, Tensor& partial) { tp_.reduce_scatter(out, partial); }

void sp_terms(const Dims& d, Terms& t, int64_t chunks) {
  const int64_t NH = d.e * d.N * d.H, k = chunks;
  const int64_t blocks = 2 * d.Lr - d.Lmoe;  // TP-linear blocks: attention, and the dense MLPs
  t.call("tp", CommOp::ReduceScatter, Phase::Forward, d.mb * d.emb, NH, d.t);  // the embedding
  t.call("tp", CommOp::ReduceScatter, Phase::Forward, d.mb * blocks * k, NH / k, d.t);
  t.call("tp", CommOp::AllGather, Phase::Forward, d.mb * (blocks + d.head) * k, NH / k, d.t);
  t.call("tp", CommOp::ReduceScatter, Phase::Backward, d.mb * (blocks + d.head), NH, d.t);
  t.call("tp", CommOp::AllGather, Phase::Backward, d.mb * (blocks + d.head + d.emb), NH, d.t);  // column re-gathers
  t.call("tp", CommOp::AllGather, Phase::Backward, d.mb * blocks * k, NH / k, d.t);  // row linears
  // The replicated gradients: norm weights, and the MoE routers (E, H); under ZeRO-2 each
  // norm weight's and router's every micro-batch, before its reduce-scatter.
  if (!d.zero_params.empty()) {
    t.call("tp", CommOp::AllReduce, Phase::Backward, d.mb * (2 * d.Lr + d.head), Dims::fp * d.H, d.t);
    t.call("tp", CommOp::AllReduce, Phase::Backward, d.mb * d.Lmoe, Dims::fp * d.E * d.H, d.t);  // the routers
    return;
  }
  t.call("tp", CommOp::AllReduce, d.grad_phase(), d.steps * d.updates, Dims::fp * ((2 * d.Lr + d.head) * d.H + d.Lmoe * d.E * d.H),
         d.t);
}

}  // namespace pb
