/* CUDA grouped GEMM (MoE experts), fp32 through cuBLAS: one GEMM per non-empty group on
 * the op's stream (a first version; one grouped launch, cublasGemmGroupedBatchedEx or
 * an own kernel, is the performance target's job). Row-major -> column-major as in
 * linear.cu:
 *   y_i (n, F) = x_i (n, H) W_i (H, F)   ->  y^T = W^T x^T : gemm(N, N, F, n, H, W, x)
 *   dx_i (n, H) = dy_i W_i^T             ->  gemm(T, N, H, n, F, W, dy)
 *   dW_i (H, F) += x_i^T dy_i            ->  dW^T (F, H) += dy^T x : gemm(N, T, F, H, n, dy, x, beta 1)
 * The group sizes are checked by the dispatch (kernels/dispatch.cc), the outputs' sizes
 * here (checks::grouped_gemm_*). Edges (checks::gemm_plan): an inner dimension of 0 (H
 * forward, F for dx) never reaches cuBLAS: the group's rows of y or dx are set to 0; an
 * empty group adds nothing to dW.
 */
#include "optimized/kernels/cuda/common.cuh"
#include "optimized/kernels/cuda/cuda_kernels.h"
#include "optimized/kernels/shape_checks.h"
#include "reference/common/error.h"

namespace pb::cuda {

namespace {

void int_dims(const char* op, const Tensor& w, const std::vector<int64_t>& sizes) {
  checks::blas_dims(op, {w.dim(1), w.dim(2)});
  for (int64_t n : sizes) checks::blas_dims(op, {n});
}

}  // namespace

void grouped_gemm_forward(Tensor& y, const Tensor& x, const Tensor& w, const std::vector<int64_t>& sizes, const Stream& stream) {
  checks::grouped_gemm_forward_outputs("grouped_gemm_forward (cuda)", y, x, w);
  int_dims("grouped_gemm_forward (cuda)", w, sizes);
  const int H = int(w.dim(1)), F = int(w.dim(2));
  const float one = 1.0f, zero = 0.0f;
  const cudaStream_t s = cu(stream);
  int64_t r = 0;
  for (size_t e = 0; e < sizes.size(); ++e) {
    const int n = int(sizes[e]);
    if (gemm_runs(F, n, H, 0.0f, y.f32() + r * F, size_t(n) * F * sizeof(float), s))
      CUBLAS_CHECK(cublasSgemm(cublas(s), CUBLAS_OP_N, CUBLAS_OP_N, F, n, H, &one, w.f32() + int64_t(e) * H * F, F,
                               x.f32() + r * H, H, &zero, y.f32() + r * F, F));
    r += n;
  }
}

void grouped_gemm_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                           const std::vector<int64_t>& sizes, const Stream& stream) {
  checks::grouped_gemm_backward_operands("grouped_gemm_backward (cuda)", dx, dw, dy, x, w);
  int_dims("grouped_gemm_backward (cuda)", w, sizes);
  const int H = int(w.dim(1)), F = int(w.dim(2));
  const float one = 1.0f, zero = 0.0f;
  const cudaStream_t s = cu(stream);
  int64_t r = 0;
  for (size_t e = 0; e < sizes.size(); ++e) {
    const int n = int(sizes[e]);
    const float* we = w.f32() + int64_t(e) * H * F;
    if (gemm_runs(H, n, F, 0.0f, dx.f32() + r * H, size_t(n) * H * sizeof(float), s))  // dx_i (n, H)
      CUBLAS_CHECK(cublasSgemm(cublas(s), CUBLAS_OP_T, CUBLAS_OP_N, H, n, F, &one, we, F, dy.f32() + r * F, F, &zero,
                               dx.f32() + r * H, H));
    if (gemm_runs(F, H, n, 1.0f, dw.f32() + int64_t(e) * H * F, size_t(H) * F * sizeof(float), s))  // dW_i (H, F) += ...
      CUBLAS_CHECK(cublasSgemm(cublas(s), CUBLAS_OP_N, CUBLAS_OP_T, F, H, n, &one, dy.f32() + r * F, F,
                               x.f32() + r * H, H, &one, dw.f32() + int64_t(e) * H * F, F));
    r += n;
  }
}

}  // namespace pb::cuda
