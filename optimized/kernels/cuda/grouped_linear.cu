/* CUDA grouped linear (MoE experts, Megatron-LM's GroupedMLP with each expert's weight in
 * the linear layout) through cuBLAS: one GEMM per non-empty group on the op's stream (a
 * first version; one grouped launch, cublasGemmGroupedBatchedEx or an own kernel, is the
 * performance work's job). x (M, in) rows sorted by group, w (E, out, in), group sizes
 * (E) summing to M (checked by the dispatch, kernels/dispatch_grouped.cc); group i is the
 * rows r_i .. r_i + n_i - 1. Row-major -> column-major as in linear.cu:
 *   y_i (n, out) = x_i w_i^T      -> y^T = w^T' x^T  : gemm(T, N, out, n, in, w_i, x_i)
 *   dx_i (n, in) = dy_i w_i       -> dx^T = w' dy^T  : gemm(N, N, in, n, out, w_i, dy_i)
 *   dW_i (out, in) += dy_i^T x_i  -> dW^T += x^T dy' : gemm(N, T, in, out, n, x_i, dy_i, beta 1)
 * fp32: cublasSgemm on the pedantic handle (no TF32), as linear. bf16 (mixed precision):
 * cublasGemmEx with bf16 operands and fp32 accumulation; y and dx stored as bf16 (the fp32
 * result rounded once), dW an fp32 main grad accumulated with beta = 1.
 * A zero inner dimension (in = 0 forward, out = 0 for dx) writes zeros without cuBLAS; empty
 * groups and zero-sized outputs launch nothing. */
#include <climits>

#include "optimized/kernels/cuda/common.cuh"
#include "optimized/kernels/cuda/cuda_kernels.h"
#include "reference/common/error.h"

namespace pb::cuda {

namespace {

// Element i of a tensor of either dtype, as a byte address.
const void* at(const Tensor& t, int64_t i) {
  return static_cast<const char*>(t.raw()) + i * int64_t(dtype_bytes(t.dtype()));
}
void* at(Tensor& t, int64_t i) { return static_cast<char*>(t.raw()) + i * int64_t(dtype_bytes(t.dtype())); }

// C (m, n) = op_a(A) op_b(B) + beta C in cuBLAS's column-major terms. A and B of dtype ab:
// fp32 (then C fp32: cublasSgemm, pedantic) or bf16 (cublasGemmEx, fp32 accumulation, C
// bf16 for y / dx or fp32 for the main grad).
void gemm(cudaStream_t s, cublasOperation_t op_a, cublasOperation_t op_b, int m, int n, int k, DType ab, const void* a,
          int lda, const void* b, int ldb, float beta, DType c_dtype, void* c, int ldc) {
  const float one = 1.0f;
  if (ab == DType::F32) {
    CUBLAS_CHECK(cublasSgemm(cublas(s), op_a, op_b, m, n, k, &one, static_cast<const float*>(a), lda,
                             static_cast<const float*>(b), ldb, &beta, static_cast<float*>(c), ldc));
    return;
  }
  const cudaDataType_t c_type = c_dtype == DType::F32 ? CUDA_R_32F : CUDA_R_16BF;
  CUBLAS_CHECK(cublasGemmEx(cublas_bf16(s), op_a, op_b, m, n, k, &one, a, CUDA_R_16BF, lda, b, CUDA_R_16BF, ldb, &beta, c,
                            c_type, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// y, x, w of one dtype (the dispatch promotes mixed operands); the dims fit cuBLAS's int.
void require_one_dtype(const char* op, const Tensor& a, const Tensor& b, const Tensor& c) {
  PB_REQUIRE(b.dtype() == a.dtype() && c.dtype() == a.dtype(), op, ": operands of one dtype expected, got ",
             dtype_name(a.dtype()), ", ", dtype_name(b.dtype()), ", ", dtype_name(c.dtype()));
}
void require_int_dims(const char* op, const Tensor& w, const std::vector<int64_t>& sizes) {
  bool fits = w.dim(1) <= INT_MAX && w.dim(2) <= INT_MAX;
  for (int64_t n : sizes) fits = fits && n <= INT_MAX;
  PB_REQUIRE(fits, op, ": a group of ", w.shape_str(), " exceeds cuBLAS's int dimensions");
}

// Rows r .. r + n - 1 of a (M, cols) tensor set to zero (a GEMM with no inner dimension).
void zero_rows(Tensor& t, int64_t r, int64_t n, int64_t cols, cudaStream_t s) {
  CUDA_CHECK(cudaMemsetAsync(at(t, r * cols), 0, size_t(n * cols) * dtype_bytes(t.dtype()), s));
}

}  // namespace

void grouped_linear_forward(Tensor& y, const Tensor& x, const Tensor& w, const std::vector<int64_t>& sizes,
                            const Stream& stream) {
  require_one_dtype("grouped_linear_forward", y, x, w);
  require_int_dims("grouped_linear_forward", w, sizes);
  const int out = int(w.dim(1)), in = int(w.dim(2));
  const cudaStream_t s = cu(stream);
  int64_t r = 0;
  for (size_t e = 0; e < sizes.size(); ++e) {
    const int n = int(sizes[e]);
    if (n && out && !in) zero_rows(y, r, n, out, s);
    if (n && out && in)  // (n, out)
      gemm(s, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, x.dtype(), at(w, int64_t(e) * out * in), in, at(x, r * in), in,
           0.0f, y.dtype(), at(y, r * out), out);
    r += n;
  }
}

void grouped_linear_backward_input(Tensor& dx, const Tensor& dy, const Tensor& w, const std::vector<int64_t>& sizes,
                                   const Stream& stream) {
  require_one_dtype("grouped_linear_backward_input", dx, dy, w);
  require_int_dims("grouped_linear_backward_input", w, sizes);
  const int out = int(w.dim(1)), in = int(w.dim(2));
  const cudaStream_t s = cu(stream);
  int64_t r = 0;
  for (size_t e = 0; e < sizes.size(); ++e) {
    const int n = int(sizes[e]);
    if (n && in && !out) zero_rows(dx, r, n, in, s);
    if (n && in && out)  // (n, in)
      gemm(s, CUBLAS_OP_N, CUBLAS_OP_N, in, n, out, dy.dtype(), at(w, int64_t(e) * out * in), in, at(dy, r * out), out,
           0.0f, dx.dtype(), at(dx, r * in), in);
    r += n;
  }
}

void grouped_linear_backward_weight(Tensor& dw, const Tensor& dy, const Tensor& x, const std::vector<int64_t>& sizes,
                                    const Stream& stream) {
  PB_REQUIRE(dw.dtype() == DType::F32 && dy.dtype() == x.dtype(),
             "grouped_linear_backward_weight: fp32 dw, dy and x of one dtype");
  require_int_dims("grouped_linear_backward_weight", dw, sizes);
  const int out = int(dw.dim(1)), in = int(dw.dim(2));
  const cudaStream_t s = cu(stream);
  int64_t r = 0;
  for (size_t e = 0; e < sizes.size(); ++e) {
    const int n = int(sizes[e]);
    if (n && out && in)  // (out, in) += (out, n) (n, in); an empty group adds nothing
      gemm(s, CUBLAS_OP_N, CUBLAS_OP_T, in, out, n, x.dtype(), at(x, r * in), in, at(dy, r * out), out, 1.0f,
           DType::F32, at(dw, int64_t(e) * out * in), in);
    r += n;
  }
}

}  // namespace pb::cuda
