/* The MoE token dispatcher seam (Megatron-LM's MoETokenDispatcher): how the copies of this
 * rank's tokens reach the experts that serve them and how the expert outputs come back.
 * One interface, two strategies: all-to-all (ep_alltoall.h) and all-gather
 * (ep_allgather.h), both over the EP group (expert TP = 1, so Megatron's TP x EP group of
 * the all-gather dispatcher is the EP group).
 *
 *   dispatch           m (T, H), w (T, K) fp32, plan  ->  x (R, H) the rows of this rank's
 *                      E/EP experts sorted by expert, p (R, 1) fp32 their combine weights,
 *                      sizes (E/EP) rows per local expert
 *   combine            y (R, H) = p * Expert(x) per row  ->  f (T, H) = sum over kept copies
 *   combine_backward   df (T, H)  ->  dy (R, H) (each row the gradient of its token)
 *   dispatch_backward  dx (R, H), dp (R, 1)  ->  dm (T, H) summed over copies, dw (T, K)
 *                      (0 for dropped copies)
 * Transfer buffers are CommBuffers; x and p are saved (Activations); f, dy, dm, dw are the
 * caller's (Workspace).
 */
#pragma once

#include <memory>
#include <vector>

#include "optimized/comm/communicator.h"
#include "optimized/parallel/moe_routing.h"
#include "optimized/parallel/terms.h"

namespace pb {

class TokenDispatcher {
 public:
  struct State {  // what combine and the backward need, per micro-batch
    virtual ~State() = default;
  };
  virtual ~TokenDispatcher() = default;
  // Fills rec.recv (rows per source EP rank and local expert).
  virtual std::unique_ptr<State> dispatch(Tensor& x, Tensor& p, std::vector<int64_t>& sizes, const Tensor& m,
                                          const Tensor& w, const RoutingPlan& plan, RoutingRecord& rec) = 0;
  virtual void combine(Tensor& f, const Tensor& y, State& s) = 0;
  virtual void combine_backward(Tensor& dy, const Tensor& df, State& s) = 0;
  virtual void dispatch_backward(Tensor& dm, Tensor& dw, const Tensor& dx, const Tensor& dp, State& s) = 0;
};

}  // namespace pb

namespace pb {

// Host <-> tensor helpers of the dispatchers (fp32 values; counts are exact below 2^24),
// and a (rows, cols) transfer buffer.
std::vector<float> host_floats(const Tensor& t);
Tensor tensor_of(const std::vector<float>& v, std::vector<int64_t> shape, MemCategory cat);
Tensor comm_buffer(int64_t rows, int64_t cols, DType dt);

}  // namespace pb
