/* The all-to-all token dispatcher (Megatron-LM's MoEAlltoAllTokenDispatcher; GShard, arXiv
 * 2006.16668; FEATURES.md "EP, all-to-all dispatcher"), over the EP group of n ranks,
 * E/n experts each (rank j holds experts j*E/n ..):
 *
 *   forward:  permute the kept copies into expert order       xs (S, H), ps (S, 1)
 *             all-to-all the counts per expert                 (n, E/n) fp32 -> recv counts
 *             all-to-all-v tokens and their weights            xr (R, H), pr (R, 1) by (source, expert)
 *             local sort by expert                             x (R, H), p (R, 1)
 *             ... experts ...  unsort, all-to-all-v back       ys (S, H)
 *             unpermute: f_t = sum over kept copies of its row (T, H)
 *   backward: the reverse: permute df, all-to-all-v, sort (dy); unsort dx and dp,
 *             all-to-all-v back, unpermute into dm (T, H) and dw (T, K)
 * S = kept copies of this rank's tokens, R = rows its experts get (sum of the receive counts).
 * Bytes per micro-batch and MoE layer (payload = the send buffer, e bytes per element):
 *   forward  all_to_all 4E; all_to_all_v e S H, 4 S, and e R H
 *   backward all_to_all_v e S H, e R H, and 4 R
 * in the ep group, from the counts of the run (moe_routing.h: sent, recv).
 */
#pragma once

#include "optimized/parallel/ep_dispatcher.h"

namespace pb {

class AllToAllDispatcher final : public TokenDispatcher {
 public:
  explicit AllToAllDispatcher(Communicator& ep) : ep_(ep) {}
  std::unique_ptr<State> dispatch(Tensor& x, Tensor& p, std::vector<int64_t>& sizes, const Tensor& m,
                                  const Tensor& w, const RoutingPlan& plan, RoutingRecord& rec) override;
  void combine(Tensor& f, const Tensor& y, State& s) override;
  void combine_backward(Tensor& dy, const Tensor& df, State& s) override;
  void dispatch_backward(Tensor& dm, Tensor& dw, const Tensor& dx, const Tensor& dp, State& s) override;

 private:
  Communicator& ep_;
};

// Every record's all-to-all bytes (d.e, d.H, d.E; group size d.ep).
void ep_alltoall_terms(const Dims& d, const std::vector<RoutingRecord>& records, Terms& t);
// Its transfer buffers at their peak (CommBuffers) for S copies sent and R rows received:
// forward the counts 8E, xs eSH, ps 4S, xr eRH, pr 4R; backward dxs, dps, dxr, dpr (the
// same sizes), more than the combine's eRH + eSH either way.
BlockWorkspace ep_alltoall_comm_buffers(const Dims& d, int64_t S, int64_t R);

}  // namespace pb
