/* CPU grouped linear (MoE experts, Megatron-LM's GroupedMLP with each expert's weight in
 * the linear layout): one Eigen GEMM per non-empty group on the tensors' memory.
 *   y_i = x_i w_i^T (n_i, out);   dx_i = dy_i w_i (n_i, in);   dW_i += dy_i^T x_i (out, in)
 * x (M, in) rows sorted by group, w (E, out, in), group sizes (E) summing to M; fp32 only
 * (the shapes and the bf16 emulation are the dispatch's, kernels/dispatch_grouped.cc). */
#include "optimized/kernels/cpu/cpu_kernels.h"
#include "reference/common/error.h"

namespace pb::cpu {

namespace {

void require_f32(const char* op, const Tensor& a, const Tensor& b, const Tensor& c) {
  PB_REQUIRE(a.dtype() == DType::F32 && b.dtype() == DType::F32 && c.dtype() == DType::F32, op,
             ": the CPU kernel takes fp32 operands (bf16 is promoted by the dispatch)");
}

// Group e's weight (out, in) of w (E, out, in).
CMatMap weight(const Tensor& w, size_t e) {
  const int64_t out = w.dim(1), in = w.dim(2);
  return CMatMap(w.f32() + int64_t(e) * out * in, out, in);
}

}  // namespace

void grouped_linear_forward(Tensor& y, const Tensor& x, const Tensor& w, const std::vector<int64_t>& sizes,
                            const Stream&) {
  require_f32("grouped_linear_forward", y, x, w);
  const int64_t out = w.dim(1), in = w.dim(2);
  int64_t r = 0;
  for (size_t e = 0; e < sizes.size(); ++e) {
    const int64_t n = sizes[e];
    if (n) MatMap(y.f32() + r * out, n, out).noalias() = CMatMap(x.f32() + r * in, n, in) * weight(w, e).transpose();  // (n, out)
    r += n;
  }
}

void grouped_linear_backward_input(Tensor& dx, const Tensor& dy, const Tensor& w, const std::vector<int64_t>& sizes,
                                   const Stream&) {
  require_f32("grouped_linear_backward_input", dx, dy, w);
  const int64_t out = w.dim(1), in = w.dim(2);
  int64_t r = 0;
  for (size_t e = 0; e < sizes.size(); ++e) {
    const int64_t n = sizes[e];
    if (n) MatMap(dx.f32() + r * in, n, in).noalias() = CMatMap(dy.f32() + r * out, n, out) * weight(w, e);  // (n, in)
    r += n;
  }
}

void grouped_linear_backward_weight(Tensor& dw, const Tensor& dy, const Tensor& x, const std::vector<int64_t>& sizes,
                                    const Stream&) {
  require_f32("grouped_linear_backward_weight", dw, dy, x);
  const int64_t out = dw.dim(1), in = dw.dim(2);
  int64_t r = 0;
  for (size_t e = 0; e < sizes.size(); ++e) {
    const int64_t n = sizes[e];
    if (n) {
      CMatMap dye(dy.f32() + r * out, n, out), xe(x.f32() + r * in, n, in);
      MatMap(dw.f32() + int64_t(e) * out * in, out, in).noalias() += dye.transpose() * xe;  // (out, in)
    }
    r += n;
  }
}

}  // namespace pb::cpu
