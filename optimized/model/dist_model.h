/* The distributed Llama decoder: the reference model (reference/model/transformer.h)
 * split over a process grid with DP, TP (Megatron) and SP.
 *
 * One micro-batch of B sequences, N = B*S token rows; N_s = N/TP under SP, else N.
 *   x0 = vocab_embedding(tokens)                                 (N_s, H)
 *   per layer (heads A/TP, kv heads G/TP, ffn F/TP on this rank):
 *     a = rmsnorm(x)                                             (N_s, H)
 *     q, k, v = column(a; Wq, Wk, Wv); q, k = rope(q, k)         (N, A/TP*D), (N, G/TP*D)
 *     o, lse = attention(q, k, v)                                (N, A/TP*D), (B*A/TP, S)
 *     h = x + row(o; Wo)                                         (N_s, H)
 *     g, u = column(rmsnorm(h); Wg, Wu); y = h + row(swiglu(g, u); Wd)
 *   logits = column(rmsnorm(x_L); Wlm)                           (N, V/TP)
 *   loss   = vocab-parallel mean cross-entropy
 * Backward mirrors it; weight gradients accumulate into the gradient buffer.
 */
#pragma once

#include <memory>
#include <vector>

#include "optimized/model/dist_params.h"
#include "optimized/parallel/process_grid.h"
#include "optimized/parallel/tp_linear.h"
#include "optimized/parallel/tp_vocab.h"
#include "reference/model/data.h"

namespace pb {

struct DistModelConfig {
  ref::ModelConfig model;
  int64_t micro_batch_size = 1;  // B
  int64_t seq_length = 1;        // S
  Features features;
  uint64_t seed = 0;
  DType dtype = DType::F32;      // weights and activations (bf16: mixed precision, fp32 master and grads)
};

class DistModel {
 public:
  DistModel(const DistModelConfig& cfg, ProcessGrid& grid);
  ~DistModel();
  // Forward and backward of one micro-batch (all N tokens and labels); gradients of
  // grad_scale * loss accumulate. Returns the micro-batch's mean cross-entropy.
  double forward_backward(const ref::Batch& batch, float grad_scale);
  DistParams& params() { return params_; }
  const DistModelConfig& config() const { return cfg_; }

 private:
  struct LayerState;
  void layer_forward(size_t l, Tensor& y, const Tensor& x);
  void layer_backward(size_t l, Tensor& dx, const Tensor& dy);
  DistModelConfig cfg_;
  ProcessGrid& grid_;
  TpContext ctx_;
  DistParams params_;
  std::vector<int64_t> pos_;                 // (N) RoPE positions
  struct Dims {
    int64_t N, Ns, H, D, Aq, Gk, F;  // tokens, token rows held outside TP regions, hidden, head dim,
  } dims_{};                          // and this rank's query heads, kv heads and ffn columns
  std::vector<std::unique_ptr<LayerState>> layers_;
  Tensor final_x_, final_rstd_, final_xf_, logits_;  // saved by the head for backward
  CeState ce_;
};

}  // namespace pb
