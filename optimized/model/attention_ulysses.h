/* The DeepSpeed-Ulysses attention core (context parallelism; formulas and terms in
 * parallel/cp_ulysses.h; Jacobs et al., arXiv 2309.14509).
 *
 * Forward: q, k, v of this rank's N = B*Sl token rows (Sl = S/c, contiguous) and all its
 * heads go through an all-to-all each and come back as the whole sequence (B*S rows) for
 * a/c query heads and g'/c kv heads (kv heads repeated when c does not divide them); full
 * causal attention over positions 0..S-1; o goes back by the reverse all-to-all.
 * Backward: dO in, the attention backward, dq, dk, dv back (dk, dv of repeated heads summed).
 *
 *   in and out: q, o (N, a*D); k, v (N, g*D)
 *   whole sequence: q, o (B*S, a/c*D); k, v (B*S, g'/c*D); lse (B*a/c, S) fp32
 *   saved: the whole-sequence q, k, v, o and lse, and o (N, a*D)
 */
#pragma once

#include <functional>

#include "optimized/comm/communicator.h"
#include "optimized/model/attention_core.h"
#include "optimized/model/block.h"

namespace pb {

// The all-to-all between a sequence split and a head split over a group of u ranks. Each
// rank's rows of a sequence are nseg segments of len rows; gathered, segment s of rank j
// lands at row s*u*len + j*len of the sequence's T = nseg*u*len rows (Ulysses: one
// segment, the contiguous split; hybrid CP: its two zigzag chunk pieces).
class HeadExchange {
 public:
  HeadExchange(Communicator& group, int64_t B, int64_t nseg, int64_t len, int64_t D)
      : g_(group), B_(B), nseg_(nseg), len_(len), D_(D) {}
  // x (B*nseg*len, heads*D) -> (B*T, heads*rep/u * D): this rank's share of the heads,
  // each kv head repeated rep times first.
  Tensor to_heads(const Tensor& x, int64_t heads, int64_t rep, MemCategory cat) const;
  // The reverse into x (B*nseg*len, heads*D), summing the rep copies of a repeated head.
  void to_sequence(Tensor& x, const Tensor& y, int64_t heads, int64_t rep) const;
  // The backward around a head-split core: dO (A heads) in, core(dq_h, dk_h, dv_h, dO_h)
  // on the gathered rows (workspace: A/u and G rep/u heads), dq, dk, dv back, each gathered
  // gradient freed once sent.
  using CoreBackward = std::function<void(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout)>;
  void backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, int64_t A, int64_t G, int64_t rep,
                const CoreBackward& core) const;

 private:
  Communicator& g_;
  int64_t B_, nseg_, len_, D_;
};

class UlyssesAttention final : public AttentionCore {
 public:
  UlyssesAttention(const BlockEnv& env, Communicator& cp);
  std::unique_ptr<Saved> forward(Tensor& o, const Tensor& q, const Tensor& k, const Tensor& v, int mb) override;
  void backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, Saved& s) override;

 private:
  Communicator& cp_;
  HeadExchange x_;
  int64_t B_, S_, A_, G_, D_, rep_;  // rep_: kv-head repeat factor (1, or c/G)
  DType dtype_;
};

// Per layer and micro-batch, over a group of u ranks (Ulysses: u = c): saved, the
// workspace around the core (backward: dO and the gathered dq, dk, dv), an all-to-all's
// send and receive buffers.
int64_t ulysses_attention_saved_bytes(const Dims& d, int64_t u);
BlockWorkspace ulysses_attention_workspace(const Dims& d, int64_t u);
BlockWorkspace ulysses_attention_comm_buffers(const Dims& d, int64_t u);

}  // namespace pb
