/* 3D tensor parallelism as a TP-linear strategy (see tp3d_strategy.h). */
#include "optimized/parallel/tp3d_strategy.h"

#include <algorithm>

#include "optimized/kernels/ops.h"
#include "optimized/parallel/tp3d_linear.h"
#include "reference/common/error.h"

namespace pb {

TpCube::TpCube(Communicator& tp, GradSink& sink, Communicator& jg, Communicator& ig, Communicator& kg,
               const TpGrid& grid)
    : TpGridLinear(tp, sink, grid, kg, jg, int64_t(grid.q) * grid.q,
                   int64_t(grid.coords(tp.rank()).i) * grid.q + grid.coords(tp.rank()).k),
      j_(jg),
      i_(ig),
      k_(kg) {
  PB_REQUIRE(grid.kind == TpKind::ThreeD && jg.size() == grid.q && ig.size() == grid.q && kg.size() == grid.q,
             "tp 3d: groups of ", jg.size(), ", ", ig.size(), " and ", kg.size(), " ranks do not make a ", grid.q,
             "^3 grid");
}

Tensor TpCube::gather(const Tensor& x) {
  const Tensor mid = all_gathered(j_, x);  // rows block i
  return all_gathered(i_, mid);
}

void TpCube::reduce(Tensor& out, Tensor& partial) {
  Tensor mid = Tensor::empty({out.rows() * grid_.q, out.cols()}, MemCategory::CommBuffers, out.dtype());
  i_.reduce_scatter(mid, partial);  // rows block i, summed over i
  j_.reduce_scatter(out, mid);      // its sub-block j, summed over j
}

void TpCube::sum_replicated_grads(Tensor& g) {
  i_.all_reduce(g);
  j_.all_reduce(g);
}

double TpCube::loss_mean(double local) {
  return k_.all_reduce_scalar(i_.all_reduce_scalar(local)) / (grid_.q * grid_.q);
}

void TpCube::column_forward(const std::vector<Tensor*>& ys, const Tensor& x, const std::vector<const Tensor*>& ws) {
  linear3d_forward(ys, x, ws, j_, i_, k_);
}

void TpCube::column_backward(Tensor& dx, const std::vector<Tensor*>& dws, const std::vector<const Tensor*>& dys,
                             const Tensor& x, const std::vector<const Tensor*>& ws) {
  no_split_backward();
  linear3d_backward(dx, dws, dys, x, ws, j_, i_, k_);
}

void TpCube::row_forward(Tensor& y, const Tensor& x, const Tensor& w) { linear3d_forward({&y}, x, {&w}, k_, i_, j_); }

void TpCube::row_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w) {
  no_split_backward();
  linear3d_backward(dx, {&dw}, {&dy}, x, {&w}, k_, i_, j_);
}

void tp3d_terms(const Dims& d, int64_t q, Terms& t) {
  const char *J = "tp_row", *I = "tp_col", *K = "tp_depth";
  const int64_t N = d.N * q * q, H = d.H * q, fp = Dims::fp;  // the whole sizes (the dims are the rank's)
  const int64_t layers = d.mb * d.Lr;
  linear3d_terms(J, I, K, q, layers, N, H, {d.A * d.D, d.G * d.D, d.G * d.D}, d.e, t);  // q, k, v
  linear3d_terms(K, I, J, q, layers, N, d.A * d.D, {H}, d.e, t);                         // o
  linear3d_terms(J, I, K, q, layers, N, H, {d.F, d.F}, d.e, t);                          // gate, up
  linear3d_terms(K, I, J, q, layers, N, d.F, {H}, d.e, t);                               // down
  linear3d_terms(J, I, K, q, d.mb * d.head, N, H, {d.V}, d.e, t);                        // LM head
  const int64_t norms = 2 * d.Lr + d.head, emb = d.mb * d.emb;
  t.call(K, CommOp::AllReduce, Phase::Forward, d.mb * norms, fp * d.N, q);
  t.call(K, CommOp::AllReduce, Phase::Backward, d.mb * norms, fp * d.N, q);
  t.call(I, CommOp::ReduceScatter, Phase::Forward, emb, d.e * q * q * d.N * d.H, q);
  t.call(J, CommOp::ReduceScatter, Phase::Forward, emb, d.e * q * d.N * d.H, q);
  t.call(J, CommOp::AllGather, Phase::Backward, emb, d.e * q * d.N * d.H, q);
  t.call(I, CommOp::AllGather, Phase::Backward, emb, d.e * q * q * d.N * d.H, q);
  t.call(J, CommOp::AllReduce, Phase::Forward, d.mb * 3 * d.head, fp * d.N, q);
  t.call(I, CommOp::AllReduce, Phase::Forward, d.mb * d.head, 8, q);
  t.call(K, CommOp::AllReduce, Phase::Forward, d.mb * d.head, 8, q);
  for (const char* g : {I, J}) t.call(g, CommOp::AllReduce, Phase::Optimizer, d.steps * d.updates, fp * norms * d.H, q);
}

namespace {

// One 3D linear's backward transient beyond its input and the block's own: dX (e q n in),
// then max(the second product of dX's size, a weight's dW and its share: 4 out in (1 + 1/q)).
int64_t linear_bwd(const Dims& d, int64_t in, int64_t out, bool several) {
  const int64_t e = d.e, q = d.tq, n = d.N, fp = Dims::fp;
  return e * q * n * in + std::max(several ? e * q * n * in : 0, fp * out * in + fp * (out / q) * in);
}
BlockWorkspace attention_workspace(const Dims& d, const BlockWorkspace& core) {
  const int64_t e = d.e, n = d.N, h = d.H, q = d.tq, fp = Dims::fp, aD = d.a * d.D;
  const int64_t qkv = e * n * (d.a + d.g) * d.D;
  return {std::max({fp * n, qkv + e * q * n * aD, qkv + core.forward, qkv + e * n * h + e * q * n * h}),
          std::max({2 * qkv + linear_bwd(d, aD, h, false), 2 * qkv + core.backward,
                    3 * qkv + e * n * h + linear_bwd(d, h, aD, true), 3 * qkv + 2 * e * n * h + fp * n})};
}

BlockWorkspace mlp_workspace(const Dims& d) {
  const int64_t e = d.e, n = d.N, h = d.H, q = d.tq, fp = Dims::fp, f = d.f;
  const int64_t base = e * n * h + 3 * e * n * f;
  return {std::max({fp * n, e * q * n * f, e * n * h + e * q * n * h}),
          std::max({base + linear_bwd(d, f, h, false), base + linear_bwd(d, h, f, true), 2 * e * n * h + fp * n})};
}

BlockWorkspace head_workspace(const Dims& d) {
  const int64_t e = d.e, n = d.N, h = d.H, q = d.tq, fp = Dims::fp, v = d.V / q;
  return {std::max(fp * n, e * q * n * v), e * n * v + 2 * e * n * h + std::max(linear_bwd(d, h, v, false), fp * n)};
}

BlockWorkspace embedding_workspace(const Dims& d) { return {d.e * d.tq * d.tq * d.N * d.H, 0}; }

BlockWorkspace comm_buffers(const Dims& d, bool first, bool last, bool layers) {
  const int64_t e = d.e, q = d.tq, n = d.N, h = d.H, aD = d.a * d.D, f = d.f, v = d.V / q;
  // A 3D linear: forward the gathered x (e q n in) and one weight (e out in); backward its dy too (e q n out).
  auto fwd = [&](int64_t in, int64_t out) { return e * (q * n * in + out * in); };
  auto bwd = [&](int64_t in, int64_t out) { return fwd(in, out) + e * q * n * out; };
  BlockWorkspace cb;
  if (layers)
    cb = {std::max({fwd(h, aD), fwd(aD, h), fwd(h, f), fwd(f, h)}),
          std::max({bwd(h, aD), bwd(aD, h), bwd(h, f), bwd(f, h)})};
  if (last) cb = {std::max(cb.forward, fwd(h, v)), std::max(cb.backward, bwd(h, v))};
  if (first) cb = {std::max(cb.forward, e * q * n * h), std::max(cb.backward, e * (q + q * q) * n * h)};
  return cb;
}

}  // namespace

const GridBlockBytes tp3d_block_bytes = {attention_workspace, mlp_workspace, embedding_workspace, head_workspace,
                                         comm_buffers};

}  // namespace pb
