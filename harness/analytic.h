/* The analytic model: what a case should cost, from its config alone (no run).
 *
 * Parameters and FLOPs: reference/model/flops.h. Per rank (all ranks of a DP x TP
 * layout hold the same amount), e = 4 bytes (fp32) or 2 (bf16) per weight and activation:
 *   P_local = (2L+1) H  +  [2VH + L (2H^2 + 2HGD + 3HF)] / TP      (norms replicated)
 *   params = e P_local, grads = 4 P_local (fp32 main grads), optimizer = 8 P_local (m, v)
 *   + 4 P_local for the fp32 master in bf16 (18 bytes/param in all, FEATURES.md)
 *   activations (saved for backward, one micro-batch, N = B S, N_s = N/TP with SP else N,
 *   a = A/TP, g = G/TP, f = F/TP; rstd, LSE and the cross-entropy statistics in fp32):
 *     e [ L (4 N_s H + N (2a + 2g) D + 3 N f) + 2 N_s H + N V/TP ] + 4 [ L (2 N_s + B a S) + N_s + 2N ]
 * Communication per step (m micro-batches per DP rank; bytes as nccl-tests count them):
 *   TP, no SP: forward  all_reduce (1 + 2L) x N H + 3 x N (cross-entropy max, target, sum)
 *              backward all_reduce (1 + 2L) x N H
 *   TP + SP  : forward  reduce_scatter (1 + 2L) x N H, all_gather (2L + 1) x N H,
 *                       all_reduce 3 x N
 *              backward reduce_scatter (1 + 2L) x N H, all_gather (4L + 2) x N H
 *              optimizer all_reduce of the norm grads (2L + 1) H
 *   mp (TP x PP) optimizer: all_reduce of the squared grad norm (8 bytes)
 *   DP optimizer: all_reduce of the gradient buffer (4 P_local) and of the loss (8 bytes)
 * (N H terms x e bytes, the N cross-entropy terms and gradient buffers x 4, x m per step
 * for forward/backward, x steps).
 *
 * Pipeline parallelism (p stages, v chunks each; pipeline rank r holds Lr = L/p layers,
 * the embedding if it holds stage 0 (r = 0), the final norm and LM head if it holds the
 * last stage (r = p-1, or r = 0 in ZB-V's V placement); each prediction is per pipeline
 * rank): in the formulas above L becomes Lr, the embedding terms count only where stage 0
 * is and the head and cross-entropy terms only where the last stage is. Per micro-batch
 * and chunk of virtual stage s, point-to-point over the pp group, e N_s H bytes each:
 * RecvF + SendB if s > 0, SendF + RecvB if s < p v - 1, except across a boundary that
 * stays on one rank (ZB-V's turn), which moves nothing; the loss all-reduce over pp
 * (8 bytes per step).
 * Activations of a chunk per micro-batch: A_c = Lc x the per-layer term, plus the head's
 * (e (2 N_s H + N V/TP) + 4 (N_s + 2N)) on the last stage. The peak walks the rank's
 * schedule (pp_schedule.h): RecvF allocates e N_s H, F the rest of A_c plus the output
 * it sends (e N_s H, freed when its batch completes, or handed to the next chunk's F on
 * the same rank, where it is that chunk's input), B frees A_c; with a split
 * backward B frees A_c - K_c and W frees K_c, K_c being what the queued weight
 * gradients keep: per layer e (N a D + N f) (o, s) plus, without SP, e 2 N H (the
 * norm outputs a, m, which are the column inputs; under SP the inputs are gathered
 * copies in CommBuffers) and, on the last stage without SP, e N H (the head's input).
 */
#pragma once

#include <map>
#include <string>
#include <vector>

#include "harness/case.h"
#include "optimized/comm/ledger.h"
#include "optimized/core/allocator.h"

namespace pb::harness {

// One call size of one op in one group and phase: calls x (bytes / calls) payload bytes,
// bus_bytes with the nccl-tests factor of the group's size (ledger.h). Two sizes of one
// op in one group and phase are two rows.
struct CommRow {
  std::string group;
  CommOp op;
  Phase phase;
  int64_t calls = 0;
  int64_t bytes = 0;
  double bus_bytes = 0;
  int64_t bytes_per_call() const { return calls ? bytes / calls : 0; }
};

struct Prediction {
  int64_t params_total = 0;          // the whole model
  int64_t params_local = 0;          // elements on one rank (of this pipeline stage)
  double flops_per_step = 0;         // model FLOPs of one optimizer step (global batch)
  std::map<MemCategory, int64_t> memory;  // bytes per rank; categories without a model absent
  std::vector<CommRow> comm;         // summed over the case's steps
};

// The prediction for the ranks of pipeline rank pp_rank (all ranks without PP).
Prediction predict(const Case& c, int pp_rank = 0);

}  // namespace pb::harness
