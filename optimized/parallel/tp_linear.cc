/* Column- and row-parallel linears and the all-reduce strategy (see tp_linear.h). */
#include "optimized/parallel/tp_linear.h"

#include "optimized/kernels/ops.h"
#include "reference/common/error.h"

namespace pb {

void run_wgrads(WGradQueue& q, GradSink& sink) {
  for (auto& w : q) {
    if (w.groups.empty())
      sink.linear_weight_grad(w.dw, w.dy, w.x);
    else
      ops::grouped_linear_backward_weight(w.dw, w.dy, w.x, w.groups);
  }
  q.clear();
}

void TpLinear::weight_grad(Tensor& dw, const Tensor& dy, const Tensor& x) {
  if (defer_)
    defer_->push_back({dw, dy, x, {}});
  else
    sink_.linear_weight_grad(dw, dy, x);
}

void TpLinear::column_forward(const std::vector<Tensor*>& ys, const Tensor& x, const std::vector<const Tensor*>& ws) {
  const Tensor x_full = gather(x);  // (N, in)
  for (size_t i = 0; i < ws.size(); ++i) ops::linear_forward(*ys[i], x_full, *ws[i]);
}

void TpLinear::column_backward(Tensor& dx, const std::vector<Tensor*>& dws, const std::vector<const Tensor*>& dys,
                               const Tensor& x, const std::vector<const Tensor*>& ws) {
  const int64_t N = dys[0]->rows(), in = ws[0]->cols();
  Tensor dx_full = Tensor::empty({N, in}, MemCategory::Workspace, dx.dtype());  // (N, in) partial over TP
  Tensor tmp = Tensor::empty({N, in}, MemCategory::Workspace, dx.dtype());
  for (size_t i = 0; i < ws.size(); ++i) {
    ops::linear_backward_input(i == 0 ? dx_full : tmp, *dys[i], *ws[i]);
    if (i > 0) ops::add_(dx_full, tmp);
  }
  {
    const Tensor x_full = gather(x);  // SP: the re-gather of the saved shard
    for (size_t i = 0; i < ws.size(); ++i) weight_grad(*dws[i], *dys[i], x_full);
  }
  reduce(dx, dx_full);
}

void TpLinear::row_forward(Tensor& y, const Tensor& x, const Tensor& w) {
  Tensor partial = Tensor::empty({x.rows(), w.rows()}, MemCategory::Workspace, y.dtype());  // (N, out)
  ops::linear_forward(partial, x, w);
  reduce(y, partial);
}

void TpLinear::row_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w) {
  const Tensor dy_full = gather(dy);  // (N, out)
  ops::linear_backward_input(dx, dy_full, w);
  weight_grad(dw, dy_full, x);
}

void TpLinear::norm_forward(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& w, float eps) {
  ops::rmsnorm_forward(y, rstd, x, w, eps);
}

void TpLinear::norm_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& rstd,
                             const Tensor& w) {
  ops::rmsnorm_backward(dx, dw, dy, x, rstd, w);
}

void TpAllReduce::reduce(Tensor& out, Tensor& partial) {
  tp_.all_reduce(partial);
  ops::copy(out, partial);
}

void tp_allreduce_terms(const Dims& d, Terms& t) {
  const int64_t NH = d.e * d.N * d.H;
  const int64_t blocks = 2 * d.Lr - d.Lmoe;  // TP-linear blocks: attention, and the dense MLPs
  t.call("tp", CommOp::AllReduce, Phase::Forward, d.mb * (d.emb + blocks), NH, d.t);
  t.call("tp", CommOp::AllReduce, Phase::Backward, d.mb * (blocks + d.head), NH, d.t);
}

}  // namespace pb
