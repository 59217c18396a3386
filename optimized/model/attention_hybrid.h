/* The hybrid context-parallel attention core (USP: Fang and Zhao, arXiv 2405.07719;
 * FEATURES.md, Hybrid CP; terms in parallel/cp_hybrid.h): c = u r CP ranks, Ulysses inside
 * groups of u consecutive CP ranks, the load-balanced ring across the r groups.
 *
 * The sequence is cut into 2r chunks of m = S/(2r) rows; ring rank rho = cp / u keeps
 * chunks rho and 2r-1-rho, and Ulysses rank mu = cp % u keeps piece mu (of u, p = m/u rows)
 * of each. Forward: an all-to-all over the Ulysses group gathers the two whole chunks for
 * a/u query heads and g'/u kv heads (HeadExchange; kv heads repeated when u exceeds them);
 * the ring (RingAttention over the ring group) attends over the sequence with them; o goes
 * back by the reverse all-to-all. Backward: dO in, the ring's backward, dq, dk, dv back.
 *
 *   in and out: q, o (N, a*D); k, v (N, g*D); N = B*2p rows per rank
 *   the ring's: q, o (B*2m, a/u*D); k, v (B*2m, g'/u*D)
 *   saved: the ring's (its q, k, v, o and LSE) and o (N, a*D)
 */
#pragma once

#include "optimized/model/attention_ring.h"
#include "optimized/model/attention_ulysses.h"

namespace pb {

class HybridAttention final : public AttentionCore {
 public:
  HybridAttention(const BlockEnv& env, Communicator& ulysses, Communicator& ring);
  std::unique_ptr<Saved> forward(Tensor& o, const Tensor& q, const Tensor& k, const Tensor& v, int mb) override;
  void backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, Saved& s) override;

 private:
  HeadExchange x_;
  RingAttention ring_;
  int64_t A_, G_, rep_;  // this rank's heads and kv heads; rep_: kv-head repeat factor (1, or u/G)
  DType dtype_;
};

// The ring's sizes as Dims (its rows B*2m = u N, heads a/u and g'/u, ring degree r), for
// the ring's terms; and the hybrid core's own transients (what it saves is Ulysses' count
// over u: the ring's q, k, v, o and LSE, and o, ulysses_attention_saved_bytes(d, u)).
Dims hybrid_ring_dims(const Dims& d, int64_t u);
BlockWorkspace hybrid_attention_workspace(const Dims& d, int64_t u);
BlockWorkspace hybrid_attention_comm_buffers(const Dims& d, int64_t u);

}  // namespace pb
