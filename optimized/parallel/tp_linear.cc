/* Column- and row-parallel linears, TP and SP (see tp_linear.h). */
#include "optimized/parallel/tp_linear.h"

#include "optimized/kernels/ops.h"
#include "reference/common/error.h"

namespace pb {

void run_wgrads(WGradQueue& q) {
  for (auto& w : q) ops::linear_backward_weight(*w.dw, w.dy, w.x);
  q.clear();
}

// dW += dy^T x now, or queued for the W pass.
static void weight_grad(Tensor& dw, const Tensor& dy, const Tensor& x, TpContext& ctx) {
  if (ctx.defer)
    ctx.defer->push_back({&dw, dy, x});
  else
    ops::linear_backward_weight(dw, dy, x);
}

Tensor sp_gather(const Tensor& shard, TpContext& ctx) {
  if (!ctx.sp) return shard;
  Tensor full = Tensor::empty({shard.rows() * ctx.tp.size(), shard.cols()}, MemCategory::CommBuffers, shard.dtype());
  ctx.tp.all_gather(full, shard);
  return full;
}

void sp_reduce(Tensor& out, Tensor& partial, TpContext& ctx) {
  if (ctx.sp) {
    ctx.tp.reduce_scatter(out, partial);
  } else {
    ctx.tp.all_reduce(partial);
    ops::copy(out, partial);
  }
}

void column_forward(const std::vector<Tensor*>& ys, const Tensor& x, const std::vector<const Tensor*>& ws,
                    TpContext& ctx) {
  const Tensor x_full = sp_gather(x, ctx);  // (N, in)
  for (size_t i = 0; i < ws.size(); ++i) ops::linear_forward(*ys[i], x_full, *ws[i]);
}

void column_backward(Tensor& dx, const std::vector<Tensor*>& dws, const std::vector<const Tensor*>& dys,
                     const Tensor& x, const std::vector<const Tensor*>& ws, TpContext& ctx) {
  const int64_t N = dys[0]->rows(), in = ws[0]->cols();
  Tensor dx_full = Tensor::empty({N, in}, MemCategory::Workspace, dx.dtype());  // (N, in) partial over TP
  Tensor tmp = Tensor::empty({N, in}, MemCategory::Workspace, dx.dtype());
  for (size_t i = 0; i < ws.size(); ++i) {
    ops::linear_backward_input(i == 0 ? dx_full : tmp, *dys[i], *ws[i]);
    if (i > 0) ops::add_(dx_full, tmp);
  }
  {
    const Tensor x_full = sp_gather(x, ctx);  // SP: the re-gather of the saved shard
    for (size_t i = 0; i < ws.size(); ++i) weight_grad(*dws[i], *dys[i], x_full, ctx);
  }
  sp_reduce(dx, dx_full, ctx);
}

void row_forward(Tensor& y, const Tensor& x, const Tensor& w, TpContext& ctx) {
  Tensor partial = Tensor::empty({x.rows(), w.rows()}, MemCategory::Workspace, y.dtype());  // (N, out)
  ops::linear_forward(partial, x, w);
  sp_reduce(y, partial, ctx);
}

void row_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w, TpContext& ctx) {
  const Tensor dy_full = sp_gather(dy, ctx);  // (N, out)
  ops::linear_backward_input(dx, dy_full, w);
  weight_grad(dw, dy_full, x, ctx);
}

}  // namespace pb
