/* CPU grouped GEMM (MoE experts): one Eigen GEMM per non-empty group.
 *   y_i = x_i W_i,  dx_i = dy_i W_i^T,  dW_i += x_i^T dy_i
 * x (M, H) rows sorted by group, W (E, H, F), group sizes (E) summing to M (checked by
 * the dispatch, kernels/dispatch.cc). */
#include "optimized/kernels/cpu/cpu_kernels.h"
#include "reference/common/error.h"

namespace pb::cpu {

void grouped_gemm_forward(Tensor& y, const Tensor& x, const Tensor& w, const std::vector<int64_t>& sizes, const Stream&) {
  const int64_t H = w.dim(1), F = w.dim(2);
  int64_t r = 0;
  for (size_t e = 0; e < sizes.size(); ++e) {
    const int64_t n = sizes[e];
    if (n) {
      CMatMap we(w.f32() + int64_t(e) * H * F, H, F);
      MatMap(y.f32() + r * F, n, F).noalias() = CMatMap(x.f32() + r * H, n, H) * we;  // (n, F)
    }
    r += n;
  }
}

void grouped_gemm_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                           const std::vector<int64_t>& sizes, const Stream&) {
  const int64_t H = w.dim(1), F = w.dim(2);
  int64_t r = 0;
  for (size_t e = 0; e < sizes.size(); ++e) {
    const int64_t n = sizes[e];
    if (n) {
      CMatMap we(w.f32() + int64_t(e) * H * F, H, F);
      CMatMap dye(dy.f32() + r * F, n, F), xe(x.f32() + r * H, n, H);
      MatMap(dx.f32() + r * H, n, H).noalias() = dye * we.transpose();       // (n, H)
      MatMap(dw.f32() + int64_t(e) * H * F, H, F).noalias() += xe.transpose() * dye;  // (H, F)
    }
    r += n;
  }
}

}  // namespace pb::cpu
