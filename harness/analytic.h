/* The analytic model: what a case should cost, from its config alone (no run).
 *
 * Parameters and FLOPs: reference/model/flops.h. Per rank (all ranks of a DP x TP
 * layout hold the same amount), fp32 (4 bytes):
 *   P_local = (2L+1) H  +  [2VH + L (2H^2 + 2HGD + 3HF)] / TP      (norms replicated)
 *   params = 4 P_local, grads = 4 P_local, optimizer (Adam m, v) = 8 P_local
 *   activations (saved for backward, one micro-batch, N = B S, N_s = N/TP with SP else N,
 *   a = A/TP, g = G/TP, f = F/TP):
 *     4 [ L (4 N_s H + 2 N_s + N (2a + 2g) D + B a S + 3 N f) + 2 N_s H + N_s + N V/TP + 2N ]
 * Communication per step (m micro-batches per DP rank; bytes as nccl-tests count them):
 *   TP, no SP: forward  all_reduce (1 + 2L) x N H + 3 x N (cross-entropy max, target, sum)
 *              backward all_reduce (1 + 2L) x N H
 *   TP + SP  : forward  reduce_scatter (1 + 2L) x N H, all_gather (2L + 1) x N H,
 *                       all_reduce 3 x N
 *              backward reduce_scatter (1 + 2L) x N H, all_gather (4L + 2) x N H
 *              optimizer all_reduce of the norm grads (2L + 1) H
 *   mp (TP x PP) optimizer: all_reduce of the squared grad norm (8 bytes)
 *   DP optimizer: all_reduce of the gradient buffer (4 P_local) and of the loss (8 bytes)
 * (each x 4 bytes per element, x m per step for forward/backward, x steps).
 */
#pragma once

#include <map>
#include <string>
#include <vector>

#include "harness/case.h"
#include "optimized/comm/ledger.h"
#include "optimized/core/allocator.h"

namespace pb::harness {

struct CommRow {
  std::string group;
  CommOp op;
  Phase phase;
  int64_t calls = 0;
  int64_t bytes = 0;
};

struct Prediction {
  int64_t params_total = 0;          // the whole model
  int64_t params_local = 0;          // elements on one rank
  double flops_per_step = 0;         // model FLOPs of one optimizer step (global batch)
  std::map<MemCategory, int64_t> memory;  // bytes per rank; categories without a model absent
  std::vector<CommRow> comm;         // summed over the case's steps
};

Prediction predict(const Case& c);

}  // namespace pb::harness
