/* Analytic terms: what one technique or block contributes to the prediction of a case,
 * written from its formulas beside its code (harness/analytic.cc sums them).
 *
 * Dims is the case seen from the ranks of one pipeline rank: N = B*S tokens per micro-batch,
 * N_s = N/TP rows outside TP regions under SP (else N), a = A/TP, g = G/TP, f = F/TP local
 * heads, kv heads and ffn columns (2D / 2.5D TP, parallel/tp2d_linear.h: the rank's blocks,
 * B = B/(q d) sequences, N = N_s their rows, H = H/q, a, g, f and the vocabulary over q); e bytes per weight / activation (4 fp32, 2 bf16), fp = 4
 * for fp32 grads, master, Adam state and statistics; Lr layers on this pipeline rank, emb
 * and head 1 where it holds the embedding / the final norm and LM head; mb = m * steps
 * micro-batches in the run.
 */
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "optimized/comm/ledger.h"
#include "optimized/core/allocator.h"

namespace pb {

struct RoutingRecord;  // parallel/moe_routing.h

struct Dims {
  int64_t B = 1, S = 1, N = 1, Ns = 1;              // micro-batch, sequence, tokens, rows outside TP regions
  int64_t H = 1, A = 1, G = 1, D = 1, F = 1, V = 1, L = 1;
  int64_t a = 1, g = 1, f = 1;                      // this rank's heads, kv heads, ffn columns
  int64_t t = 1, d = 1, p = 1, v = 1, c = 1;        // TP, DP, PP, VPP, CP degrees
  int64_t tq = 1, td = 1;                           // TP's split of the heads, ffn and vocabulary (1D: t;
                                                    // 2D / 2.5D: the grid side q) and 2.5D's depth
  int64_t m = 1, steps = 1, mb = 1;                 // micro-batches per DP rank, steps, m * steps (through
                                                    // each of the rank's layers: half with two pipelines)
  int64_t slices = 0, slice = 0;                    // TeraPipe: K token slices (S, N, m are a slice's and
                                                    // the m*K units), and the slice whose costs are asked
  int64_t updates = 1;                              // optimizer updates per step: m / update_every for
                                                    // the asynchronous pipelines (train/pp_async.h)
  int64_t e = 4;                                    // bytes per weight / activation element
  bool wgrad_products = false;                      // no matmul-add: each weight gradient's product is a
                                                    // workspace of e bytes per element in the backward
                                                    // (parallel/grad_separate_add.h)
  static constexpr int64_t fp = 4;                  // fp32 bytes
  int pp_rank = 0;
  int64_t Lr = 1, emb = 1, head = 1;                // layers here; embedding / head here (0 or 1)
  int64_t params_local = 0;                         // parameter elements on this rank
  int64_t ep = 1, E = 0, El = 0, K = 1, Fe = 0;     // EP degree; experts, local experts, top-k, expert ffn
  int64_t params_expert = 0;                        // of them, this rank's experts' (the last block)
  int64_t Lmoe = 0;                                 // MoE layers on this pipeline rank
  bool zero = false;                                // the distributed optimizer (ZeRO-1)
  int64_t zero_stage = 0;                           // its stage: 1, or 2 (per-parameter shards, gradients too)
  std::vector<int64_t> dp_buckets;                  // DP with bucket_size or overlap_grad_reduce: the dense buckets
  bool overlap_grad_reduce = false;                 //   reduced in the backward (else at the step)
  bool post_validation = false;                     // the norm along the pipeline, not one all-reduce
  std::vector<int64_t> zero_buckets;                // ZeRO-1: each bucket padded to a multiple of d*c
  std::vector<int64_t> zero_expert_buckets;         //   and the experts', of t*d*c/ep (expert_dp)
  struct ZeroParam {
    int64_t padded = 0;       // ZeRO-2/3: a parameter padded to a multiple of d*c (a unit)
    bool embedding = false;   // the embedding table (its backward needs no weights)
    int64_t layer = -1;       // its decoder layer (-1: the embedding or the head)
    bool expert = false;      // a layer's local experts of one projection: padded to a
                              // multiple of expert_dp (t*d*c/ep), over which they go
  };
  std::vector<ZeroParam> zero_params;               // ZeRO-2/3: this rank's parameters
  int64_t zero_block_grads = 0;                     // the largest block's padded parameters
  int64_t zero_pair_grads = 0;                      //   and of two consecutive blocks' in a chunk's
                                                    //   backward (overlap_grad_reduce)
  int64_t zero_slice_max = 0;                       //   and the largest slice
  int64_t zero_gathered = 0;                        // ZeRO-3: the most padded weights whole at once
                                                    //   (two consecutive weight uses of a chunk)
  int64_t padded = 0, shard = 0;                    // its buffer (params_local padded to a multiple of
                                                    // d*c) and this rank's range of it
  const std::vector<RoutingRecord>* routing = nullptr;  // this rank's routing of the run (MoE)
  // Where the step's data-parallel reduction runs (and, under SP, the replicated block's
  // sum over TP before it): the backward with overlap_grad_reduce, else the step.
  Phase grad_phase() const { return overlap_grad_reduce ? Phase::Backward : Phase::Optimizer; }
};

// Workspace (temporaries, MemCategory::Workspace) a block allocates beyond its input and
// output activations, at its peak, in bytes: forward, and backward excluding the incoming
// gradient (held by the caller). Gathered copies of the TP strategy are CommBuffers, not
// counted here. Kernel-internal copies (the CPU backend's bf16 emulation promotes operands
// to fp32) are not part of the model's terms.
struct BlockWorkspace {
  int64_t forward = 0, backward = 0;
};

// One call size of one collective: calls x bytes_per_call payload bytes.
struct CommTerm {
  std::string group;
  CommOp op;
  Phase phase;
  int64_t calls = 0, bytes_per_call = 0;
  int group_size = 1;
};

struct Terms {
  std::vector<CommTerm> comm;
  std::map<MemCategory, int64_t> memory;  // bytes per rank, added over the terms
  int64_t host_step = 0;  // host bytes held only while the optimizer steps (offload's staging)
  void call(const char* group, CommOp op, Phase ph, int64_t calls, int64_t bytes_per_call, int64_t group_size) {
    if (calls > 0 && group_size > 1) comm.push_back({group, op, ph, calls, bytes_per_call, int(group_size)});
  }
};

}  // namespace pb
