/* ops.h -> the grouped-linear kernels (MoE experts): kernels/cpu/grouped_linear.cc, or
 * kernels/cuda/grouped_linear.cu in a CUDA build, on the op's stream (the stream rules
 * and the bf16 emulation of dispatch.cc, through dispatch_util.h).
 *
 * Megatron-LM's GroupedMLP (the grouped GEMM of megatron/core/transformer/moe/experts.py)
 * with each expert's weight in the linear layout: x (M, in) rows sorted by group, w (E,
 * out, in), group sizes (E; may be 0, summing to M), group i the rows r_i .. r_i + n_i - 1:
 *   y_i = x_i w_i^T (n_i, out);   dx_i = dy_i w_i (n_i, in), overwritten;
 *   dW_i += dy_i^T x_i (out, in), an empty group adds nothing.
 * The shapes, the group sizes and the dtypes are checked here once for every backend, on
 * the caller's thread, each failure one line naming the op. dtypes: fp32, or bf16 x / w /
 * y / dy / dx (mixed fp32/bf16 operands run the promote-and-round emulation, as linear's
 * do); dW is always an fp32 main grad, and dy and x share a dtype (the bf16 product is
 * kept in fp32 and added to it, as linear_backward_weight does). */
#include "optimized/kernels/dispatch_util.h"

namespace pb::ops {

namespace {

// w (E, out, in), 3-D, one size per group; the sizes non-negative and summing to M.
void check_groups(const char* op, const char* wname, const Tensor& w, const std::vector<int64_t>& sizes, int64_t M) {
  PB_REQUIRE(w.shape().size() == 3, op, ": ", wname, " ", w.shape_str(), " must be 3-D (E, out, in)");
  PB_REQUIRE(int64_t(sizes.size()) == w.dim(0), op, ": ", sizes.size(), " group sizes for ", wname, " ",
             w.shape_str(), " (one per group: ", w.dim(0), ")");
  int64_t m = 0;
  for (int64_t s : sizes) {
    PB_REQUIRE(s >= 0, op, ": negative group size ", s);
    m += s;
  }
  PB_REQUIRE(m == M, op, ": group sizes sum to ", m, ", the operands have ", M, " rows");
}

// t must be 2-D (rows, cols).
void check_2d(const char* op, const char* name, const Tensor& t, int64_t rows, int64_t cols) {
  PB_REQUIRE(t.shape().size() == 2 && t.dim(0) == rows && t.dim(1) == cols, op, ": ", name, " ", t.shape_str(),
             ", expected (", rows, ", ", cols, ")");
}

// The row count of a 2-D operand (checked fully by check_2d afterwards).
int64_t rows_2d(const char* op, const char* name, const Tensor& t) {
  PB_REQUIRE(t.shape().size() == 2, op, ": ", name, " ", t.shape_str(), " must be 2-D (M, features)");
  return t.dim(0);
}

}  // namespace

// y (M, out) = x (M, in) per group times w_i^T (out, in).
void grouped_linear_forward(Tensor& y, const Tensor& x, const Tensor& w, const std::vector<int64_t>& group_sizes,
                            const Stream& stream) {
  const char* op = "grouped_linear_forward";
  const int64_t M = rows_2d(op, "x", x);
  check_groups(op, "w", w, group_sizes, M);
  check_2d(op, "x", x, M, w.dim(2));
  check_2d(op, "y", y, M, w.dim(1));
  const OnStream on(stream, x.device());
  if (emulate_bf16(x.device(), {&y, &x, &w})) {
    Out o(y);
    return grouped_linear_forward(o.f(), up(x), up(w), group_sizes);
  }
  PB_DISPATCH(x.device(), grouped_linear_forward, y, x, w, group_sizes);
}

// dx (M, in) = dy (M, out) per group times w_i (out, in); overwritten.
void grouped_linear_backward_input(Tensor& dx, const Tensor& dy, const Tensor& w,
                                   const std::vector<int64_t>& group_sizes, const Stream& stream) {
  const char* op = "grouped_linear_backward_input";
  const int64_t M = rows_2d(op, "dy", dy);
  check_groups(op, "w", w, group_sizes, M);
  check_2d(op, "dy", dy, M, w.dim(1));
  check_2d(op, "dx", dx, M, w.dim(2));
  const OnStream on(stream, dy.device());
  if (emulate_bf16(dy.device(), {&dx, &dy, &w})) {
    Out o(dx);
    return grouped_linear_backward_input(o.f(), up(dy), up(w), group_sizes);
  }
  PB_DISPATCH(dy.device(), grouped_linear_backward_input, dx, dy, w, group_sizes);
}

// dw (E, out, in) fp32 += per group dy_i^T (out, n_i) x_i (n_i, in).
void grouped_linear_backward_weight(Tensor& dw, const Tensor& dy, const Tensor& x,
                                    const std::vector<int64_t>& group_sizes, const Stream& stream) {
  const char* op = "grouped_linear_backward_weight";
  const int64_t M = rows_2d(op, "dy", dy);
  check_groups(op, "dw", dw, group_sizes, M);
  check_2d(op, "dy", dy, M, dw.dim(1));
  check_2d(op, "x", x, M, dw.dim(2));
  PB_REQUIRE(dw.dtype() == DType::F32 && dy.dtype() == x.dtype(), op, ": dw ", dtype_name(dw.dtype()), ", dy ",
             dtype_name(dy.dtype()), ", x ", dtype_name(x.dtype()), " (an fp32 dw, dy and x of one dtype)");
  const OnStream on(stream, dy.device());
  // bf16 on the CPU: the product of the promoted inputs, kept in fp32, added to the main grad.
  if (emulate_bf16(dy.device(), {&dy, &x})) return grouped_linear_backward_weight(dw, up(dy), up(x), group_sizes);
  PB_DISPATCH(dy.device(), grouped_linear_backward_weight, dw, dy, x, group_sizes);
}

}  // namespace pb::ops
