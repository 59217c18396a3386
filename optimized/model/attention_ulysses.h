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

#include "optimized/comm/communicator.h"
#include "optimized/model/attention_core.h"
#include "optimized/model/block.h"

namespace pb {

class UlyssesAttention final : public AttentionCore {
 public:
  UlyssesAttention(const BlockEnv& env, Communicator& cp);
  std::unique_ptr<Saved> forward(Tensor& o, const Tensor& q, const Tensor& k, const Tensor& v) override;
  void backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, Saved& s) override;

 private:
  // Sequence split -> head split: x (N, heads*D) to (B*S, heads'/c*D); heads' = rep * heads.
  Tensor to_heads(const Tensor& x, int64_t heads, int64_t rep, MemCategory cat);
  // Head split -> sequence split: y (B*S, heads'/c*D) back into x (N, heads*D), summing
  // the rep copies of a repeated head.
  void to_sequence(Tensor& x, const Tensor& y, int64_t heads, int64_t rep);
  Communicator& cp_;
  int64_t B_, S_, Sl_, A_, G_, D_, rep_;  // rep_: kv-head repeat factor (1, or c/G)
  DType dtype_;
};

int64_t ulysses_attention_saved_bytes(const Dims& d);
BlockWorkspace ulysses_attention_workspace(const Dims& d);
BlockWorkspace ulysses_attention_comm_buffers(const Dims& d);

}  // namespace pb
