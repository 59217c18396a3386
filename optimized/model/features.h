/* The typed features of a case: parsed once from the case's names by the technique
 * registry (optimized/train/registry.h); the model, the analytic terms and the runner read
 * these fields and never the names. */
#pragma once

#include <string>
#include <vector>

namespace pb {

struct Features {
  bool sp = false;  // Megatron sequence parallelism (needs TP): activations outside TP regions are N/TP rows
  // Multi-dimensional TP (case keys "tp_kind", "tp_depth"; parallel/tp_grid.h): the tp ranks
  // as a line (1d, Megatron), a q x q grid (2d), d layers of it (2.5d, depth d) or a cube (3d).
  std::string tp_kind = "1d";
  int tp_depth = 1;
  // Context parallelism (layout cp > 1; case keys "cp_kind", "cp_balance"):
  std::string cp_kind = "ring";       // ring (load-balanced ring attention) | ulysses | hybrid
  bool cp_contiguous = false;         // cp_balance "contiguous": rank r keeps chunks 2r, 2r+1 (not r, 2c-1-r)
  int cp_ulysses = 1;                 // hybrid: the Ulysses degree u (case key "cp_ulysses"), the ring c/u
  // MoE (a model with experts; layout ep): the token dispatcher (case key "moe_dispatcher").
  std::string moe_dispatcher = "alltoall";  // alltoall | allgather
  // Mixed precision (dtype bf16) and MindSpeed's reuse-fp32-param (feature "reuse_fp32_param"):
  // the fp32 master buffer holds the bf16 weights and the 16-bit residuals in place.
  bool bf16 = false;
  bool reuse_fp32_param = false;
  bool distributed_optimizer = false;  // ZeRO-1 (Megatron): optimizer state sharded over DP x CP
  bool offload_optimizer = false;      // ZeRO-Offload: the optimizer state and step in host memory
  int64_t bucket_size = 0;  // DP's gradient buckets (case key "bucket_size"): elements per bucket, 0 = one;
                            // reduced one by one (ZeRO-1: each sharded)
  bool overlap_grad_reduce = false;  // the buckets' reduction started in the backward (model/grad_overlap.h)
  bool post_validation = false;  // the optimizer step post-validated along the pipeline (model/post_validation.h)
  // Stage partitioning (train/pp_partition.h; case keys pp_layers, pp_first_layers,
  // pp_last_layers): layers per stage given, Megatron's first / last rank's layers (0:
  // unset), or the partitioner's balanced split ("pp_layers": "balanced").
  std::vector<int64_t> pp_layers;
  int64_t pp_first_layers = 0, pp_last_layers = 0;
  bool pp_balanced = false;
  int chimera_pipelines = 2;  // schedule chimera (case key chimera_pipelines): model replicas, down and up
  int pp_update_every = 0;    // schedule pipedream-2bw (case key pp_update_every): micro-batches per weight
                              // version (0: p)
  int terapipe_slices = 0;    // schedule terapipe (case key terapipe_slices): token slices per sequence (0: 1)
  bool pp_split() const { return !pp_layers.empty() || pp_first_layers > 0 || pp_last_layers > 0 || pp_balanced; }
  bool overlap_param_gather = false;  // ZeRO-1's gathers waited for in the next forward (param_gather_overlap.h)
  // MC2 (feature "mc2", needs sp; case key "mc2_chunks"): the SP linears with their
  // collectives split into chunks under the matrix products (parallel/mc2_linear.h).
  bool mc2 = false;
  int mc2_chunks = 2;
  int zero_stage = 1;  // with distributed_optimizer (case key "zero_stage"): 1 (state), 2 (and gradients), 3 (and weights)
  // Activation recompute (model/recompute.h): full (feature "recompute_full"; case keys
  // "recompute_method" uniform | block and "recompute_num_layers" N) or selective (feature
  // "recompute_selective": the attention core).
  bool recompute_full = false;
  std::string recompute_method = "uniform";
  int recompute_num_layers = 1;
  bool recompute_selective = false;
  // MindSpeed's recompute in advance (feature "recompute_in_advance", with recompute_full
  // and the interleaved schedule): a chunk's recompute runs while its output gradient is
  // received (pp_schedule.h: add_recompute_ahead).
  bool recompute_in_advance = false;
  bool swap_attention = false;  // MindSpeed's swap attention (memory/swap_attention.h)
  // Megatron's --no-gradient-accumulation-fusion (feature "no_gradient_accumulation_fusion"):
  // the weight gradients' products added by a separate kernel (parallel/grad_separate_add.h)
  // instead of the default matmul-add.
  bool no_gradient_accumulation_fusion = false;
};

}  // namespace pb
