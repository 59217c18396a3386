/* Context parallelism, ring attention with causal load balance: the data layout, the ring
 * hop and the communication terms (FEATURES.md, CP ring; Liu et al., "Ring Attention with
 * Blockwise Transformers", arXiv 2310.01889; the zigzag split of Megatron-LM /
 * TransformerEngine's context parallelism). The attention-core strategy that runs it is
 * model/attention_ring.h.
 *
 * The sequence of S tokens is cut into 2c chunks of m = S/(2c); CP rank r keeps chunks
 * r and 2c-1-r (zigzag; cp_balance "contiguous": 2r and 2r+1), so its N = B*2m token rows
 * are, per sequence b, rows b*2m + [0, m) (its first chunk) and + [m, 2m) (its second).
 * Tokens, labels and RoPE positions follow the same selection (cp_positions).
 *
 * Communication per layer and micro-batch over the cp group, x = e N g D bytes (one of K,
 * V for this rank's N rows; g = G/TP kv heads): forward c-1 ring hops of K and V (2 sends
 * and 2 receives of x each); backward the same, plus c hops of the fp32 dK, dV
 * accumulators (2 sends and 2 receives of 4 N g D each; the last hop returns them to
 * their owners).
 */
#pragma once

#include <array>
#include <vector>

#include "optimized/comm/communicator.h"
#include "optimized/parallel/terms.h"

namespace pb {

// The two chunk indices (of 2c) that CP rank r keeps.
std::array<int64_t, 2> cp_chunks(int c, int r, bool contiguous);
// The positions of rank r's S/c tokens of one sequence, chunk by chunk (zigzag: S divisible
// by 2c; contiguous: by c).
// Hybrid CP (u > 1: Ulysses groups of u inside a ring of c/u): ring rank r/u keeps its two
// chunks of 2c/u, and within each the piece r % u of u.
std::vector<int64_t> cp_positions(int64_t S, int c, int r, bool contiguous, int u = 1);
// Rows of a (B*S, ...) full-sequence tensor that rank r keeps, in its row order.
std::vector<int64_t> cp_rows(int64_t B, int64_t S, int c, int r, bool contiguous, int u = 1);

// One hop along the ring: sends `out` to rank r+1 and receives `in` from rank r-1 (tensors
// paired by index, tag = tag0 + index), posted together; wait() completes the hop.
class RingHop {
 public:
  RingHop(Communicator& cp, const std::vector<const Tensor*>& out, const std::vector<Tensor*>& in, int tag0 = 0);
  void wait();
  ~RingHop() { wait(); }

 private:
  std::vector<RequestPtr> reqs_;
};

// Query-key pairs this process's CP attention computed (summed over heads and sequences)
// since the last reset: the work whose balance the harness records per rank.
int64_t cp_attention_pairs();
void add_cp_attention_pairs(int64_t n);
void reset_cp_attention_pairs();

void cp_ring_terms(const Dims& d, Terms& t, const char* group = "cp");

}  // namespace pb
