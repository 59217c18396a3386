/* Megatron tensor-parallel linears (Shoeybi et al., arXiv 1909.08053), with the sequence-
 * parallel variant (Korthikanti et al., arXiv 2205.05198).
 *
 * Column-parallel (W rows split: this rank holds W_i (out/TP, in)); several weights may
 * share one input (q, k, v; gate, up), as Megatron's fused QKV / gate-up do:
 *   forward : x_full = TP ? x : AG_tp(x) [SP]          (N, in)
 *             y_i    = x_full W_i^T                      (N, out_i/TP)
 *   backward: dx_full = sum_i dy_i W_i                   (N, in)
 *             dW_i  += dy_i^T x_full   (SP: x_full re-gathered from the saved shard)
 *             dx     = AR_tp(dx_full)  |  RS_tp(dx_full) [SP]   (N or N/TP, in)
 * Row-parallel (W columns split: W (out, in/TP)):
 *   forward : y = AR_tp(x W^T)  |  RS_tp(x W^T) [SP]       (N or N/TP, out)
 *   backward: dy_full = dy  |  AG_tp(dy) [SP];  dx = dy_full W;  dW += dy_full^T x
 * Per layer (QKV + o, gate/up + down): TP: 2 all-reduces of N*H forward, 2 backward.
 * SP: 2 all-gathers + 2 reduce-scatters forward; 4 all-gathers + 2 reduce-scatters
 * backward (the 2 extra all-gathers re-gather the column inputs for dW).
 */
#pragma once

#include <vector>

#include "optimized/comm/communicator.h"

namespace pb {

// Zero-bubble's split backward (Qi et al., arXiv 2401.10241): while a queue is set, the
// linears' weight gradients dW += dy^T x are not computed in the backward (B) but queued,
// with dy and x (the gathered x_full under SP) kept alive, for a later W pass. The
// communication is unchanged: SP's re-gather of x still happens in B.
struct DeferredWGrad {
  Tensor* dw;
  Tensor dy, x;
};
using WGradQueue = std::vector<DeferredWGrad>;
void run_wgrads(WGradQueue& q);  // computes and empties the queue, in queue order

struct TpContext {
  Communicator& tp;
  bool sp;  // sequence parallel: activations outside TP regions are N/TP row shards
  WGradQueue* defer = nullptr;  // set: weight gradients are queued (split backward)
};

void column_forward(const std::vector<Tensor*>& ys, const Tensor& x, const std::vector<const Tensor*>& ws,
                    TpContext& ctx);
void column_backward(Tensor& dx, const std::vector<Tensor*>& dws, const std::vector<const Tensor*>& dys,
                     const Tensor& x, const std::vector<const Tensor*>& ws, TpContext& ctx);
void row_forward(Tensor& y, const Tensor& x, const Tensor& w, TpContext& ctx);
void row_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w, TpContext& ctx);

// The SP regions: gather the N/TP row shards into (N, ...), and reduce-scatter back.
Tensor sp_gather(const Tensor& shard, TpContext& ctx);  // identity (a view) without SP
void sp_reduce(Tensor& out, Tensor& partial, TpContext& ctx);  // AR (in place, out = partial) or RS

}  // namespace pb
