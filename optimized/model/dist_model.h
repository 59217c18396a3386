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
 *
 * Pipeline parallelism (Narayanan et al., arXiv 2104.04473): PP ranks x V chunks; chunk c
 * of pipeline rank r is virtual stage s = c*PP + r (or, V-shaped for ZB-V, s = r for
 * chunk 0 and 2PP-1-r for chunk 1) and holds layers
 * [s*L/(PP*V), (s+1)*L/(PP*V)); stage 0 also embeds, the last stage also runs the final
 * norm, the LM head and the loss. A rank holds only its chunks' parameters. Every
 * (chunk, micro-batch) keeps its own saved activations, so a schedule may have several
 * micro-batches in flight; the stage boundary tensor is x (N_s, H) forward and dx (N_s, H)
 * backward. Without PP there is one chunk holding everything (forward_backward).
 */
#pragma once

#include <map>
#include <memory>
#include <utility>
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
  bool vshape = false;           // PP chunk placement: V (ZB-V) instead of interleaved (pp_schedule.h)
};

class DistModel {
 public:
  DistModel(const DistModelConfig& cfg, ProcessGrid& grid);
  ~DistModel();
  // Forward and backward of one micro-batch (all N tokens and labels) through every chunk
  // of a model without PP; gradients of grad_scale * loss accumulate. Returns the
  // micro-batch's mean cross-entropy.
  double forward_backward(const ref::Batch& batch, float grad_scale);

  // The pipeline-stage API (any PP; the executor in optimized/parallel/pp_executor.h).
  int chunks() const { return int(chunk_layers_.size()); }
  int stage_of(int chunk) const;
  bool first_stage(int chunk) const { return stage_of(chunk) == 0; }
  bool last_stage(int chunk) const;
  // Forward of micro-batch mb through chunk c. x_in: the received (N_s, H) input (unused on
  // the first stage). Returns the (N_s, H) output to send, or on the last stage an empty
  // tensor with *loss = the micro-batch's mean cross-entropy (its backward uses grad_scale).
  Tensor forward_chunk(int c, int mb, const ref::Batch& batch, const Tensor& x_in, float grad_scale, double* loss);
  // Backward of (c, mb): dy is the received output gradient (unused on the last stage).
  // Returns dx to send (empty on the first stage). With split_w the linear weight
  // gradients are queued for weight_grad_chunk (zero bubble's B / W split).
  Tensor backward_chunk(int c, int mb, const Tensor& dy, bool split_w);
  void weight_grad_chunk(int c, int mb);
  Tensor boundary_activation() const;  // an empty (N_s, H) input buffer (Activations)
  Tensor boundary_gradient() const;    // an empty (N_s, H) gradient buffer (Workspace)

  DistParams& params() { return params_; }
  const DistModelConfig& config() const { return cfg_; }

 private:
  struct LayerWeights;
  struct LayerActs;
  struct ChunkActs;
  Tensor act(int64_t r, int64_t c) const;
  Tensor work(int64_t r, int64_t c) const;
  void layer_forward(const LayerWeights& W, LayerActs& L, Tensor& y, const Tensor& x);
  void layer_backward(const LayerWeights& W, LayerActs& L, Tensor& dx, const Tensor& dy);
  DistModelConfig cfg_;
  ProcessGrid& grid_;
  TpContext ctx_;
  DistParams params_;
  std::vector<int64_t> pos_;                 // (N) RoPE positions
  struct Dims {
    int64_t N, Ns, H, D, Aq, Gk, F;  // tokens, token rows held outside TP regions, hidden, head dim,
  } dims_{};                          // and this rank's query heads, kv heads and ffn columns
  std::vector<std::pair<int64_t, int64_t>> chunk_layers_;  // [first, last) global layer of each chunk
  std::map<int64_t, std::unique_ptr<LayerWeights>> weights_;  // by global layer
  std::map<std::pair<int, int>, std::unique_ptr<ChunkActs>> acts_;  // (chunk, micro-batch) in flight
};

}  // namespace pb
