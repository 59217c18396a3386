/* The analytic model: what a case should cost, from its config alone (no run): the
 * totals of the terms each technique and block writes beside its code, for the ranks of
 * one pipeline rank. Nothing here knows a technique.
 *
 * Parameters and FLOPs: reference/model/flops.h. Per rank, e = 4 bytes (fp32) or 2 (bf16)
 * per weight and activation; P_local = (2 Lr + head) H + [(emb + head) V H +
 * Lr (2H^2 + 2HGD + 3HF)] / TP (the norms replicated; Lr layers on this pipeline rank).
 *
 *   term                                     where (beside the code)
 *   params, grads, optimizer (18 B/param bf16)  model/dist_optimizer.h  optimizer_terms
 *   TP linears' communication               parallel/tp_linear.h tp_allreduce_terms,
 *                                            parallel/sp_linear.h sp_terms (the strategy's)
 *   vocab-parallel cross-entropy            parallel/tp_vocab.h   tp_vocab_terms
 *   DP gradient and loss all-reduces        parallel/dp_grad_sync.h  dp_terms
 *   pipeline point-to-point, loss           train/pp_terms.h      pp_terms
 *   mp squared-norm all-reduce              model/dist_optimizer.h optimizer_terms
 *   saved activations per layer             model/attention_block.h, attention_core.h,
 *                                            mlp_block.h, mlp.h; the head: end_blocks.h
 *   ZeRO-1/2/3 shards, buckets, gathers     parallel/dp_grad_sync.h dp_terms (sizes from
 *                                            model/dist_params.h enumerate, layout_buckets),
 *                                            parallel/ep_grads.h (the experts' bucket)
 *   offload (host state, host link)         model/dist_optimizer.h offload_terms
 *   reuse-fp32-param, recompute, swap       train/memory_techniques.cc (the recomputed
 *                                            forward's communication again, the host link);
 *                                            their activation walks here (chunk_bytes)
 *   workspace per block                     the same block headers (*_workspace)
 * The registry (optimized/train/registry.h) says which terms a case has.
 *
 * Memory peaks (activations, workspace, comm buffers) walk each rank's schedule, one
 * micro-batch at a time without PP (train/pp_terms.h: schedule_peaks), from what one
 * micro-batch costs in each chunk (analytic.cc: chunk_bytes): A_c saved, K_c kept by a
 * split backward's queued weight gradients (per layer e (N a D + N f) for o and s, plus
 * e 2 N H for a and m where the TP strategy uses the inputs as they are, e N H for the
 * head's), the blocks' workspace transients, each backward block but the first holding
 * its incoming gradient e N_s H, the dy its queued weight gradients keep, and under SP one
 * gathered (N, H) copy at a time or the copies queued weight gradients keep until W.
 * Communication: one row per (group, op, phase, bytes per call), bus bytes with the
 * nccl-tests factor of the group's size.
 */
#pragma once

#include <map>
#include <string>
#include <vector>

#include "harness/case.h"
#include "optimized/comm/ledger.h"
#include "optimized/core/allocator.h"
#include "optimized/parallel/moe_routing.h"

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

// The prediction for the ranks of pipeline rank pp_rank (all ranks without PP). An MoE
// model's dispatcher bytes and expert activations depend on the routing: given a rank's
// routing records of a run (parallel/moe_routing.h) they are that rank's; without them,
// uniform routing (every expert T*K/E copies of every rank's T tokens) is assumed.
Prediction predict(const Case& c, int pp_rank = 0, const std::vector<RoutingRecord>* routing = nullptr);

}  // namespace pb::harness
