/* The grid strategies' shared part (see tp_grid_linear.h). */
#include "optimized/parallel/tp_grid_linear.h"

#include "optimized/kernels/ops.h"
#include "reference/common/error.h"

namespace pb {

std::vector<int64_t> row_block(const std::vector<int64_t>& v, int64_t n, int64_t b) {
  PB_REQUIRE(int64_t(v.size()) % n == 0, "tp grid: ", v.size(), " token rows do not split in ", n, " blocks");
  const int64_t len = int64_t(v.size()) / n;
  return {v.begin() + b * len, v.begin() + (b + 1) * len};
}

TpGridLinear::TpGridLinear(Communicator& tp, GradSink& sink, const TpGrid& grid, Communicator& stats,
                           Communicator& vocab, int64_t loss_blocks, int64_t head_block)
    : TpLinear(tp, sink),
      grid_(grid),
      me_(grid.coords(tp.rank())),
      stats_(stats),
      vocab_(vocab),
      loss_blocks_(loss_blocks),
      head_block_(head_block) {
  PB_REQUIRE(tp.size() == grid.size(), "tp grid: ", tp.size(), " tp ranks for a grid of ", grid.size());
}

std::vector<int64_t> TpGridLinear::head_rows(const std::vector<int64_t>& labels) const {
  return row_block(labels, loss_blocks_ * grid_.d, head_block_);
}

void TpGridLinear::norm_forward(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& w, float eps) {
  Tensor ss = Tensor::empty({x.rows()}, MemCategory::Workspace, DType::F32);  // (N) the row's sum of squares
  ops::row_dot(ss, x, x, Tensor());
  stats_.all_reduce(ss);
  ops::rmsnorm_forward_stats(y, rstd, x, w, ss, x.cols() * stats_.size(), eps);
}

void TpGridLinear::norm_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& rstd,
                                 const Tensor& w) {
  Tensor dot = Tensor::empty({x.rows()}, MemCategory::Workspace, DType::F32);  // (N) sum_h dy x g
  ops::row_dot(dot, dy, x, w);
  stats_.all_reduce(dot);
  ops::rmsnorm_backward_stats(dx, dw, dy, x, rstd, w, dot, x.cols() * stats_.size());
}

void TpGridLinear::no_split_backward() const {
  PB_REQUIRE(!defer_, "tp grid: the weight gradients are reduced inside the linears' backward; no split backward");
}

}  // namespace pb
