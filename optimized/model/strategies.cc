/* The default strategy of every seam (see strategies.h). */
#include "optimized/model/strategies.h"

#include "optimized/model/attention_block.h"
#include "optimized/model/end_blocks.h"
#include "optimized/model/mlp_block.h"
#include "optimized/parallel/process_grid.h"

namespace pb {

Strategies Strategies::defaults() {
  Strategies s;
  s.tp_linear = [](ProcessGrid& grid, GradSink& sink) { return std::make_unique<TpAllReduce>(grid.tp(), sink); };
  s.attention_core = [](const BlockEnv& env, int64_t) { return std::make_unique<LocalAttention>(env); };
  s.mlp = [](const BlockEnv& env, int64_t layer) { return std::make_unique<DenseSwiGlu>(env, layer); };
  s.params = [](DistParams&, ProcessGrid&) { return std::make_unique<ResidentParams>(); };
  s.activations = [] { return std::make_unique<KeepActivations>(); };
  s.grad_sink = [](DistParams&) { return std::make_unique<AccumulateGrads>(); };
  s.block_grads = [](DistParams&, ProcessGrid&, TpLinear&) { return std::make_unique<WholeGrads>(); };
  s.recompute_groups = [](int64_t, int64_t) { return std::vector<std::pair<int64_t, int64_t>>{}; };
  s.tp_linear_terms = tp_allreduce_terms;
  s.tp_outer_rows = [](int64_t N, int64_t) { return N; };
  s.attention_core_saved = local_attention_saved_bytes;
  s.mlp_saved = dense_mlp_saved_bytes;
  s.attention_core_recomputed = [](const Dims&) { return int64_t(0); };
  s.attention_core_workspace = [](const Dims&) { return BlockWorkspace{}; };  // the kernels' own (not tracked)
  s.attention_core_comm_buffers = [](const Dims&) { return BlockWorkspace{}; };
  s.attention_core_terms = [](const Dims&, Terms&) {};  // local: none
  s.attention_workspace = attention_block_workspace;
  s.mlp_workspace = mlp_block_workspace;
  s.embedding_workspace = pb::embedding_workspace;
  s.head_workspace = pb::head_workspace;
  s.tp_comm_buffers = [](const Dims&, bool, bool, bool) { return BlockWorkspace{}; };  // the walk's own (SP's copies)
  return s;
}

}  // namespace pb
