/* What the grid strategies of multi-dimensional tensor parallelism share (2D / 2.5D:
 * tp2d_linear.h; 3D: tp3d_strategy.h). Outside the linears a rank holds a block of the
 * micro-batch's rows and a block of the hidden width, so
 *   - RMSNorm sums its row statistics over the group splitting the hidden width (stats):
 *       forward  ss_t = sum_h x_th^2,  backward dot_t = sum_h dy_th x_th g_h   (N fp32 each)
 *     then normalises with the whole row's (ops::rmsnorm_forward_stats / _backward_stats);
 *   - the head scores one of loss_blocks row blocks of the micro-batch (its depth layer's
 *     under 2.5D), so its rows weigh 1 / loss_blocks in the loss and its cross-entropy is
 *     vocab-parallel over the group holding that block's vocabulary slices (vocab);
 *   - the norm weights saw only the rank's rows: their gradients are summed before the step;
 *   - the weight gradients are reduced inside the linears' backward: no split backward.
 */
#pragma once

#include "optimized/parallel/tp_grid.h"
#include "optimized/parallel/tp_linear.h"

namespace pb {

class TpGridLinear : public TpLinear {
 public:
  // head_block: the row block the rank's head scores, of loss_blocks (times the depth).
  TpGridLinear(Communicator& tp, GradSink& sink, const TpGrid& grid, Communicator& stats, Communicator& vocab,
               int64_t loss_blocks, int64_t head_block);
  int64_t outer_rows(int64_t N) const override { return N; }
  bool replicated_grads_partial() const override { return true; }
  std::vector<int64_t> head_rows(const std::vector<int64_t>& labels) const override;
  Communicator& vocab_group() override { return vocab_; }
  float loss_share() const override { return 1.0f / float(loss_blocks_); }
  void norm_forward(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& w, float eps) override;
  void norm_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& rstd,
                     const Tensor& w) override;

 protected:
  void no_split_backward() const;  // throws under a split backward's queue
  TpGrid grid_;
  TpGrid::Coords me_;

 private:
  Communicator &stats_, &vocab_;
  int64_t loss_blocks_, head_block_;
};

// A grid strategy's bytes for the analytic walk (strategies.h's hooks): its blocks' workspace
// forward and backward (attention given its core's), and its own communication buffers in a
// chunk of layers (with the embedding where first, the head where last).
struct GridBlockBytes {
  BlockWorkspace (*attention)(const Dims&, const BlockWorkspace& core);
  BlockWorkspace (*mlp)(const Dims&);
  BlockWorkspace (*embedding)(const Dims&);
  BlockWorkspace (*head)(const Dims&);
  BlockWorkspace (*comm_buffers)(const Dims&, bool first, bool last, bool layers);
};

// Block b of n equal blocks of v (a rank's rows of the micro-batch's tokens or labels).
std::vector<int64_t> row_block(const std::vector<int64_t>& v, int64_t n, int64_t b);

}  // namespace pb
