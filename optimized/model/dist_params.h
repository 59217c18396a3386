/* The parameters of the distributed model: each rank's shard of every reference
 * parameter, with its place in the global tensor, stored as views into contiguous
 * parameter, gradient and Adam-moment buffers (one buffer each, so that gradient
 * reduction is one collective and ZeRO can later shard the buffers).
 *
 * Buffer order: the replicated tensors first -- the norm weights (not weight-decayed), then
 * the MoE routers (E, H) -- so that the SP all-reduce of their gradients is one call over
 * the leading block; then the TP-sharded ones; then, last, this rank's experts (expert
 * parallelism: experts e_0 .. e_0 + E/EP - 1 of each MoE layer, e_0 = ep_rank * E/EP, not
 * TP-sharded) ordered by (layer, w1 / w3 / w2, expert), so that each projection of a layer
 * is one (E/EP, out, in) block for the grouped linear and the expert gradients one block
 * for their reduction over the expert-data-parallel group.
 * Sharding over TP (t ranks, this rank r), in the reference's [out, in] layout:
 *   rows  : embed, lm_head (V/t rows), q (A/t heads), k, v (G/t heads), gate, up (F/t)
 *   cols  : o (A/t heads of columns), down (F/t columns)
 *   none  : the RMSNorm weights (replicated)
 * Init: element (i, j) of a shard is ref::init_value(seed, name, gi*cols + gj) of its
 * global index, so shards equal slices of the reference's tensors bit for bit.
 * Mixed precision (bf16): the model computes with bf16 weights (Params, 2 bytes) cast from
 * fp32 master weights (Optimizer, 4 bytes) after every step; gradients accumulate into
 * fp32 main grads (Grads, 4 bytes); with Adam's m and v: 2 + 4 + 12 = 18 bytes/param.
 * Reuse-fp32-param (MindSpeed): no bf16 buffer; between steps the master's 4n bytes hold
 * [residuals (n) | bf16 weights (n)] (ops::fp32_to_bf16_residual, exact both ways) and the
 * weights are a view of the second half: 16 bytes/param. The bf16 half rounds to nearest
 * with ties away from zero (ties-to-even without reuse).
 */
#pragma once

#include <mpi.h>

#include <functional>
#include <string>
#include <vector>

#include "optimized/core/tensor.h"
#include "optimized/parallel/pp_placement.h"
#include "optimized/parallel/tp_grid.h"
#include "reference/model/config.h"

namespace pb {

enum class ShardDim { None, Rows, Cols, Block };  // Block: 2D / 2.5D / 3D, (row0, col0) of a grid
enum class ParamPart { Grad, Master };  // which tensor of a parameter gather_global reassembles

class ProcessGrid;

// "model.layers.{l}.block_sparse_moe.experts.{e}.{w1|w2|w3}.weight" -> (l, projection order
// w1, w3, w2, e); layer -1 for every other name (the router is not an expert).
struct ExpertKey {
  int64_t layer = -1, proj = 0, expert = 0;
  auto operator<=>(const ExpertKey&) const = default;
};
ExpertKey expert_key(const std::string& name);
// Whether pipeline rank r holds a parameter: its chunks' layers, the embedding with stage 0,
// the final norm and the LM head with the last stage.
bool stage_holds(const pp::Placement& pl, int r, int64_t L, const std::string& name);

struct ShardedParam {
  std::string name;             // Hugging Face name of the global tensor
  int64_t global_rows = 0, global_cols = 0;
  ShardDim dim = ShardDim::None;
  int64_t row0 = 0, col0 = 0;   // this shard's offset in the global tensor
  bool is_norm = false;         // 1-D in files, replicated, not weight-decayed
  bool is_expert = false;       // an MoE expert's weight (held by one EP rank, not TP-sharded)
  bool replicated = false;      // the same on every TP rank: the norm weights and the MoE routers
  int64_t rows = 0, cols = 0;   // this rank's shard (local shape)
  int64_t offset = 0;           // its first element in the buffers
  // ZeRO-2/3 (per-parameter shards, zero_shards.cc): the parameter padded to a multiple of
  // the shards, and this rank's slice of it: elements [r q, (r+1) q) of the padded tensor,
  // at `slice` in the shard buffers (q = padded / shards).
  int64_t padded = 0, slice = 0, slice_len = 0;
  Tensor w, g, m, v;            // (rows, cols) views into the buffers; w in the model dtype
  Tensor master;                // fp32 master weights (w itself in fp32 training)
};

class DistParams {
 public:
  // keep: which global parameters this rank holds (a pipeline stage's layers, embedding
  // and head); all of them when empty.
  // ep, ep_rank: expert parallelism (this rank holds experts ep_rank*E/ep .. +E/ep - 1).
  DistParams(const ref::ModelConfig& mc, int tp, int tp_rank, uint64_t seed, DType dtype = DType::F32,
             const std::function<bool(const std::string&)>& keep = {}, int ep = 1, int ep_rank = 0,
             bool reuse_fp32_param = false, int shards = 1, int shard_rank = 0, bool offload = false,
             int zero_stage = 1, int64_t bucket_size = 0, int expert_shards = 1, int expert_shard_rank = 0,
             const TpGrid& tp_grid = {});
  // The distributed optimizer (ZeRO-1, Megatron): the buffers in buckets (param_layout.cc:
  // consecutive parameters of bucket_size elements or more, one bucket by default), each
  // padded to a multiple of the shards (DP x CP); this rank owns slice shard_rank of each
  // bucket: its fp32 master (bf16; in fp32 the weights themselves) and Adam's m and v are
  // those slices, concatenated (shard_size() elements); weights and gradients stay whole.
  struct Bucket {
    size_t first = 0, last = 0;        // its parameters [first, last) in buffer order
    int64_t start = 0, padded = 0;     // its place in the buffers
    int64_t q = 0, at = 0;             // one slice (padded / shards) and this rank's in the shard buffers
    int shards = 1, rank = 0;          // over DP x CP, or for the experts over expert_dp
    bool expert = false;
  };
  struct Slice {
    int64_t lo = 0, len = 0, at = 0;   // buffer elements [lo, lo + len) at [at, at + len) of the shard buffers
  };
  // Buckets of params (buffer order): closed once they hold bucket_size elements (0: one
  // bucket), never inside the leading replicated block (norm weights and routers).
  // This rank's parameters in buffer order, shapes only (param_layout.cc).
  static std::vector<ShardedParam> enumerate(const ref::ModelConfig& mc, int tp, int tp_rank,
                                             const std::function<bool(const std::string&)>& keep, int ep, int ep_rank,
                                             const TpGrid& tp_grid = {});
  // Under 2D / 2.5D / 3D TP: the norm weights (their column block, replicated), then every
  // matrix as its block of the grid (param_layout.cc).
  static std::vector<ShardedParam> enumerate_blocks(const ref::ModelConfig& mc, const TpGrid& grid,
                                                    const TpGrid::Coords& c,
                                                    const std::function<bool(const std::string&)>& keep);
  // Whether this rank's copy of the replicated tensors (norm weights, routers) and of the
  // sharded ones counts in the gradient norm and is the one read back: TP rank 0's
  // replicated ones and every sharded one under 1D; under 2D / 2.5D the replicated ones of
  // (i, k) = (0, 0) and the sharded ones of depth 0; under 3D the replicated ones of (i, j) =
  // (0, 0) and every sharded one.
  bool counts_replicated() const { return counts_replicated_; }
  bool counts_sharded() const { return counts_sharded_; }
  // The local experts of each (layer, projection), in buffer order: one (E/EP * out, in)
  // parameter each ("model.layers.{l}.block_sparse_moe.local_experts.{w1|w3|w2}",
  // global_rows x global_cols = out x in of one expert), at its first expert's offset. The
  // MoE MLP acquires and writes them as one (grouped GEMMs); ZeRO-2/3 shard them as one.
  static std::vector<ShardedParam> expert_groups(const std::vector<ShardedParam>& params);
  static std::vector<Bucket> make_buckets(const std::vector<ShardedParam>& params, int64_t bucket_size, int shards);
  // The buffers' buckets: the dense parameters' over (shards, rank), then the experts' (the
  // last block) in one bucket over (expert_shards, expert_rank): Megatron's separate
  // distributed optimizer of the expert-data-parallel group.
  static std::vector<Bucket> layout_buckets(const std::vector<ShardedParam>& params, int64_t bucket_size, int shards,
                                            int rank, int expert_shards, int expert_rank);
  int shards() const { return shards_; }
  int64_t shard_size() const { return shard_; }
  const std::vector<Bucket>& buckets() const { return buckets_; }
  std::vector<Slice> slices() const;  // this rank's, one per bucket
  size_t bucket_of(const ShardedParam& p) const;  // the bucket holding p (an expert group too); throws if none
  Tensor master_of(const Slice& s);   // the fp32 master of a slice
  bool reuses_fp32_param() const { return reuse_; }
  // Reuse-fp32-param with the distributed optimizer: the range's fp32 master is its bf16
  // weights (the high halves) and this buffer of low halves, (s) 16-bit patterns: 2 bytes
  // per element of the range instead of 4 (ops::adamw_reuse steps the pair).
  Tensor& residual_buffer() { return residual_; }
  // ZeRO-Offload (Ren et al., arXiv 2101.06840): the fp32 master, Adam's m and v and a copy
  // of the reduced fp32 gradients of the rank's range (all of it without the distributed
  // optimizer) in host memory (MemCategory::Host); the step runs there and sends the new
  // weights back. Indexed like the master (from the range's start).
  bool offloaded() const { return offload_; }
  // ZeRO-2 (zero_stage 2 over more than one shard): every parameter sharded on its own
  // (ShardedParam::padded, slice); the gradients live in a (shard) fp32 accumulator of the
  // rank's slices, and a parameter's whole gradient p.g exists only while its block's
  // backward writes it (model/zero_grads.h binds it and reduce-scatters it into the slice).
  bool per_param_shards() const { return per_param_; }
  Tensor& grad_accumulator() { return grad_acc_; }
  // The units ZeRO-2/3 shard: every parameter but the experts, and each expert group
  // (their slices follow the dense ones'). Under ZeRO-2/3 an expert's own p.w views its
  // group's whole weights (ZeRO-2) or nothing (ZeRO-3), its p.g nothing.
  std::vector<ShardedParam*> zero_units();
  int64_t replicated_slices() const { return replicated_slices_; }  // the norm weights' and routers': first
  int64_t expert_slices() const { return expert_slices_; }  // where the expert groups' slices begin
  // The shards and this rank's index for a unit: DP x CP, or expert_dp for the experts.
  int shards_of(const ShardedParam& p) const { return p.is_expert ? expert_shards_ : shards_; }
  int rank_of(const ShardedParam& p) const { return p.is_expert ? expert_rank_ : shard_rank_; }
  // This rank's slice of p's fp32 master (bf16: the master buffer; fp32: the weights).
  Tensor master_slice(const ShardedParam& p);
  // ZeRO-3 (zero_stage 3): the weights are the rank's slices too ((sum q) elements, in
  // parameter order); p.w exists only while the parameter provider has it gathered
  // (model/zero_params.h). weight_slice: this rank's slice of p's weights, either way.
  bool params_sharded() const { return params_sharded_; }
  Tensor weight_slice(const ShardedParam& p);
  Tensor& host_grads() { return host_grads_; }
  std::vector<float> master_shard_values() const;  // this rank's range of the fp32 master
  // Before the optimizer updates the master weights: with reuse-fp32-param, back to fp32.
  void master_to_fp32();
  // This rank's fp32 master of p on the host (with reuse-fp32-param rebuilt from its halves).
  std::vector<float> master_values(const ShardedParam& p) const;
  bool has(const std::string& name) const;
  std::vector<ShardedParam>& all() { return params_; }
  const std::vector<ShardedParam>& all() const { return params_; }
  ShardedParam& get(const std::string& name);
  Tensor& grad_buffer() { return grads_; }
  // The whole buffers, for optimizer launches that cover every tensor at once.
  Tensor& weight_buffer() { return weights_; }
  Tensor& master_buffer() { return master_; }  // == weight_buffer() in fp32 training
  // After the optimizer updated the master weights: refresh the model's bf16 weights.
  void master_to_weights();
  Tensor& adam_m_buffer() { return m_; }
  Tensor& adam_v_buffer() { return v_; }
  Tensor replicated_grads();       // the leading block of norm-weight and router grads
  int64_t replicated_numel() const { return replicated_numel_; }
  int64_t norm_numel() const { return norm_numel_; }  // the norm weights: the first part of it
  // The experts' block at the end of the buffers: [expert_offset(), numel).
  int64_t expert_offset() const { return expert_offset_; }
  Tensor expert_grads() { return grads_.view(expert_offset_, {grads_.numel() - expert_offset_}); }
  // One projection ("w1", "w3" or "w2") of the local experts of layer l (expert_groups):
  // w and g are (E/EP * out, in) views of their weights and fp32 gradients where those are
  // whole (ZeRO-2/3: bound while used, model/zero_grads.h and model/zero_params.h).
  ShardedParam& expert_group(int64_t layer, const char* proj);
  ShardedParam& group_of(const ShardedParam& expert);  // the group an expert's weight is in
  void zero_grads();

  // The global tensor of one parameter (its fp32 gradient or master weights), reassembled
  // from the shards, on rank 0 of comm as the reference's row-major [rows, cols]; empty on
  // every other rank. Every rank of comm calls it for every name, in the same order (a
  // rank that does not hold the name takes part too). The shards it knows today are TP's
  // (rows, columns, replicated), read from DP rank 0 of the pipeline stage that holds the
  // parameter, and EP's (an expert from the rank of the first EP group that holds it);
  // ZeRO's DP shards are to be reassembled here as well.
  // Raw MPI (grid.raw_tp() and comm): harness bookkeeping, not in the communication ledger.
  std::vector<float> gather_global(const std::string& name, ParamPart part, ProcessGrid& grid, MPI_Comm comm);

 private:
  std::vector<ShardedParam> params_;
  Tensor weights_, master_, grads_, m_, v_, residual_, host_grads_, grad_acc_;
  std::vector<Bucket> buckets_;
  bool reuse_ = false, offload_ = false, per_param_ = false, params_sharded_ = false;
  int64_t replicated_slices_ = 0, expert_slices_ = 0;
  std::vector<ShardedParam> groups_;  // expert_groups(params_), with storage
  // zero_shards.cc: the per-parameter layout, its initial values, its gather.
  void build_per_param(const std::vector<float>& host, DType dtype);
  std::vector<float> gather_slices(const ShardedParam& p, ParamPart part, ProcessGrid& grid);
  // Reuse-fp32-param: the fp32 values of (n) bf16 high halves and (n) low halves.
  static std::vector<float> join_halves(const Tensor& hi, const Tensor& lo);
  int64_t replicated_numel_ = 0, norm_numel_ = 0, expert_offset_ = 0;
  int shards_ = 1, shard_rank_ = 0, expert_shards_ = 1, expert_rank_ = 0;
  int64_t shard_ = 0;
  bool counts_replicated_ = true, counts_sharded_ = true;
};

}  // namespace pb
