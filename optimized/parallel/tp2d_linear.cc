/* 2D / 2.5D tensor parallelism as a TP-linear strategy (see tp2d_linear.h). */
#include "optimized/parallel/tp2d_linear.h"

#include <algorithm>

#include "optimized/kernels/ops.h"
#include "optimized/parallel/tp2d_summa.h"
#include "reference/common/error.h"

namespace pb {

TpSumma::TpSumma(Communicator& tp, GradSink& sink, Communicator& row, Communicator& col, const TpGrid& grid)
    : TpGridLinear(tp, sink, grid, row, row, grid.q, int64_t(grid.coords(tp.rank()).k) * grid.q + grid.coords(tp.rank()).i),
      row_(row),
      col_(col) {
  PB_REQUIRE(row.size() == grid.q && col.size() == grid.q, "tp 2d: row ", row.size(), " and column ", col.size(),
             " do not make a ", grid.q, " x ", grid.q, " grid");
}

Tensor TpSumma::gather(const Tensor& x) { return all_gathered(col_, x); }

void TpSumma::reduce(Tensor& out, Tensor& partial) { col_.reduce_scatter(out, partial); }

std::vector<int64_t> TpSumma::embedding_rows(const std::vector<int64_t>& tokens) const {
  return row_block(tokens, grid_.d, me_.k);  // the depth layer's
}

double TpSumma::loss_mean(double local) { return col_.all_reduce_scalar(local) / grid_.q; }

void TpSumma::column_forward(const std::vector<Tensor*>& ys, const Tensor& x, const std::vector<const Tensor*>& ws) {
  summa_forward(ys, x, ws, row_, col_);
}

void TpSumma::column_backward(Tensor& dx, const std::vector<Tensor*>& dws, const std::vector<const Tensor*>& dys,
                              const Tensor& x, const std::vector<const Tensor*>& ws) {
  no_split_backward();
  summa_backward(dx, dws, dys, x, ws, row_, col_);
}

void TpSumma::row_forward(Tensor& y, const Tensor& x, const Tensor& w) { summa_forward({&y}, x, {&w}, row_, col_); }

void TpSumma::row_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w) {
  no_split_backward();
  summa_backward(dx, {&dw}, {&dy}, x, {&w}, row_, col_);
}

void tp2d_terms(const Dims& d, int64_t q, Terms& t) {
  const int64_t N = d.N * q, H = d.H * q;  // SUMMA's whole sizes (its blocks are the rank's)
  const int64_t layers = d.mb * d.Lr, fp = Dims::fp;
  summa_terms("tp_row", "tp_col", q, layers, N, H, {d.A * d.D, d.G * d.D, d.G * d.D}, d.e, t);  // q, k, v
  summa_terms("tp_row", "tp_col", q, layers, N, d.A * d.D, {H}, d.e, t);                         // o
  summa_terms("tp_row", "tp_col", q, layers, N, H, {d.F, d.F}, d.e, t);                          // gate, up
  summa_terms("tp_row", "tp_col", q, layers, N, d.F, {H}, d.e, t);                               // down
  summa_terms("tp_row", "tp_col", q, d.mb * d.head, N, H, {d.V}, d.e, t);                        // LM head
  const int64_t norms = 2 * d.Lr + d.head;
  t.call("tp_row", CommOp::AllReduce, Phase::Forward, d.mb * norms, fp * d.N, q);
  t.call("tp_row", CommOp::AllReduce, Phase::Backward, d.mb * norms, fp * d.N, q);
  t.call("tp_col", CommOp::ReduceScatter, Phase::Forward, d.mb * d.emb, d.e * q * d.N * d.H, q);
  t.call("tp_col", CommOp::AllGather, Phase::Backward, d.mb * d.emb, d.e * q * d.N * d.H, q);
  t.call("tp_row", CommOp::AllReduce, Phase::Forward, d.mb * 3 * d.head, fp * d.N, q);
  t.call("tp_col", CommOp::AllReduce, Phase::Forward, d.mb * d.head, 8, q);
  t.call("tp_col", CommOp::AllReduce, d.grad_phase(), d.steps * d.updates, fp * norms * d.H, q);
}

namespace {

BlockWorkspace attention_workspace(const Dims& d, const BlockWorkspace& core) {
  const int64_t e = d.e, n = d.N, h = d.H, q = d.tq, fp = Dims::fp, aD = d.a * d.D;
  const int64_t qkv = e * n * (d.a + d.g) * d.D;
  return {std::max({fp * n, qkv + e * n * aD, qkv + core.forward, qkv + 2 * e * n * h}),
          std::max({2 * qkv + e * q * n * aD + fp * q * h * aD + fp * h * aD, 2 * qkv + core.backward,
                    3 * qkv + e * n * h + e * q * n * h + fp * q * (d.a + 2 * d.g) * d.D * h +
                        std::max(e * n * h, fp * aD * h),
                    3 * qkv + 2 * e * n * h + fp * n})};
}

BlockWorkspace mlp_workspace(const Dims& d) {
  const int64_t e = d.e, n = d.N, h = d.H, q = d.tq, fp = Dims::fp, f = d.f;
  const int64_t base = e * n * h + 3 * e * n * f;
  return {std::max({fp * n, e * n * f, 2 * e * n * h}),
          std::max({base + e * q * n * f + fp * q * h * f + fp * h * f,
                    base + e * q * n * h + 2 * fp * q * f * h + std::max(e * n * h, fp * f * h), 2 * e * n * h + fp * n})};
}

BlockWorkspace head_workspace(const Dims& d) {
  const int64_t e = d.e, n = d.N, h = d.H, q = d.tq, fp = Dims::fp, v = d.V / q;
  return {std::max(fp * n, e * n * v), e * n * v + 2 * e * n * h + std::max(e * q * n * h + fp * q * v * h + fp * v * h, fp * n)};
}

BlockWorkspace embedding_workspace(const Dims& d) { return {d.e * d.tq * d.N * d.H, 0}; }

BlockWorkspace comm_buffers(const Dims& d, bool first, bool last, bool layers) {
  const int64_t e = d.e, n = d.N, h = d.H, aD = d.a * d.D, f = d.f;
  int64_t most = 0;
  if (layers)  // x and q's weight (the largest of q, k, v), o's; gate's, down's
    most = std::max({e * (n * h + aD * h), e * (n * aD + h * aD), e * (n * h + f * h), e * (n * f + h * f)});
  if (last) most = std::max(most, e * (n * h + d.V / d.tq * h));
  return {most, std::max(most, first ? e * d.tq * n * h : 0)};
}

}  // namespace

const GridBlockBytes tp2d_block_bytes = {attention_workspace, mlp_workspace, embedding_workspace, head_workspace,
                                         comm_buffers};

}  // namespace pb
