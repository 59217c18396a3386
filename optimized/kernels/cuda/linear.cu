/* CUDA linear through cuBLAS (fp32, TF32 off for tight equivalence). Row-major
 * tensors are column-major transposes, so with C = A B in cuBLAS's column-major terms:
 *   Y (N, out) = X W^T   ->  Y^T (out, N) = W^T' X^T : gemm(T, N, out, N, in, W, X)
 *   dX (N, in) = dY W    -> dX^T (in, N) = W' dY^T  : gemm(N, N, in, N, out, W, dY)
 *   dW (out, in) += dY^T X -> dW^T (in, out) += X^T dY : gemm(N, T, in, out, N, X, dY, beta=1)
 */
#include "optimized/kernels/cuda/common.cuh"
#include "optimized/kernels/cuda/cuda_kernels.h"
#include "reference/common/error.h"

namespace pb::cuda {

cublasHandle_t cublas() {
  static cublasHandle_t h = [] {
    cublasHandle_t handle;
    CUBLAS_CHECK(cublasCreate(&handle));
    CUBLAS_CHECK(cublasSetMathMode(handle, CUBLAS_PEDANTIC_MATH));  // no TF32, no reduced precision
    return handle;
  }();
  return h;
}

void linear_forward(Tensor& y, const Tensor& x, const Tensor& w) {
  PB_REQUIRE(x.cols() == w.cols() && y.rows() == x.rows() && y.cols() == w.rows(), "linear_forward: y ", y.shape_str(),
             " = x ", x.shape_str(), " W^T ", w.shape_str());
  const int N = int(x.rows()), in = int(w.cols()), out = int(w.rows());
  const float one = 1.0f, zero = 0.0f;
  if (N == 0 || out == 0) return;
  CUBLAS_CHECK(cublasSgemm(cublas(), CUBLAS_OP_T, CUBLAS_OP_N, out, N, in, &one, w.f32(), in, x.f32(), in, &zero,
                           y.f32(), out));
}

void linear_backward_input(Tensor& dx, const Tensor& dy, const Tensor& w) {
  PB_REQUIRE(dy.cols() == w.rows() && dx.rows() == dy.rows() && dx.cols() == w.cols(), "linear_backward_input: dx ",
             dx.shape_str(), " = dy ", dy.shape_str(), " W ", w.shape_str());
  const int N = int(dy.rows()), in = int(w.cols()), out = int(w.rows());
  const float one = 1.0f, zero = 0.0f;
  if (N == 0 || in == 0) return;
  CUBLAS_CHECK(cublasSgemm(cublas(), CUBLAS_OP_N, CUBLAS_OP_N, in, N, out, &one, w.f32(), in, dy.f32(), out, &zero,
                           dx.f32(), in));
}

void linear_backward_weight(Tensor& dw, const Tensor& dy, const Tensor& x) {
  PB_REQUIRE(dw.rows() == dy.cols() && dw.cols() == x.cols() && dy.rows() == x.rows(), "linear_backward_weight: dW ",
             dw.shape_str(), " += dy^T ", dy.shape_str(), " x ", x.shape_str());
  PB_REQUIRE(dw.dtype() == DType::F32 && dy.dtype() == x.dtype(), "linear_backward_weight: fp32 dW, matching inputs");
  const int N = int(x.rows()), in = int(x.cols()), out = int(dy.cols());
  const float one = 1.0f;
  if (in == 0 || out == 0) return;
  if (dy.dtype() == DType::BF16) {  // matmul-add: bf16 inputs, fp32 product accumulated into main_grad
    CUBLAS_CHECK(cublasGemmEx(cublas(), CUBLAS_OP_N, CUBLAS_OP_T, in, out, N, &one, x.raw(), CUDA_R_16BF, in, dy.raw(),
                              CUDA_R_16BF, out, &one, dw.raw(), CUDA_R_32F, in, CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT));
    return;
  }
  CUBLAS_CHECK(cublasSgemm(cublas(), CUBLAS_OP_N, CUBLAS_OP_T, in, out, N, &one, x.f32(), in, dy.f32(), out, &one,
                           dw.f32(), in));
}

}  // namespace pb::cuda
