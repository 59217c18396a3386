/* The MC2 linears (see mc2_linear.h). */
#include "optimized/parallel/mc2_linear.h"

#include "optimized/kernels/ops.h"
#include "reference/common/error.h"

namespace pb {

TpMc2::TpMc2(Communicator& tp, GradSink& sink, int64_t chunks) : TpSequenceParallel(tp, sink), chunks_(chunks) {
  PB_REQUIRE(chunks >= 1, "mc2: chunks ", chunks, " (>= 1)");
}

int64_t TpMc2::chunk_rows(int64_t shard_rows) const {
  PB_REQUIRE(shard_rows % chunks_ == 0, "mc2: ", chunks_, " chunks do not divide the ", shard_rows,
             " rows of a sequence-parallel shard");
  return shard_rows / chunks_;
}

Tensor TpMc2::gather_chunks(const Tensor& shard, const OnRows& on_rows) {
  const int64_t n = shard.rows(), q = chunk_rows(n), T = tp_.size();
  Tensor whole = Tensor::empty({n * T, shard.cols()}, MemCategory::CommBuffers, shard.dtype());  // (N, cols)
  auto post = [&](int64_t j) { return tp_.iall_gather_at(whole, shard.slice_rows(j * q, q), j * q); };
  RequestPtr next = post(0);
  for (int64_t j = 0; j < chunks_; ++j) {
    next->wait();
    if (j + 1 < chunks_) next = post(j + 1);  // in flight while chunk j computes
    for (int64_t r = 0; r < T; ++r) on_rows(whole, r * n + j * q, q);
  }
  return whole;
}

// Y_i rows of chunk j = X_full rows of chunk j W_i^T, as they arrive.
void TpMc2::column_forward(const std::vector<Tensor*>& ys, const Tensor& x, const std::vector<const Tensor*>& ws) {
  gather_chunks(x, [&](const Tensor& x_full, int64_t r0, int64_t q) {
    const Tensor xr = x_full.slice_rows(r0, q);  // (q, in)
    for (size_t i = 0; i < ws.size(); ++i) {
      Tensor yr = ys[i]->slice_rows(r0, q);  // (q, out_i/TP)
      ops::linear_forward(yr, xr, *ws[i]);
    }
  });
}

// Chunk j's rows of X W^T into its packed block, reduce-scattered while chunk j+1 computes.
void TpMc2::row_forward(Tensor& y, const Tensor& x, const Tensor& w) {
  const int64_t T = tp_.size(), n = y.rows(), q = chunk_rows(n);
  Tensor packed = Tensor::empty({x.rows(), w.rows()}, MemCategory::Workspace, y.dtype());  // (N, out): k blocks (T q, out)
  std::vector<RequestPtr> pending;
  for (int64_t j = 0; j < chunks_; ++j) {
    const Tensor block = packed.slice_rows(j * T * q, T * q);
    for (int64_t r = 0; r < T; ++r) {
      Tensor pr = block.slice_rows(r * q, q);
      ops::linear_forward(pr, x.slice_rows(r * n + j * q, q), w);
    }
    Tensor yj = y.slice_rows(j * q, q);
    pending.push_back(tp_.ireduce_scatter(yj, block));
  }
  for (auto& p : pending) p->wait();
}

// dY gathered by chunks, dX's rows of each chunk computed as it arrives; dW from the whole.
void TpMc2::row_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w) {
  const Tensor dy_full = gather_chunks(dy, [&](const Tensor& whole, int64_t r0, int64_t q) {
    Tensor dxr = dx.slice_rows(r0, q);  // (q, in/TP)
    ops::linear_backward_input(dxr, whole.slice_rows(r0, q), w);
  });
  weight_grad(dw, dy_full, x);
}

// TransformerEngine's bulk overlap: the re-gather of X under the input gradient, the
// reduce-scatter of the input gradient under the weight gradients.
void TpMc2::column_backward(Tensor& dx, const std::vector<Tensor*>& dws, const std::vector<const Tensor*>& dys,
                            const Tensor& x, const std::vector<const Tensor*>& ws) {
  const int64_t N = dys[0]->rows(), in = ws[0]->cols();
  Tensor dx_full = Tensor::empty({N, in}, MemCategory::Workspace, dx.dtype());  // (N, in) partial over TP
  Tensor tmp = Tensor::empty({N, in}, MemCategory::Workspace, dx.dtype());
  Tensor x_full = Tensor::empty({N, in}, MemCategory::CommBuffers, x.dtype());
  RequestPtr gathered = tp_.iall_gather(x_full, x);
  for (size_t i = 0; i < ws.size(); ++i) {
    ops::linear_backward_input(i == 0 ? dx_full : tmp, *dys[i], *ws[i]);
    if (i > 0) ops::add_(dx_full, tmp);
  }
  gathered->wait();
  RequestPtr reduced = tp_.ireduce_scatter(dx, dx_full);
  for (size_t i = 0; i < ws.size(); ++i) weight_grad(*dws[i], *dys[i], x_full);
  reduced->wait();
}

void mc2_terms(const Dims& d, Terms& t, int64_t chunks) { sp_terms(d, t, chunks); }

}  // namespace pb
