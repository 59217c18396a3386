/* The analytic terms of pipeline parallelism (p stages, v chunks each), for pipeline rank
 * d.pp_rank, and the activation peak of any rank walked through its schedule.
 *
 * Point-to-point over the pp group, per micro-batch and chunk of virtual stage s, e N_s H
 * bytes each: RecvF + SendB if s > 0, SendF + RecvB if s < p v - 1, except across a
 * boundary that stays on one rank (ZB-V's turn), which moves nothing; the loss all-reduce
 * over pp (8 bytes per step).
 * Memory peaks of any rank, walked through its schedule, per chunk c:
 *   activations: A_c bytes saved by one micro-batch, K_c of them kept by a split backward's
 *     queued weight gradients; x_b = e N_s H a boundary tensor. RecvF allocates x_b; F the
 *     rest of A_c plus the output it sends (x_b, freed when its batch completes, or handed
 *     to the next chunk's F on the same rank, where it is that chunk's input); B frees A_c,
 *     or with a split backward A_c - K_c, and W frees K_c. Recompute's transients peak
 *     above the level F leaves, and above the level B starts from.
 *   workspace: RecvB allocates the received gradient x_b, which its B frees; B leaves the
 *     gradient it sends (x_b, freed when its batch completes, or handed over locally);
 *     during F and B the chunk's temporaries add their transient peak; a split backward's
 *     queued weight gradients keep their output gradients until W.
 *   comm buffers (gathered copies): a transient peak during F and B; a split backward's
 *     queued weight gradients keep their gathered inputs until W.
 *   R (recompute in advance) raises the micro-batch's activations by its recomputed state,
 *     which its B frees with the rest; the batch before an R frees its sent tensors only
 *     after the R (it is waited for then).
 * Without a pipeline one micro-batch runs at a time: the peaks are A_0 and the transients.
 */
#pragma once

#include <functional>
#include <vector>

#include "optimized/train/pp_schedule.h"
#include "optimized/parallel/terms.h"

namespace pb {

void pp_terms(const pp::Schedule& s, const Dims& d, Terms& t);

struct ChunkBytes {
  int64_t act = 0, act_kept = 0;                 // A_c, K_c
  // Transient activations (recompute): during F above the level F leaves (a checkpointed
  // group's whole state before it is dropped), during B above the level B starts from
  // (a group's, or a core's, state recomputed).
  int64_t act_forward = 0, act_backward = 0;
  int64_t host = 0;  // moved to host memory by F, back by B (swap attention)
  int64_t ws_forward = 0, ws_backward = 0, ws_kept = 0;  // workspace transients of F and B; kept until W
  int64_t cb_forward = 0, cb_backward = 0, cb_kept = 0;  // comm-buffer transients; kept until W
  int64_t grads_kept = 0;  // ZeRO-2/3 under a split backward: the chunk's whole gradients, B to W
  int64_t ws_w = 0;        // W's transient (the separate add's largest product)
  // Activations a B allocates before it runs and leaves behind (TeraPipe's accumulated K/V
  // gradients, at slice K-1), and a B frees after it ran (slice 0: them, besides its A_c).
  int64_t act_b_alloc = 0, act_b_free = 0;
  // Recompute in advance (an R before the B): R adds the checkpointed groups' recomputed
  // state (ahead_act; its peak above the level before R ahead_act_peak) with the forward's
  // transients (ahead_ws, ahead_cb); such a B starts from that state and has no recompute
  // transients of its own (ahead_act_backward, ahead_ws_backward, ahead_cb_backward).
  int64_t ahead_act = 0, ahead_act_peak = 0, ahead_ws = 0, ahead_cb = 0;
  int64_t ahead_act_backward = 0, ahead_ws_backward = 0, ahead_cb_backward = 0;
};
struct MemoryPeaks {
  int64_t activations = 0, workspace = 0, comm_buffers = 0, host = 0;
  int64_t grads = 0;  // the most whole gradients pending W at once (grads_kept)
};
// bytes(chunk, mb): what micro-batch mb costs in chunk c (the same for every micro-batch
// of a dense model; an MoE layer's routed rows vary). Without a schedule: micro-batch 0.
using ChunkBytesOf = std::function<ChunkBytes(int chunk, int mb)>;
MemoryPeaks schedule_peaks(const pp::Schedule* s, int rank, const ChunkBytesOf& bytes, int64_t xb);

}  // namespace pb
