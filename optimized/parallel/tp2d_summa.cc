/* SUMMA's forward and backward (see tp2d_summa.h). */
#include "optimized/parallel/tp2d_summa.h"

#include "optimized/kernels/ops.h"
#include "reference/common/error.h"

namespace pb {

namespace {
// The block of `mine`'s shape that rank `root` of g broadcasts (its own when it is root).
Tensor broadcast_from(Communicator& g, const Tensor& mine, int root) {
  Tensor b = Tensor::empty({mine.rows(), mine.cols()}, MemCategory::CommBuffers, mine.dtype());
  if (g.rank() == root) ops::copy(b, mine);
  g.broadcast(b, root);
  return b;
}
}  // namespace

void summa_forward(Tensor& y, const Tensor& x, const Tensor& w, Communicator& row, Communicator& col) {
  const int q = row.size();
  PB_REQUIRE(col.size() == q, "summa: a ", q, " x ", col.size(), " grid is not square");
  PB_REQUIRE(y.rows() == x.rows() && y.cols() == w.rows() && x.cols() == w.cols(), "summa: y ", y.shape_str(),
             " = x ", x.shape_str(), " w^T ", w.shape_str());
  ops::zero(y);
  Tensor part = Tensor::empty({y.rows(), y.cols()}, MemCategory::Workspace, y.dtype());
  for (int t = 0; t < q; ++t) {
    const Tensor xt = broadcast_from(row, x, t), wt = broadcast_from(col, w, t);
    ops::linear_forward(part, xt, wt);
    ops::add_(y, part);
  }
}

void summa_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w, Communicator& row,
                    Communicator& col) {
  const int q = row.size();
  PB_REQUIRE(col.size() == q, "summa: a ", q, " x ", col.size(), " grid is not square");
  const int64_t n = x.rows(), in = x.cols(), out = w.rows();
  Tensor P = Tensor::empty({q * n, in}, MemCategory::Workspace, dx.dtype());     // [P_0; ..; P_{q-1}]
  Tensor Q = Tensor::zeros({q * out, in}, MemCategory::Workspace, dw.dtype());   // [Q_0; ..; Q_{q-1}]
  for (int t = 0; t < q; ++t) {
    const Tensor wt = broadcast_from(col, w, t), xt = broadcast_from(row, x, t);
    Tensor pt = P.view(t * n * in, {n, in}), qt = Q.view(t * out * in, {out, in});
    ops::linear_backward_input(pt, dy, wt);
    ops::linear_backward_weight(qt, dy, xt);
  }
  row.reduce_scatter(dx, P);
  Tensor mine = Tensor::empty({out, in}, MemCategory::Workspace, dw.dtype());
  col.reduce_scatter(mine, Q);
  ops::add_(dw, mine);
}

void summa_terms(const char* row, const char* col, int64_t q, int64_t calls, int64_t N, int64_t in, int64_t out,
                 int64_t e, Terms& t) {
  const int64_t xb = e * (N / q) * (in / q), wb = e * (out / q) * (in / q);
  t.call(row, CommOp::Broadcast, Phase::Forward, calls * q, xb, q);
  t.call(col, CommOp::Broadcast, Phase::Forward, calls * q, wb, q);
  t.call(row, CommOp::Broadcast, Phase::Backward, calls * q, xb, q);
  t.call(col, CommOp::Broadcast, Phase::Backward, calls * q, wb, q);
  t.call(row, CommOp::ReduceScatter, Phase::Backward, calls, q * xb, q);
  t.call(col, CommOp::ReduceScatter, Phase::Backward, calls, Dims::fp * out * in / q, q);
}

}  // namespace pb
