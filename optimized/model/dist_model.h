/* The distributed Llama decoder: the reference model (reference/model/transformer.h)
 * split over a process grid, composed of blocks (block.h):
 *
 *   x0 = Embedding(tokens)                                       (N_s, H)
 *   per layer l:  h = AttentionBlock_l(x)   (x + attention(norm(x)))
 *                 x = MlpBlock_l(h)         (h + mlp(norm(h)))
 *   loss = Head(x_L)                        (final norm, LM head, vocab-parallel CE)
 * N = B*S token rows, N_s the rows outside TP regions (the TP-linear strategy decides:
 * N, or N/TP under SP). Every technique is a strategy behind a seam (strategies.h), chosen
 * once when the model is built; the blocks only call the interfaces.
 *
 * Pipeline parallelism (Narayanan et al., arXiv 2104.04473): PP ranks x V chunks, placed
 * as parallel/pp_placement.h says (interleaved, or V for ZB-V); a chunk is the blocks of
 * its stage's layers, with the embedding on stage 0 and the head on the last stage. A rank
 * holds only its chunks' parameters. Blocks keep their saved state per micro-batch, so a
 * schedule may have several micro-batches in flight; the stage boundary tensor is x
 * (N_s, H) forward and dx (N_s, H) backward. Without PP there is one chunk holding
 * everything (forward_backward).
 */
#pragma once

#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "optimized/model/attention_terapipe.h"
#include "optimized/model/block.h"
#include "optimized/model/block_chain.h"
#include "optimized/model/dist_params.h"
#include "optimized/model/strategies.h"
#include "optimized/parallel/pp_placement.h"
#include "optimized/parallel/process_grid.h"
#include "reference/model/data.h"

namespace pb {

struct DistModelConfig {
  ref::ModelConfig model;
  int64_t micro_batch_size = 1;  // B
  int64_t seq_length = 1;        // S
  Strategies strategies = Strategies::defaults();  // what the case's techniques installed (registry.h)
  uint64_t seed = 0;
  DType dtype = DType::F32;      // weights and activations (bf16: mixed precision, fp32 master and grads)
  bool vshape = false;           // PP chunk placement: V (ZB-V) instead of interleaved (pp_placement.h)
  bool cp_contiguous = false;    // CP split (parallel/cp_ring.h): chunks 2r, 2r+1 instead of r, 2c-1-r
  int cp_ulysses = 1;            // hybrid CP: Ulysses degree u (its pieces of the ring's chunks)
  bool reuse_fp32_param = false;  // bf16: the weights live in the fp32 master's bytes (dist_params.h)
  bool distributed_optimizer = false;  // ZeRO-1: master and Adam state sharded over DP x CP
  bool offload_optimizer = false;      // ZeRO-Offload: master, Adam state and the step in host memory
  int zero_stage = 1;                  // with distributed_optimizer: 1, 2 (gradients too) or 3 (weights too)
  int64_t bucket_size = 0;             // ZeRO-1's and DP's buckets (elements; 0: one bucket)
  bool bidir = false;                  // PP: two pipelines in opposite directions (DualPipe, Chimera)
  std::vector<int64_t> stage_bounds = {};  // PP: an uneven split's layer boundaries (Placement::bounds); empty: even
  int64_t terapipe_slices = 0;         // TeraPipe: each sequence in K slices, one pipeline unit each
                                       // (model/attention_terapipe.h); 0: whole sequences
};

class DistModel {
 public:
  DistModel(const DistModelConfig& cfg, ProcessGrid& grid);
  ~DistModel();
  // Forward and backward of one micro-batch (all N tokens and labels) through every chunk
  // of a model without PP; gradients of grad_scale * loss accumulate. Returns the
  // micro-batch's mean cross-entropy.
  // mb: the micro-batch's index in the step (the gradient hooks see which one is last).
  double forward_backward(const ref::Batch& batch, float grad_scale, int mb = 0);

  // The pipeline-stage API (any PP; the executor in optimized/train/pp_executor.h).
  int chunks() const { return int(chunks_.size()); }
  int stage_of(int chunk) const { return placement_.stage(grid_.pp_rank(), chunk); }
  bool bidirectional() const { return placement_.bidir; }  // two copies of every stage (pp_mirror)
  bool first_stage(int chunk) const { return placement_.first_of(stage_of(chunk)); }  // embeds
  bool last_stage(int chunk) const { return placement_.last_of(stage_of(chunk)); }    // head and loss
  // Forward of micro-batch mb through chunk c. x_in: the received (N_s, H) input (unused on
  // the first stage). Returns the (N_s, H) output to send, or on the last stage an empty
  // tensor with *loss = the micro-batch's mean cross-entropy (its backward uses grad_scale).
  Tensor forward_chunk(int c, int mb, const ref::Batch& batch, const Tensor& x_in, float grad_scale, double* loss);
  // Backward of (c, mb): dy is the received output gradient (unused on the last stage).
  // Returns dx to send (empty on the first stage). With split_w the linear weight
  // gradients are queued for weight_grad_chunk (zero bubble's B / W split).
  Tensor backward_chunk(int c, int mb, const Tensor& dy, bool split_w);
  void weight_grad_chunk(int c, int mb);
  // Recompute in advance: the checkpointed groups of chunk c run their forward again for
  // micro-batch mb now (in forward order, the backward phase's communication), so that its
  // backward_chunk starts from their recomputed state.
  void recompute_chunk(int c, int mb);
  Tensor boundary_activation() const;  // an empty (N_s, H) input buffer (Activations)
  Tensor boundary_gradient() const;    // an empty (N_s, H) gradient buffer (Workspace)

  // This rank's share of the step's load-balancing losses (MoE), each micro-batch's times
  // its grad_scale, summed since the last call; the step's aux loss is the sum over all
  // ranks divided by DP (train_step.cc).
  double take_aux_loss() { return std::exchange(aux_, 0.0); }
  DistParams& params() { return params_; }
  TpLinear& tp_linear() { return *tp_; }
  ActivationPolicy& activation_policy() { return *policy_; }
  ParamProvider& param_provider() { return *provider_; }
  BlockGrads& block_grads() { return *block_grads_; }
  const DistModelConfig& config() const { return cfg_; }
  // The blocks of chunk c in forward order (for tests and policies; a checkpointed group of
  // layers is one CheckpointedBlocks, model/recompute.h).
  const std::vector<std::unique_ptr<Block>>& blocks(int c) const { return chunks_[size_t(c)]; }

 private:
  struct InFlight {
    WGradQueue wgrads;  // split backward: the weight gradients W computes
    BlockGrads::Held grads;  // and the whole gradients they write (ZeRO-2/3), reduced after W
  };
  DistModelConfig cfg_;
  ProcessGrid& grid_;
  pp::Placement placement_;
  DistParams params_;
  std::unique_ptr<GradSink> sink_;
  std::unique_ptr<TpLinear> tp_;
  std::unique_ptr<BlockGrads> block_grads_;
  std::unique_ptr<ParamProvider> provider_;
  std::unique_ptr<BlockChain> chain_;  // how a chunk's blocks run (prefetches, gradient hooks)
  std::unique_ptr<ActivationPolicy> policy_;
  IndexTensor pos_;  // (N) RoPE positions, on the model's device once
  std::vector<IndexTensor> slice_pos_;       // TeraPipe: each slice's
  std::unique_ptr<TeraPipeKV> terapipe_;     //   and the cross-slice K/V state
  std::vector<int64_t> chunk_layers(int c) const;
  std::unique_ptr<BlockEnv> env_;
  std::vector<std::vector<std::unique_ptr<Block>>> chunks_;
  std::map<std::pair<int, int>, std::unique_ptr<InFlight>> inflight_;  // (chunk, micro-batch)
  double aux_ = 0;
};

}  // namespace pb
