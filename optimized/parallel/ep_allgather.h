/* The all-gather token dispatcher (Megatron-LM's MoEAllGatherTokenDispatcher; FEATURES.md
 * "EP, all-gather dispatcher"), over the EP group of n ranks (Megatron's expert-TP x EP
 * group: expert TP is 1), T tokens each:
 *
 *   forward:  all-gather the routing map (T, K) (expert of each copy, -1 when dropped,
 *             fp32), the weights (T, K) fp32 and the hidden states (T, H): (nT, .)
 *             local selection of the copies of this rank's experts, by expert, then
 *             gathered row, then k                         x (R, H), p (R, 1)
 *             ... experts ...  sum each gathered row's local copies  (nT, H)
 *             reduce-scatter back                          f (T, H)
 *   backward: all-gather df (nT, H), select dy (R, H); sum dx and dp per gathered row and
 *             copy, reduce-scatter back into dm (T, H) and dw (T, K)
 * Bytes per micro-batch and MoE layer (payload: all-gather the gathered output,
 * reduce-scatter the full input; e bytes per element), independent of the routing:
 *   forward  all_gather 4nTK, 4nTK, e nTH; reduce_scatter e nTH
 *   backward all_gather e nTH; reduce_scatter e nTH, 4nTK
 */
#pragma once

#include "optimized/parallel/ep_dispatcher.h"

namespace pb {

class AllGatherDispatcher final : public TokenDispatcher {
 public:
  explicit AllGatherDispatcher(Communicator& ep) : ep_(ep) {}
  std::unique_ptr<State> dispatch(Tensor& x, Tensor& p, std::vector<int64_t>& sizes, const Tensor& m,
                                  const Tensor& w, const RoutingPlan& plan, RoutingRecord& rec) override;
  void combine(Tensor& f, const Tensor& y, State& s) override;
  void combine_backward(Tensor& dy, const Tensor& df, State& s) override;
  void dispatch_backward(Tensor& dm, Tensor& dw, const Tensor& dx, const Tensor& dp, State& s) override;

 private:
  Communicator& ep_;
};

void ep_allgather_terms(const Dims& d, const std::vector<RoutingRecord>& records, Terms& t);
// Its buffers at their peak (CommBuffers), n = EP, T = N_s: forward the local map 4TK and
// the gathered map, weights and hidden states 8nTK + e nTH; backward the larger of the
// gathered gradient e nTH (df, then dm) and the weights' 4nTK.
BlockWorkspace ep_allgather_comm_buffers(const Dims& d);

}  // namespace pb
