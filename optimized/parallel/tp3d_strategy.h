/* 3D tensor parallelism as a TP-linear strategy (tp_linear.h): Bian et al., arXiv 2105.14450,
 * laid out as Colossal-AI's legacy parallel_3d. Rank (i, j, k) of the q x q x q grid
 * (tp_grid.h; the ledger's groups: tp_row varies j, tp_col varies i, tp_depth varies k):
 *   outside the linears  x (N/q^2, H/q): the token rows of block (i, j) -- row block i q + j
 *                        of q^2, whole sequences, so B % q^2 == 0 -- and hidden block k
 *   column linears       (q, k, v; gate, up; the LM head) tp3d_linear.h with INPUT = j, WEIGHT
 *                        = i, OUTPUT = k: the output (N/q^2, out/q) has rows (i, k) and
 *                        output block j, so attention (heads j A/q .. (j+1) A/q - 1) and
 *                        SwiGLU (ffn block j) run on the rank's sequences unchanged
 *   row linears          (o, down) take that layout back: INPUT = k, WEIGHT = i, OUTPUT = j
 *   weights              W (out/q^2, in/q): column linears output block j, its sub-block i,
 *                        input block k; row linears output block k, sub-block i, input block j
 *   RMSNorm              the row statistics summed over k (N/q^2 fp32, forward and backward);
 *                        its weight's block k (H/q) replicated over the (i, j) plane: the
 *                        gradient of the rows (i, j), summed over i and over j before the step
 *   embedding            table (vocab block i q + j of q^2, hidden block k): the partial rows
 *                        of all N tokens reduce-scattered over i, then over j, to rows (i, j);
 *                        backward all-gathered over j, then over i, and scatter-added
 *   head                 logits (N/q^2, V/q) of rows (i, k) and vocab block j; the cross-entropy
 *                        vocab-parallel over j (3 all-reduces of N/q^2 fp32); the loss the mean
 *                        over i and k (8 bytes each), each rank's rows weighing 1/q^2 in it
 * Parameters per rank: every matrix 1/q^3 of its elements, the norms 1/q.
 * Not with SP, CP, MoE, ZeRO or the split backward (registry: tp3d).
 */
#pragma once

#include "optimized/parallel/tp_grid_linear.h"

namespace pb {

class TpCube final : public TpGridLinear {
 public:
  // tp: the grid's q^3 ranks; jg, ig, kg: the rank's groups varying j, i and k (q ranks each).
  TpCube(Communicator& tp, GradSink& sink, Communicator& jg, Communicator& ig, Communicator& kg, const TpGrid& grid);
  Tensor gather(const Tensor& x) override;             // the embedding's backward: AG over j, then over i
  void reduce(Tensor& out, Tensor& partial) override;  // the embedding's forward: RS over i, then over j
  void sum_replicated_grads(Tensor& g) override;       // over i, then over j
  int64_t embedding_vocab_start(int64_t V) const override { return V / (grid_.q * grid_.q) * (me_.i * grid_.q + me_.j); }
  int64_t head_vocab_start(int64_t V) const override { return V / grid_.q * me_.j; }
  double loss_mean(double local) override;
  void column_forward(const std::vector<Tensor*>& ys, const Tensor& x, const std::vector<const Tensor*>& ws) override;
  void column_backward(Tensor& dx, const std::vector<Tensor*>& dws, const std::vector<const Tensor*>& dys,
                       const Tensor& x, const std::vector<const Tensor*>& ws) override;
  void row_forward(Tensor& y, const Tensor& x, const Tensor& w) override;
  void row_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w) override;

 private:
  Communicator &j_, &i_, &k_;
};

// The strategy's communication over a step (terms.h; the dims are the rank's: N = B S/q^2
// rows, H = H/q, a, g, f over q), per pipeline rank, q the grid side:
//   per layer  the 3D linears of q, k, v; o; gate and up; down (tp3d_linear.h), 2 norms'
//              all_reduce over k of fp32 N, forward and backward
//   embedding  reduce_scatter over i of e q^2 N H and over j of e q N H forward, the
//              all-gathers back in the backward
//   head       the LM head's 3D linear, its norm, the cross-entropy's 3 all_reduce over j of
//              fp32 N, the loss's all_reduce over i and over k (8 bytes)
//   step       all_reduce of the norm-weight gradients over i and over j, fp32 (2 Lr + head) H
void tp3d_terms(const Dims& d, int64_t q, Terms& t);

// The blocks' workspace under 3D (their own tensors, the 3D linears' transients of
// tp3d_linear.h and the norms' statistics), n = N, h = H, e, fp = 4:
//   attention fwd  max(4n, qkv + e q n a D, qkv + core, qkv + e n h + e q n h), qkv = e n (a+g) D
//             bwd  o: 2 qkv + e q n a D + 4 h a D (1 + 1/q);  core: 2 qkv + core
//                  q, k, v: 3 qkv + e n h + e q n h + max(e q n h, 4 a D h (1 + 1/q));
//                  norm: 3 qkv + 2 e n h + 4n
//   MLP       fwd  max(4n, e q n f, e n h + e q n h)
//             bwd  down: e n h + 3 e n f + e q n f + 4 h f (1 + 1/q)
//                  gate, up: e n h + 3 e n f + e q n h + max(e q n h, 4 f h (1 + 1/q)); norm 2 e n h + 4n
//   head      fwd  max(4n, e q n V/q);  bwd e n V/q + 2 e n h + max(e q n h + 4 V/q h (1 + 1/q), 4n)
//   embedding fwd  e q^2 n h
// and the communication buffers: forward the gathered x with one gathered weight, backward
// with that weight's gathered dy too; the embedding's e q n h forward and e (q + q^2) n h
// backward.
extern const GridBlockBytes tp3d_block_bytes;

}  // namespace pb
