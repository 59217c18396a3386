/* CPU linear: Y = X W^T, dX = dY W, dW += dY^T X, one SGEMM per block on the tensors'
 * memory (no copies), on the kernel threads (parallel.h).
 *   x (N, in), w (out, in), y (N, out); dW (out, in) accumulates
 *
 * The SGEMM (sgemm.h): this project's packed AVX2/FMA kernel (row-stable), else Eigen's.
 * OpenBLAS and Eigen were measured first (optimized/kernels/cpu/NOTES.md).
 *
 * Partition: the output in fixed blocks (split_of below, a function of the shape only),
 * each block one SGEMM with the whole reduction: every output element is computed by the
 * same call whatever the thread count, so the result is bitwise the same for 1, 2 or N
 * threads. */
#include <algorithm>

#include "optimized/kernels/cpu/cpu_kernels.h"
#include "optimized/kernels/cpu/parallel.h"
#include "optimized/kernels/cpu/sgemm.h"
#include "reference/common/error.h"


namespace pb::cpu {

namespace {

// The fixed partition of an (M, n) output, a function of the shape only: 2 blocks of rows
// when M >= 256, else 2 blocks of columns when n >= 256, else 1 block. Blocks are multiples
// of 48 rows or 32 columns (whole micro-tiles of either SGEMM kernel: sgemm.h). Each block packs the
// operand it shares with the other again, so there are few and large ones.
struct Split {
  bool rows;
  int64_t grain;
};
Split split_of(int64_t M, int64_t n) {
  if (M >= 256) return {true, (M / 2 + 47) / 48 * 48};
  if (n >= 256) return {false, (n / 2 + 31) / 32 * 32};
  return {true, std::max<int64_t>(M, 1)};
}

// C (M, n) = op(A) op(B) (+ C with accumulate) over the blocks of the split, on the pool.
// A row block starts at op(A)'s row b (ta: A's column b); a column block at op(B)'s column b
// (tb: B's row b).
void gemm_rows(bool ta, bool tb, int64_t M, int64_t n, int64_t k, const float* A, int64_t lda, const float* B,
               int64_t ldb, bool accumulate, float* C) {
  const Split sp = split_of(M, n);
  const float beta = accumulate ? 1.0f : 0.0f;
  if (sp.rows)
    return parallel_blocks(M, sp.grain, [&](int64_t b, int64_t e) {
      sgemm(ta, tb, e - b, n, k, ta ? A + b : A + b * lda, lda, B, ldb, beta, C + b * n, n);
    });
  parallel_blocks(n, sp.grain, [&](int64_t b, int64_t e) {
    sgemm(ta, tb, M, e - b, k, A, lda, tb ? B + b * ldb : B + b, ldb, beta, C + b, n);
  });
}

}  // namespace

void linear_forward(Tensor& y, const Tensor& x, const Tensor& w, const Stream&) {
  PB_REQUIRE(x.cols() == w.cols() && y.rows() == x.rows() && y.cols() == w.rows(), "linear_forward: y ", y.shape_str(),
             " = x ", x.shape_str(), " W^T ", w.shape_str());
  const int64_t N = x.rows(), in = x.cols(), out = w.rows();
  gemm_rows(false, true, N, out, in, x.f32(), in, w.f32(), in, false, y.f32());  // (N, out)
}

void linear_backward_input(Tensor& dx, const Tensor& dy, const Tensor& w, const Stream&) {
  PB_REQUIRE(dy.cols() == w.rows() && dx.rows() == dy.rows() && dx.cols() == w.cols(), "linear_backward_input: dx ",
             dx.shape_str(), " = dy ", dy.shape_str(), " W ", w.shape_str());
  const int64_t N = dy.rows(), in = w.cols(), out = w.rows();
  gemm_rows(false, false, N, in, out, dy.f32(), out, w.f32(), in, false, dx.f32());  // (N, in)
}

namespace {
// dW (out, in) (+)= dY^T X: blocks of dW's rows (dY's columns).
void weight_grad(float* dw, const Tensor& dy, const Tensor& x, bool accumulate) {
  const int64_t N = dy.rows(), out = dy.cols(), in = x.cols();
  gemm_rows(true, false, out, in, N, dy.f32(), out, x.f32(), in, accumulate, dw);  // (out, in)
}
}  // namespace

void linear_backward_weight(Tensor& dw, const Tensor& dy, const Tensor& x, const Stream&) {
  PB_REQUIRE(dw.rows() == dy.cols() && dw.cols() == x.cols() && dy.rows() == x.rows(), "linear_backward_weight: dW ",
             dw.shape_str(), " += dy^T ", dy.shape_str(), " x ", x.shape_str());
  PB_REQUIRE(dw.dtype() == DType::F32 && dy.dtype() == x.dtype(), "linear_backward_weight: fp32 dW, matching inputs");
  if (dy.dtype() == DType::BF16) {  // matmul-add: bf16 inputs, the product kept in fp32
    Tensor dyf = Tensor::empty(dy.shape(), MemCategory::Workspace, DType::F32, Device::CPU);
    Tensor xf = Tensor::empty(x.shape(), MemCategory::Workspace, DType::F32, Device::CPU);
    cast(dyf, dy);
    cast(xf, x);
    return weight_grad(dw.f32(), dyf, xf, true);
  }
  weight_grad(dw.f32(), dy, x, true);
}

void linear_weight_product(Tensor& p, const Tensor& dy, const Tensor& x, const Stream&) {
  PB_REQUIRE(p.rows() == dy.cols() && p.cols() == x.cols() && dy.rows() == x.rows(), "linear_weight_product: P ",
             p.shape_str(), " = dy^T ", dy.shape_str(), " x ", x.shape_str());
  PB_REQUIRE(p.dtype() == DType::F32 && dy.dtype() == DType::F32 && x.dtype() == DType::F32,
             "linear_weight_product: fp32 operands (ops.h promotes bf16)");
  weight_grad(p.f32(), dy, x, false);
}

}  // namespace pb::cpu
