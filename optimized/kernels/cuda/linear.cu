/* CUDA linear through cuBLAS. Row-major tensors are column-major transposes, so with
 * C = A B in cuBLAS's column-major terms:
 *   Y (N, out) = X W^T   ->  Y^T (out, N) = W^T' X^T : gemm(T, N, out, N, in, W, X)
 *   dX (N, in) = dY W    -> dX^T (in, N) = W' dY^T  : gemm(N, N, in, N, out, W, dY)
 *   dW (out, in) += dY^T X -> dW^T (in, out) += X^T dY : gemm(N, T, in, out, N, X, dY, beta=1)
 * fp32: cublasSgemm on a pedantic handle (no TF32) for tight equivalence with the CPU.
 * bf16 (mixed precision): cublasGemmEx with bf16 A and B, fp32 accumulation
 * (CUBLAS_COMPUTE_32F) on a default-math handle, so tensor cores are used; Y and dX are
 * stored as bf16 (the fp32 result rounded), dW stays an fp32 main grad (the matmul-add of
 * gradient-accumulation fusion, Megatron-LM: Narayanan et al., arXiv 2104.04473).
 * The handles are bound to the op's stream (cublasSetStream) before each call.
 * Edges (checks::gemm_plan): an empty output launches nothing; an inner dimension of 0
 * (k = in, out or N) never reaches cuBLAS (which refuses its leading dimension 0): an
 * overwritten output is set to 0, an accumulated dW stays as it is.
 */
#include "optimized/kernels/cuda/common.cuh"
#include "optimized/kernels/cuda/cuda_kernels.h"
#include "optimized/kernels/shape_checks.h"
#include "reference/common/error.h"

namespace pb::cuda {

cublasHandle_t cublas(cudaStream_t stream) {
  static cublasHandle_t h = [] {
    cublasHandle_t handle;
    CUBLAS_CHECK(cublasCreate(&handle));
    CUBLAS_CHECK(cublasSetMathMode(handle, CUBLAS_PEDANTIC_MATH));  // no TF32, no reduced precision
    return handle;
  }();
  CUBLAS_CHECK(cublasSetStream(h, stream));
  return h;
}

cublasHandle_t cublas_bf16(cudaStream_t stream) {
  static cublasHandle_t h = [] {
    cublasHandle_t handle;
    CUBLAS_CHECK(cublasCreate(&handle));
    CUBLAS_CHECK(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH));  // tensor cores; compute type fp32 per call
    return handle;
  }();
  CUBLAS_CHECK(cublasSetStream(h, stream));
  return h;
}

namespace {

// C (m, n) = A op(a) B op(b) + beta C in cuBLAS's column-major terms; A and B bf16, fp32
// accumulation, C of type c_type (bf16 outputs, or the fp32 main grad with beta = 1).
void gemm_bf16(cudaStream_t s, cublasOperation_t op_a, cublasOperation_t op_b, int m, int n, int k, const void* a,
               int lda, const void* b, int ldb, float beta, void* c, cudaDataType_t c_type, int ldc) {
  const float one = 1.0f;
  CUBLAS_CHECK(cublasGemmEx(cublas_bf16(s), op_a, op_b, m, n, k, &one, a, CUDA_R_16BF, lda, b, CUDA_R_16BF, ldb, &beta,
                            c, c_type, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// Every operand bf16, or every operand fp32; anything else is an error (ops.h promotes
// mixed operands before they get here).
bool all_bf16(const Tensor& a, const Tensor& b, const Tensor& c, const char* op) {
  const bool bf = a.dtype() == DType::BF16;
  PB_REQUIRE(b.dtype() == a.dtype() && c.dtype() == a.dtype(), op, ": operands of one dtype expected, got ",
             dtype_name(a.dtype()), ", ", dtype_name(b.dtype()), ", ", dtype_name(c.dtype()));
  return bf;
}

// gemm_runs (common.cuh) with the dims checked against cuBLAS's int.
bool plan(const char* op, int64_t m, int64_t n, int64_t k, float beta, Tensor& c, cudaStream_t s) {
  checks::blas_dims(op, {m, n, k});
  return gemm_runs(m, n, k, beta, c.raw(), size_t(c.bytes()), s);
}

}  // namespace

void linear_forward(Tensor& y, const Tensor& x, const Tensor& w, const Stream& stream) {
  PB_REQUIRE(x.cols() == w.cols() && y.rows() == x.rows() && y.cols() == w.rows(), "linear_forward: y ", y.shape_str(),
             " = x ", x.shape_str(), " W^T ", w.shape_str());
  const int N = int(x.rows()), in = int(w.cols()), out = int(w.rows());
  const float one = 1.0f, zero = 0.0f;
  const bool bf = all_bf16(y, x, w, "linear_forward");
  if (!plan("linear_forward", w.rows(), x.rows(), w.cols(), 0.0f, y, cu(stream))) return;
  if (bf) return gemm_bf16(cu(stream), CUBLAS_OP_T, CUBLAS_OP_N, out, N, in, w.raw(), in, x.raw(), in, 0.0f, y.raw(), CUDA_R_16BF, out);
  CUBLAS_CHECK(cublasSgemm(cublas(cu(stream)), CUBLAS_OP_T, CUBLAS_OP_N, out, N, in, &one, w.f32(), in, x.f32(), in, &zero,
                           y.f32(), out));
}

void linear_backward_input(Tensor& dx, const Tensor& dy, const Tensor& w, const Stream& stream) {
  PB_REQUIRE(dy.cols() == w.rows() && dx.rows() == dy.rows() && dx.cols() == w.cols(), "linear_backward_input: dx ",
             dx.shape_str(), " = dy ", dy.shape_str(), " W ", w.shape_str());
  const int N = int(dy.rows()), in = int(w.cols()), out = int(w.rows());
  const float one = 1.0f, zero = 0.0f;
  const bool bf = all_bf16(dx, dy, w, "linear_backward_input");
  if (!plan("linear_backward_input", w.cols(), dy.rows(), w.rows(), 0.0f, dx, cu(stream))) return;
  if (bf) return gemm_bf16(cu(stream), CUBLAS_OP_N, CUBLAS_OP_N, in, N, out, w.raw(), in, dy.raw(), out, 0.0f, dx.raw(), CUDA_R_16BF, in);
  CUBLAS_CHECK(cublasSgemm(cublas(cu(stream)), CUBLAS_OP_N, CUBLAS_OP_N, in, N, out, &one, w.f32(), in, dy.f32(), out, &zero,
                           dx.f32(), in));
}

void linear_backward_weight(Tensor& dw, const Tensor& dy, const Tensor& x, const Stream& stream) {
  PB_REQUIRE(dw.rows() == dy.cols() && dw.cols() == x.cols() && dy.rows() == x.rows(), "linear_backward_weight: dW ",
             dw.shape_str(), " += dy^T ", dy.shape_str(), " x ", x.shape_str());
  PB_REQUIRE(dw.dtype() == DType::F32 && dy.dtype() == x.dtype(), "linear_backward_weight: fp32 dW, matching inputs");
  const int N = int(x.rows()), in = int(x.cols()), out = int(dy.cols());
  const float one = 1.0f;
  if (!plan("linear_backward_weight", x.cols(), dy.cols(), x.rows(), 1.0f, dw, cu(stream))) return;
  if (dy.dtype() == DType::BF16)  // matmul-add: bf16 inputs, fp32 product accumulated into main_grad
    return gemm_bf16(cu(stream), CUBLAS_OP_N, CUBLAS_OP_T, in, out, N, x.raw(), in, dy.raw(), out, 1.0f, dw.raw(), CUDA_R_32F, in);
  CUBLAS_CHECK(cublasSgemm(cublas(cu(stream)), CUBLAS_OP_N, CUBLAS_OP_T, in, out, N, &one, x.f32(), in, dy.f32(), out, &one,
                           dw.f32(), in));
}

void linear_weight_product(Tensor& p, const Tensor& dy, const Tensor& x, const Stream& stream) {
  PB_REQUIRE(p.rows() == dy.cols() && p.cols() == x.cols() && dy.rows() == x.rows(), "linear_weight_product: P ",
             p.shape_str(), " = dy^T ", dy.shape_str(), " x ", x.shape_str());
  const int N = int(x.rows()), in = int(x.cols()), out = int(dy.cols());
  const float one = 1.0f, zero = 0.0f;
  const bool bf = all_bf16(p, dy, x, "linear_weight_product");
  if (!plan("linear_weight_product", x.cols(), dy.cols(), x.rows(), 0.0f, p, cu(stream))) return;
  if (bf) return gemm_bf16(cu(stream), CUBLAS_OP_N, CUBLAS_OP_T, in, out, N, x.raw(), in, dy.raw(), out, 0.0f, p.raw(), CUDA_R_16BF, in);
  CUBLAS_CHECK(cublasSgemm(cublas(cu(stream)), CUBLAS_OP_N, CUBLAS_OP_T, in, out, N, &one, x.f32(), in, dy.f32(), out, &zero,
                           p.f32(), in));
}

}  // namespace pb::cuda
