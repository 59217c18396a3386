/* Data parallelism: after the last micro-batch's backward, the gradient buffer is
 * all-reduced over the DP group and divided by DP, so every replica steps with the mean
 * gradient (one collective over the contiguous buffer; bucketing and overlap come with
 * the overlap_grad_reduce feature). */
#pragma once

#include "optimized/comm/communicator.h"
#include "optimized/parallel/terms.h"

namespace pb {


// Over a step (DP > 1), in the optimizer phase: the gradient buffer's all-reduce, fp32
// P_local elements besides the experts' (ep_grads.h), and the loss average's all-reduce of one double.
// With the distributed optimizer (d.zero): a reduce-scatter of the padded fp32 buffer and an
// all-gather of the weights (e bytes each), and two doubles (its range's squared norm, the loss).
void dp_terms(const Dims& d, Terms& t);
// ZeRO-2/3, one unit (a parameter, or a layer's local experts of one projection) sharded
// over `group` of `size` ranks: its gradient reduce-scattered every micro-batch, its
// weights all-gathered at the step (ZeRO-2) or where used, forward and backward (ZeRO-3).
void zero_unit_terms(const Dims& d, const Dims::ZeroParam& p, const char* group, int64_t size, Terms& t);

}  // namespace pb
