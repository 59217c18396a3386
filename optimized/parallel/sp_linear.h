/* Megatron sequence parallelism (Korthikanti et al., arXiv 2205.05198) as a TP-linear
 * strategy (tp_linear.h): outside TP regions activations are [S/TP, B, H] row shards, so
 * norms and residuals run on N/TP rows; a TP region starts with an all-gather of the shards
 * and ends with a reduce-scatter instead of the all-reduce. Same bytes as TP's all-reduces
 * plus one all-gather per column linear in backward (the re-gather of its saved input).
 * The replicated norm weights saw only N/TP rows: their gradients are all-reduced over TP
 * before the step.
 */
#pragma once

#include "optimized/parallel/tp_linear.h"

namespace pb {

class TpSequenceParallel : public TpLinear {
 public:
  using TpLinear::TpLinear;
  int64_t outer_rows(int64_t N) const override { return N / tp_.size(); }
  Tensor gather(const Tensor& shard) override;           // AG_tp into a CommBuffers tensor
  void reduce(Tensor& out, Tensor& partial) override;    // RS_tp
  bool replicated_grads_partial() const override { return true; }
};

// Over a step (TP > 1, SP), per pipeline rank (terms.h), e N H bytes per call unless said:
//   forward  reduce_scatter emb + b (row linears, the embedding)
//            all_gather     b + head (column linears)
//   backward reduce_scatter b + head (column linears)
//            all_gather     2 b + head + emb (column re-gathers, row linears, embedding)
//   optimizer all_reduce of the norm-weight and router gradients, fp32 (2 Lr + head) H
//            + Lmoe E H, once a step
// with b = 2 Lr - Lmoe blocks of TP linears (an MoE layer's MLP has none: expert TP = 1).
// With chunks > 1 (MC2, mc2_linear.h) the calls of the linears that MC2 splits -- forward
// column all-gathers and row reduce-scatters, backward row all-gathers -- are chunks times
// as many, each 1/chunks of the bytes.
void sp_terms(const Dims& d, Terms& t, int64_t chunks = 1);

}  // namespace pb
