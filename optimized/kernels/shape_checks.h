/* Shape checks of the kernels' operands, shared by the backends (kernels/cuda calls them
 * before any launch, so that a shape bug is one error line, not an illegal address later;
 * the CPU attention and cross-entropy call them too; the other CPU kernels check inline). Each
 * function throws pb::Error (PB_REQUIRE, reference/common/error.h) with one line naming `op`
 * and the operands' shapes; none reads tensor data, so they run on the host for tensors of
 * either device and are unit-tested without a GPU (suites/unit/test_shape_checks.cc).
 *
 * Also here, as plain functions of sizes and devices:
 *   gemm_plan    what a GEMM C = A B + beta C with some dimension 0 must do (cuBLAS
 *                refuses k = 0 with its minimal leading dimensions: C = beta C instead);
 *   copy_route   whether a copy / cast between two devices runs on one device, goes
 *                through ops::transfer (cudaMemcpy), or is refused. */
#pragma once

#include <cstdint>
#include <initializer_list>

#include "optimized/kernels/ops.h"

namespace pb::checks {

// Attention inputs (q, k, v against B S Sk A G D and the position lists); as the CPU's.
void attention_inputs(const char* op, const ops::AttnShape& s, const Tensor& q, const Tensor& k, const Tensor& v);
// Forward outputs: o like q, lse (B*A, S).
void attention_forward_outputs(const char* op, const ops::AttnShape& s, const Tensor& o, const Tensor& lse,
                               const Tensor& q);
// Backward operands: dq, dout, o like q; dk, dv like k; lse (B*A, S).
void attention_backward_operands(const char* op, const ops::AttnShape& s, const Tensor& dq, const Tensor& dk,
                                 const Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                                 const Tensor& o, const Tensor& lse);

// Grouped GEMM (x (M, H), w (E, H, F)): y (M, F); dy like y, dx like x, dw like w.
void grouped_gemm_forward_outputs(const char* op, const Tensor& y, const Tensor& x, const Tensor& w);
void grouped_gemm_backward_operands(const char* op, const Tensor& dx, const Tensor& dw, const Tensor& dy,
                                    const Tensor& x, const Tensor& w);

// Cross-entropy pieces over logits (N, V): one statistic per row; labels, one per row.
void ce_row_stats(const char* op, const Tensor& logits, std::initializer_list<const Tensor*> per_row);
void ce_labels(const char* op, const Tensor& logits, int64_t labels);
void ce_backward_operands(const char* op, const Tensor& dlogits, const Tensor& logits, const Tensor& mx,
                          const Tensor& se, int64_t labels);
// ce_loss_sum: mx, se and tl of one length.
void ce_loss_operands(const char* op, const Tensor& mx, const Tensor& se, const Tensor& tl);

// AdamW: g, m, v of w's size.
void adamw_operands(const char* op, const Tensor& w, const Tensor& g, const Tensor& m, const Tensor& v);
// Embedding backward: dtable (V, H), dy (n, H) with one row per token.
void embedding_backward_operands(const char* op, const Tensor& dtable, const Tensor& dy, int64_t tokens);
// RoPE over rows of x (N, heads*D), one position per row at least: D even, y like x.
void rope_operands(const char* op, const Tensor& y, const Tensor& x, int64_t positions, int64_t D);

// GEMM dimensions within cuBLAS's int.
void blas_dims(const char* op, std::initializer_list<int64_t> dims);

// C (m, n) = A (m, k) B (k, n) + beta C with beta 0 (overwrite) or 1 (accumulate).
enum class GemmPlan {
  Nothing,  // C is empty, or k = 0 while accumulating: C = C
  ZeroC,    // k = 0, overwriting: C = 0, without the BLAS call
  Run,      // an ordinary GEMM
};
GemmPlan gemm_plan(int64_t m, int64_t n, int64_t k, float beta);

// A copy (or a same-dtype cast) from a tensor on `src` to one on `dst`.
enum class CopyRoute {
  SameDevice,  // the backend of that device
  Transfer,    // between host and GPU: ops::transfer (an asynchronous cudaMemcpy)
  Refused,     // a dtype conversion across devices: cast on one device, then transfer
};
CopyRoute copy_route(Device dst, DType dst_dtype, Device src, DType src_dtype);
// Throws unless every tensor is on `dev` (a kernel of one device reading another's memory).
void same_device(const char* op, Device dev, std::initializer_list<const Tensor*> ts);

}  // namespace pb::checks
