/* CPU linear: Y = X W^T, dX = dY W, dW += dY^T X, through Eigen's GEMM on the tensors'
 * memory (no copies). */
#include "optimized/kernels/cpu/cpu_kernels.h"
#include "reference/common/error.h"

namespace pb::cpu {

void linear_forward(Tensor& y, const Tensor& x, const Tensor& w, const Stream&) {
  PB_REQUIRE(x.cols() == w.cols() && y.rows() == x.rows() && y.cols() == w.rows(), "linear_forward: y ", y.shape_str(),
             " = x ", x.shape_str(), " W^T ", w.shape_str());
  as_mat(y).noalias() = as_mat(x) * as_mat(w).transpose();  // (N, out)
}

void linear_backward_input(Tensor& dx, const Tensor& dy, const Tensor& w, const Stream&) {
  PB_REQUIRE(dy.cols() == w.rows() && dx.rows() == dy.rows() && dx.cols() == w.cols(), "linear_backward_input: dx ",
             dx.shape_str(), " = dy ", dy.shape_str(), " W ", w.shape_str());
  as_mat(dx).noalias() = as_mat(dy) * as_mat(w);  // (N, in)
}

void linear_backward_weight(Tensor& dw, const Tensor& dy, const Tensor& x, const Stream&) {
  PB_REQUIRE(dw.rows() == dy.cols() && dw.cols() == x.cols() && dy.rows() == x.rows(), "linear_backward_weight: dW ",
             dw.shape_str(), " += dy^T ", dy.shape_str(), " x ", x.shape_str());
  PB_REQUIRE(dw.dtype() == DType::F32 && dy.dtype() == x.dtype(), "linear_backward_weight: fp32 dW, matching inputs");
  if (dy.dtype() == DType::BF16) {  // matmul-add: bf16 inputs, the product kept in fp32
    Tensor dyf = Tensor::empty(dy.shape(), MemCategory::Workspace, DType::F32, Device::CPU);
    Tensor xf = Tensor::empty(x.shape(), MemCategory::Workspace, DType::F32, Device::CPU);
    cast(dyf, dy);
    cast(xf, x);
    as_mat(dw).noalias() += as_mat(dyf).transpose() * as_mat(xf);
    return;
  }
  as_mat(dw).noalias() += as_mat(dy).transpose() * as_mat(x);  // (out, in)
}

void linear_weight_product(Tensor& p, const Tensor& dy, const Tensor& x, const Stream&) {
  PB_REQUIRE(p.rows() == dy.cols() && p.cols() == x.cols() && dy.rows() == x.rows(), "linear_weight_product: P ",
             p.shape_str(), " = dy^T ", dy.shape_str(), " x ", x.shape_str());
  PB_REQUIRE(p.dtype() == DType::F32 && dy.dtype() == DType::F32 && x.dtype() == DType::F32,
             "linear_weight_product: fp32 operands (ops.h promotes bf16)");
  as_mat(p).noalias() = as_mat(dy).transpose() * as_mat(x);  // (out, in)
}

}  // namespace pb::cpu
