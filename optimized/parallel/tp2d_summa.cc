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

void summa_forward(const std::vector<Tensor*>& ys, const Tensor& x, const std::vector<const Tensor*>& ws,
                   Communicator& row, Communicator& col) {
  const int q = row.size();
  PB_REQUIRE(col.size() == q, "summa: a ", q, " x ", col.size(), " grid is not square");
  PB_REQUIRE(ys.size() == ws.size() && !ws.empty(), "summa: ", ys.size(), " outputs for ", ws.size(), " weights");
  for (size_t w = 0; w < ws.size(); ++w) {
    PB_REQUIRE(ys[w]->rows() == x.rows() && ys[w]->cols() == ws[w]->rows() && x.cols() == ws[w]->cols(), "summa: y ",
               ys[w]->shape_str(), " = x ", x.shape_str(), " w^T ", ws[w]->shape_str());
    ops::zero(*ys[w]);
  }
  for (int t = 0; t < q; ++t) {
    const Tensor xt = broadcast_from(row, x, t);
    for (size_t w = 0; w < ws.size(); ++w) {
      const Tensor wt = broadcast_from(col, *ws[w], t);
      Tensor part = Tensor::empty({x.rows(), ws[w]->rows()}, MemCategory::Workspace, ys[w]->dtype());
      ops::linear_forward(part, xt, wt);
      ops::add_(*ys[w], part);
    }
  }
}

void summa_backward(Tensor& dx, const std::vector<Tensor*>& dws, const std::vector<const Tensor*>& dys,
                    const Tensor& x, const std::vector<const Tensor*>& ws, Communicator& row, Communicator& col) {
  const int q = row.size();
  PB_REQUIRE(col.size() == q, "summa: a ", q, " x ", col.size(), " grid is not square");
  PB_REQUIRE(dws.size() == ws.size() && dys.size() == ws.size() && !ws.empty(), "summa: ", dws.size(),
             " weight gradients and ", dys.size(), " output gradients for ", ws.size(), " weights");
  const int64_t n = x.rows(), in = x.cols();
  PB_REQUIRE(dx.rows() == n && dx.cols() == in, "summa: dx ", dx.shape_str(), " for x ", x.shape_str());
  Tensor P = Tensor::empty({q * n, in}, MemCategory::Workspace, dx.dtype());  // [P_0; ..; P_{q-1}]
  std::vector<Tensor> Q;  // per weight [Q_0; ..; Q_{q-1}], fp32 like the gradients
  for (size_t w = 0; w < ws.size(); ++w)
    Q.push_back(Tensor::zeros({q * ws[w]->rows(), in}, MemCategory::Workspace, dws[w]->dtype()));
  for (int t = 0; t < q; ++t) {
    const Tensor xt = broadcast_from(row, x, t);
    Tensor pt = P.view(t * n * in, {n, in});
    for (size_t w = 0; w < ws.size(); ++w) {
      const int64_t out = ws[w]->rows();
      const Tensor wt = broadcast_from(col, *ws[w], t);
      if (w == 0) {
        ops::linear_backward_input(pt, *dys[w], wt);
      } else {
        Tensor more = Tensor::empty({n, in}, MemCategory::Workspace, dx.dtype());
        ops::linear_backward_input(more, *dys[w], wt);
        ops::add_(pt, more);
      }
      Tensor qt = Q[w].view(t * out * in, {out, in});
      ops::linear_backward_weight(qt, *dys[w], xt);
    }
  }
  row.reduce_scatter(dx, P);
  for (size_t w = 0; w < ws.size(); ++w) {
    Tensor mine = Tensor::empty({ws[w]->rows(), in}, MemCategory::Workspace, dws[w]->dtype());
    col.reduce_scatter(mine, Q[w]);
    ops::add_(*dws[w], mine);
  }
}

void summa_forward(Tensor& y, const Tensor& x, const Tensor& w, Communicator& row, Communicator& col) {
  summa_forward({&y}, x, {&w}, row, col);
}

void summa_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w, Communicator& row,
                    Communicator& col) {
  summa_backward(dx, {&dw}, {&dy}, x, {&w}, row, col);
}

void summa_terms(const char* row, const char* col, int64_t q, int64_t calls, int64_t N, int64_t in,
                 const std::vector<int64_t>& outs, int64_t e, Terms& t) {
  const int64_t xb = e * (N / q) * (in / q);
  for (const Phase ph : {Phase::Forward, Phase::Backward}) {
    t.call(row, CommOp::Broadcast, ph, calls * q, xb, q);
    for (const int64_t out : outs) t.call(col, CommOp::Broadcast, ph, calls * q, e * (out / q) * (in / q), q);
  }
  t.call(row, CommOp::ReduceScatter, Phase::Backward, calls, q * xb, q);
  for (const int64_t out : outs) t.call(col, CommOp::ReduceScatter, Phase::Backward, calls, Dims::fp * out * in / q, q);
}

}  // namespace pb
