/* The ring attention core (context parallelism; the layout, hop and terms are
 * parallel/cp_ring.h, the formulas there and in FEATURES.md, CP ring).
 *
 * Forward, c steps: step i computes this rank's queries against the K, V of CP rank
 * j = r - i (mod c) while the next K, V travel one hop (RingHop: double-buffered, the
 * transfer overlaps this step's compute). Only visible (query chunk, key chunk) pairs are
 * computed: a key chunk before the query chunk fully, the same chunk causally, a later one
 * not at all; with the zigzag split every rank does the same work (step 0 its own two
 * chunks; from an earlier rank both query chunks against its first key chunk; from a later
 * rank the second query chunk against both key chunks). Step 0 writes o and the LSE; the
 * later steps merge by the log-sum-exp (ops::attention_merge).
 * Backward: K, V circulate again; every block's gradient from the merged o and LSE; dQ
 * accumulates here in fp32, the fp32 dK, dV accumulators travel with their K, V and a last
 * hop returns them to their owners.
 *
 *   o, q (N, Aq*D); k, v (N, Gk*D); N = B*2m rows, per sequence its two chunks of m rows
 *   saved: q, k, v, o and the LSE (B*2*Aq, m) fp32: block (b, chunk h) is rows (2b+h)*Aq
 */
#pragma once

#include <vector>

#include "optimized/comm/communicator.h"
#include "optimized/model/attention_core.h"
#include "optimized/model/block.h"

namespace pb {

class RingAttention final : public AttentionCore {
 public:
  RingAttention(const BlockEnv& env, Communicator& cp, bool contiguous);
  // Over any ring (hybrid CP: its ring group): B sequences of 2 chunks of m rows (chunk ids
  // by this rank's place in `ring`), A query and G kv heads of dim D.
  RingAttention(Communicator& ring, int64_t B, int64_t m, int64_t A, int64_t G, int64_t D, DType dtype,
                bool contiguous);
  std::unique_ptr<Saved> forward(Tensor& o, const Tensor& q, const Tensor& k, const Tensor& v, int mb) override;
  void backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, Saved& s) override;

  // One attention call of a step: query chunk h (rows h*m of each sequence) against key
  // rows [k0, k0 + Sk) of each sequence of the K, V held, with their positions.
  struct Call {
    int h;
    int64_t k0, Sk;
    std::vector<int64_t> qpos, kpos;
    int64_t pairs;  // visible query-key pairs of one sequence and head
  };
  std::vector<Call> calls(int owner) const;  // against CP rank owner's K, V

 private:
  Communicator& cp_;
  bool contiguous_;
  int64_t B_, m_, A_, G_, D_;
  DType dtype_;
};

// Workspace the ring core allocates at its peak (forward, backward) and its communication
// buffers (forward, backward), per layer and micro-batch: m = N/(2B) rows per chunk.
BlockWorkspace ring_attention_workspace(const Dims& d);
BlockWorkspace ring_attention_comm_buffers(const Dims& d);

}  // namespace pb
