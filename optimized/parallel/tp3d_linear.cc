/* 3D tensor parallelism's linear (see tp3d_linear.h). */
#include "optimized/parallel/tp3d_linear.h"

#include "optimized/kernels/ops.h"
#include "reference/common/error.h"

namespace pb {

namespace {
Tensor gathered(Communicator& g, const Tensor& t) {  // the rows of g's ranks, in order
  Tensor out = Tensor::empty({g.size() * t.rows(), t.cols()}, MemCategory::CommBuffers, t.dtype());
  g.all_gather(out, t);
  return out;
}
}  // namespace

void linear3d_forward(Tensor& y, const Tensor& x, const Tensor& wt, Communicator& input, Communicator& weight,
                      Communicator& output) {
  const int q = input.size();
  PB_REQUIRE(weight.size() == q && output.size() == q, "linear3d: groups of ", q, ", ", weight.size(), " and ",
             output.size(), " ranks are not a cube");
  const Tensor X = gathered(input, x), W = gathered(weight, wt);  // (B/q, in/q), (in/q, out/q)
  PB_REQUIRE(X.cols() == W.rows() && y.rows() * q == X.rows() && y.cols() == W.cols(), "linear3d: y ", y.shape_str(),
             " from x ", x.shape_str(), " and W^T ", wt.shape_str(), " on a ", q, "^3 grid");
  Tensor part = Tensor::empty({X.rows(), W.cols()}, MemCategory::Workspace, y.dtype());
  ops::linear_backward_input(part, X, W);  // X W: (B/q, in/q) (in/q, out/q)
  output.reduce_scatter(y, part);
}

void linear3d_backward(Tensor& dx, Tensor& dwt, const Tensor& dy, const Tensor& x, const Tensor& wt,
                       Communicator& input, Communicator& weight, Communicator& output) {
  const Tensor X = gathered(input, x), W = gathered(weight, wt), dY = gathered(output, dy);
  Tensor dX = Tensor::empty({X.rows(), X.cols()}, MemCategory::Workspace, dx.dtype());
  ops::linear_forward(dX, dY, W);  // dY W^T: (B/q, out/q) (out/q, in/q)
  input.reduce_scatter(dx, dX);
  Tensor dW = Tensor::zeros({W.rows(), W.cols()}, MemCategory::Workspace, dwt.dtype());
  ops::linear_backward_weight(dW, X, dY);  // X^T dY: (in/q, out/q)
  Tensor mine = Tensor::empty({dwt.rows(), dwt.cols()}, MemCategory::Workspace, dwt.dtype());
  weight.reduce_scatter(mine, dW);
  ops::add_(dwt, mine);
}

void linear3d_terms(const char* input, const char* weight, const char* output, int64_t q, int64_t calls, int64_t B,
                    int64_t in, int64_t out, int64_t e, Terms& t) {
  const int64_t xg = e * (B / q) * (in / q), wg = e * (in / q) * (out / q), yg = e * (B / q) * (out / q);
  t.call(input, CommOp::AllGather, Phase::Forward, calls, xg, q);
  t.call(weight, CommOp::AllGather, Phase::Forward, calls, wg, q);
  t.call(output, CommOp::ReduceScatter, Phase::Forward, calls, yg, q);
  t.call(input, CommOp::AllGather, Phase::Backward, calls, xg, q);
  t.call(weight, CommOp::AllGather, Phase::Backward, calls, wg, q);
  t.call(output, CommOp::AllGather, Phase::Backward, calls, yg, q);
  t.call(input, CommOp::ReduceScatter, Phase::Backward, calls, xg, q);
  t.call(weight, CommOp::ReduceScatter, Phase::Backward, calls, Dims::fp * (in / q) * (out / q), q);
}

}  // namespace pb
