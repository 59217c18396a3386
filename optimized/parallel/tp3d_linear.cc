/* 3D tensor parallelism's linear (see tp3d_linear.h). */
#include "optimized/parallel/tp3d_linear.h"

#include "optimized/kernels/ops.h"
#include "reference/common/error.h"

namespace pb {

namespace {
void check_cube(const Communicator& input, const Communicator& weight, const Communicator& output) {
  PB_REQUIRE(weight.size() == input.size() && output.size() == input.size(), "linear3d: groups of ", input.size(),
             ", ", weight.size(), " and ", output.size(), " ranks are not a cube");
}
}  // namespace

void linear3d_forward(const std::vector<Tensor*>& ys, const Tensor& x, const std::vector<const Tensor*>& ws,
                      Communicator& input, Communicator& weight, Communicator& output) {
  check_cube(input, weight, output);
  const int q = input.size();
  PB_REQUIRE(ys.size() == ws.size() && !ws.empty(), "linear3d: ", ys.size(), " outputs for ", ws.size(), " weights");
  const Tensor X = all_gathered(input, x);  // (B/q, in/q)
  for (size_t w = 0; w < ws.size(); ++w) {
    const Tensor Wb = all_gathered(weight, *ws[w]);  // (out/q, in/q)
    PB_REQUIRE(X.cols() == Wb.cols() && ys[w]->rows() * q == X.rows() && ys[w]->cols() == Wb.rows(), "linear3d: y ",
               ys[w]->shape_str(), " from x ", x.shape_str(), " and W ", ws[w]->shape_str(), " on a ", q, "^3 grid");
    Tensor part = Tensor::empty({X.rows(), Wb.rows()}, MemCategory::Workspace, ys[w]->dtype());
    ops::linear_forward(part, X, Wb);
    output.reduce_scatter(*ys[w], part);
  }
}

void linear3d_backward(Tensor& dx, const std::vector<Tensor*>& dws, const std::vector<const Tensor*>& dys,
                       const Tensor& x, const std::vector<const Tensor*>& ws, Communicator& input,
                       Communicator& weight, Communicator& output) {
  check_cube(input, weight, output);
  PB_REQUIRE(dws.size() == ws.size() && dys.size() == ws.size() && !ws.empty(), "linear3d: ", dws.size(),
             " weight gradients and ", dys.size(), " output gradients for ", ws.size(), " weights");
  const Tensor X = all_gathered(input, x);  // (B/q, in/q)
  Tensor dX = Tensor::empty({X.rows(), X.cols()}, MemCategory::Workspace, dx.dtype());
  for (size_t w = 0; w < ws.size(); ++w) {
    const Tensor Wb = all_gathered(weight, *ws[w]), dY = all_gathered(output, *dys[w]);  // (out/q, in/q), (B/q, out/q)
    if (w == 0) {
      ops::linear_backward_input(dX, dY, Wb);
    } else {
      Tensor more = Tensor::empty({X.rows(), X.cols()}, MemCategory::Workspace, dx.dtype());
      ops::linear_backward_input(more, dY, Wb);
      ops::add_(dX, more);
    }
    Tensor dW = Tensor::zeros({Wb.rows(), Wb.cols()}, MemCategory::Workspace, dws[w]->dtype());
    ops::linear_backward_weight(dW, dY, X);  // dY^T X: (out/q, in/q)
    Tensor mine = Tensor::empty({dws[w]->rows(), dws[w]->cols()}, MemCategory::Workspace, dws[w]->dtype());
    weight.reduce_scatter(mine, dW);
    ops::add_(*dws[w], mine);
  }
  input.reduce_scatter(dx, dX);
}

void linear3d_terms(const char* input, const char* weight, const char* output, int64_t q, int64_t calls, int64_t B,
                    int64_t in, const std::vector<int64_t>& outs, int64_t e, Terms& t) {
  const int64_t xg = e * (B / q) * (in / q);
  for (const Phase ph : {Phase::Forward, Phase::Backward}) {
    t.call(input, CommOp::AllGather, ph, calls, xg, q);
    for (const int64_t out : outs) t.call(weight, CommOp::AllGather, ph, calls, e * (out / q) * (in / q), q);
  }
  for (const int64_t out : outs) {
    const int64_t yg = e * (B / q) * (out / q);
    t.call(output, CommOp::ReduceScatter, Phase::Forward, calls, yg, q);
    t.call(output, CommOp::AllGather, Phase::Backward, calls, yg, q);
    t.call(weight, CommOp::ReduceScatter, Phase::Backward, calls, Dims::fp * (out / q) * (in / q), q);
  }
  t.call(input, CommOp::ReduceScatter, Phase::Backward, calls, xg, q);
}

}  // namespace pb
