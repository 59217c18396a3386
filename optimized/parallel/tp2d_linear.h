/* 2D and 2.5D tensor parallelism as a TP-linear strategy (tp_linear.h): Optimus (Xu et al.,
 * arXiv 2104.05343) and Tesseract (Wang et al., arXiv 2105.14500), laid out as Colossal-AI's
 * legacy parallel_2d / parallel_2p5d. Rank (i, j, k) of the q x q (x d) grid (tp_grid.h):
 *   outside the linears  x (N/(q d), H/q): the token rows of block (k, i) -- whole sequences,
 *                        so B % (q d) == 0 -- and hidden block j
 *   every linear         SUMMA (tp2d_summa.h), W (out/q, in/q) = block (j, i) of the [out, in]
 *                        weight; its output (N/(q d), out/q) has x's layout, so the attention
 *                        (heads j A/q .. (j+1) A/q - 1, kv heads likewise) and SwiGLU (ffn
 *                        block j) run on the rank's sequences unchanged, and the next linear
 *                        takes that output as its input
 *   RMSNorm              the row statistics summed over the row group (x's hidden blocks):
 *                          forward  ss_t = sum_h x_th^2        all_reduce_row (N/(q d) fp32)
 *                          backward dot_t = sum_h dy_th x_th g_h  all_reduce_row (N/(q d) fp32)
 *                        its weight's block j (H/q) replicated over i and k: the gradient of
 *                        the rows block i, summed over the column before the step
 *   embedding            table block (vocab block i, hidden block j): the partial rows of the
 *                        depth layer's N/d tokens reduce-scattered down the column to block
 *                        i; backward all-gathered down the column, then scatter-added
 *   head                 the LM head is SUMMA: logits (N/(q d), V/q) of vocab block j; the
 *                        cross-entropy vocab-parallel over the row (3 all-reduces of
 *                        N/(q d) fp32); the loss is the mean over the column (8 bytes) and
 *                        each rank's rows weigh 1/q in it
 *   2.5D                 the d layers are q x q grids on their N/d tokens with the weights
 *                        replicated: every gradient is averaged over the depth together with
 *                        DP (the dp_cp group spans it, process_grid.h), as DP averages
 * Parameters per rank: every matrix 1/q^2 of its elements, the norms 1/q.
 * Not with SP, CP, MoE, ZeRO or the split backward (registry: tp_nd).
 */
#pragma once

#include "optimized/parallel/tp_grid_linear.h"

namespace pb {

class TpSumma final : public TpGridLinear {
 public:
  // tp: the grid's q^2 d ranks; row, col: the rank's row and column groups (q ranks each).
  TpSumma(Communicator& tp, GradSink& sink, Communicator& row, Communicator& col, const TpGrid& grid);
  Tensor gather(const Tensor& x) override;             // AG down the column (the embedding's backward)
  void reduce(Tensor& out, Tensor& partial) override;  // RS down the column (the embedding's forward)
  void sum_replicated_grads(Tensor& g) override { col_.all_reduce(g); }
  std::vector<int64_t> embedding_rows(const std::vector<int64_t>& tokens) const override;
  int64_t embedding_vocab_start(int64_t V) const override { return V / grid_.q * me_.i; }
  int64_t head_vocab_start(int64_t V) const override { return V / grid_.q * me_.j; }
  double loss_mean(double local) override;
  void column_forward(const std::vector<Tensor*>& ys, const Tensor& x, const std::vector<const Tensor*>& ws) override;
  void column_backward(Tensor& dx, const std::vector<Tensor*>& dws, const std::vector<const Tensor*>& dys,
                       const Tensor& x, const std::vector<const Tensor*>& ws) override;
  void row_forward(Tensor& y, const Tensor& x, const Tensor& w) override;
  void row_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w) override;

 private:
  Communicator &row_, &col_;
};

// The strategy's communication over a step (terms.h; under 2D / 2.5D the dims are the
// rank's: N = B S/(q d) rows, H the hidden block H/q, a, g, f the heads, kv heads and ffn
// columns over q), per pipeline rank, q the grid side:
//   per layer  SUMMA of q, k, v on the normed x, of o, of gate and up, of down (tp2d_summa.h)
//              2 norms: all_reduce_row of fp32 N forward and backward
//   embedding  reduce_scatter_col of e q N H forward, all_gather_col of it backward
//   head       SUMMA of the LM head, its norm, the cross-entropy's 3 all_reduce_row of fp32 N,
//              the loss's all_reduce_col of 8 bytes
//   step       all_reduce_col of the norm-weight gradients, fp32 (2 Lr + head) H
void tp2d_terms(const Dims& d, int64_t q, Terms& t);

// The blocks' workspace under 2D / 2.5D (each block's own tensors as attention_block.cc,
// mlp_block.cc and end_blocks.cc allocate them, with SUMMA's transients, tp2d_summa.h, and
// the norms' fp32 row statistics), forward and backward, q = d.tq:
//   attention fwd  max(4N, qkv + e N a D (a product), qkv + core, qkv + 2 e N H)
//                  with qkv = e N (a + g) D (q and k before RoPE)
//             bwd  o:        2 qkv + e q N a D (P) + 4 q H a D (Q) + 4 H a D (its share)
//                  core:     2 qkv + core
//                  q, k, v:  3 qkv + e N H + e q N H + 4 q (a + 2 g) D H + max(e N H, 4 a D H)
//                  norm:     3 qkv + 2 e N H + 4 N
//   MLP       fwd  max(4N, e N f, 2 e N H)
//             bwd  down:     e N H + 3 e N f + e q N f + 4 q H f + 4 H f
//                  gate, up: e N H + 3 e N f + e q N H + 8 q f H + max(e N H, 4 f H);  norm: 2 e N H + 4 N
//   head      fwd  max(4N, e N V/q)
//             bwd  e N V/q + 2 e N H + max(e q N H + 4 V H + 4 V H/q, 4 N)
//   embedding fwd  e q N H (the depth layer's partial rows)
// and the communication buffers: one broadcast block of x and one of a weight at a time
// (forward and backward), the embedding's gathered gradient e q N H in the backward.
extern const GridBlockBytes tp2d_block_bytes;

}  // namespace pb
