/* Expert parallelism's gradient reduction (Megatron-LM's expert-data-parallel group):
 * expert e lives on one EP rank of every EP group and, since experts are not TP-sharded
 * (expert TP = 1), on every TP rank of it; each of those saw a different share of the
 * tokens routed to e. The full gradient is their sum, and the step's mean over the DP x CP
 * replicas divides by DP * CP like the dense gradients (not by the group's size):
 *
 *   g_e = (1 / (DP * CP)) * sum over expert_dp (TP * DP * CP / EP ranks) of g_e,rank
 *
 * The global gradient norm counts each expert once: its squares are summed over the EP
 * group (each EP rank holds other experts) and added on TP rank 0 only (dist_optimizer.h,
 * which runs the reduction).
 */
#pragma once

#include "optimized/comm/communicator.h"
#include "optimized/parallel/terms.h"

namespace pb {

// Over a step, in the optimizer phase: the expert block's all-reduce over expert_dp (fp32,
// d.params_expert elements), or under the distributed optimizer its bucket's reduce-scatter
// and all-gather there and its slices' squares (one double); the experts' squared-norm
// all-reduce over ep (one double).
void ep_grad_terms(const Dims& d, Terms& t);

}  // namespace pb
