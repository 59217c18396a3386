/* The model's seams and the strategy chosen for each, once, when the model is built
 * (DESIGN.md, "The decoder as blocks"). A technique installs its strategy here through its
 * registry entry (optimized/train/registry.cc); the blocks only call the interfaces.
 *
 *   seam               interface (file)                        first strategy
 *   TP linear          TpLinear (parallel/tp_linear.h)         all-reduce; SP (sp_linear.h); MC2;
 *                      2D / 2.5D SUMMA (tp2d_linear.h: the linears, the norms, the model's ends)
 *   attention core     AttentionCore (model/attention_core.h)  local
 *   MLP                Mlp (model/mlp.h)                       dense SwiGLU
 *   parameter provider ParamProvider (model/param_provider.h)  resident
 *   activation policy  ActivationPolicy (memory/activation_policy.h)  keep;
 *                      recompute: checkpointed layer groups, a recomputing core (model/recompute.h)
 *   gradient sink      GradSink (parallel/grad_sink.h)         accumulate
 */
#pragma once

#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "optimized/memory/activation_policy.h"
#include "optimized/model/attention_core.h"
#include "optimized/model/mlp.h"
#include "optimized/model/param_provider.h"
#include "optimized/model/zero_grads.h"
#include "optimized/parallel/grad_sink.h"
#include "optimized/parallel/tp_linear.h"

namespace pb {

struct BlockEnv;
class ProcessGrid;

struct Strategies {
  std::function<std::unique_ptr<TpLinear>(ProcessGrid& grid, GradSink& sink)> tp_linear;
  std::function<std::unique_ptr<AttentionCore>(const BlockEnv& env, int64_t layer)> attention_core;
  std::function<std::unique_ptr<Mlp>(const BlockEnv& env, int64_t layer)> mlp;
  std::function<std::unique_ptr<ParamProvider>(DistParams& params, ProcessGrid& grid)> params;
  std::function<std::unique_ptr<ActivationPolicy>()> activations;
  std::function<std::unique_ptr<GradSink>(DistParams& params)> grad_sink;
  // Full recompute: the checkpointed layer groups [first, last) of a chunk's layers [l0, l1)
  // (none by default).
  std::function<std::vector<std::pair<int64_t, int64_t>>(int64_t l0, int64_t l1)> recompute_groups;
  bool swap_attention = false;
  // Where a block's parameter gradients live around its backward (model/zero_grads.h).
  std::function<std::unique_ptr<BlockGrads>(DistParams& params, ProcessGrid& grid, TpLinear& tp)> block_grads;  // the activation policy swaps attention state to the host (its walk)
  // The analytic terms that come with the chosen strategies (written beside their code):
  // the TP linears' communication, and the bytes the attention core and the MLP save per
  // layer and micro-batch.
  std::function<void(const Dims&, Terms&)> tp_linear_terms;
  std::function<int64_t(int64_t N, int64_t tp)> tp_outer_rows;  // rows outside TP regions
  std::function<int64_t(const Dims&)> attention_core_saved, mlp_saved;
  // What the attention core allocates again in its backward (selective recompute: its saved
  // state, recomputed), as activations.
  std::function<int64_t(const Dims&)> attention_core_recomputed;
  // The attention core's own transients at its peak (forward, backward): workspace and
  // communication buffers (ring attention's K, V in flight).
  std::function<BlockWorkspace(const Dims&)> attention_core_workspace, attention_core_comm_buffers;
  // The blocks' workspace with the TP strategy's transients in their linears and norms
  // (1D's: attention_block.h, mlp_block.h, end_blocks.h; 2D's SUMMA: parallel/tp2d_linear.h),
  // and the strategy's own communication buffers in a chunk of layers (with the embedding
  // where first, the head where last) that the chunk walk does not know (2D's broadcasts).
  std::function<BlockWorkspace(const Dims&, const BlockWorkspace& core)> attention_workspace;
  std::function<BlockWorkspace(const Dims&)> mlp_workspace, embedding_workspace, head_workspace;
  std::function<BlockWorkspace(const Dims&, bool first, bool last, bool layers)> tp_comm_buffers;
  // The attention core's own communication, forward and backward (context parallelism's).
  std::function<void(const Dims&, Terms&)> attention_core_terms;
  // all-reduce TP linears, local attention, dense MLP, resident weights, keep, accumulate
  static Strategies defaults();
};

}  // namespace pb
