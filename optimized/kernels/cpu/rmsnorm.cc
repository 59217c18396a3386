/* CPU RMSNorm: the reference op (reference/ops/rmsnorm.h) on this rank's rows. */
#include <cmath>

#include "optimized/kernels/cpu/cpu_kernels.h"
#include "reference/common/error.h"
#include "reference/ops/rmsnorm.h"

namespace pb::cpu {

void rmsnorm_forward(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& g, float eps, const Stream&) {
  ref::Mat<float> ym, gm = as_row(g);
  ref::Vec<float> r;
  ref::rmsnorm_forward(ym, r, to_ref(x), gm, eps);
  from_ref(y, ym);
  from_ref(rstd, r.transpose());
}

void rmsnorm_backward(Tensor& dx, Tensor& dg, const Tensor& dy, const Tensor& x, const Tensor& rstd, const Tensor& g, const Stream&) {
  ref::Mat<float> dxm, dgm = as_row(dg), gm = as_row(g);
  const ref::Vec<float> r = as_row(rstd).transpose();
  ref::rmsnorm_backward(dxm, dgm, to_ref(dy), to_ref(x), r, gm);
  from_ref(dx, dxm);
  from_ref(dg, dgm);
}

void row_dot(Tensor& out, const Tensor& a, const Tensor& b, const Tensor& g, const Stream&) {
  const int64_t N = a.rows(), H = a.cols();
  PB_REQUIRE(b.numel() == a.numel() && out.numel() == N && (!g.defined() || g.numel() == H), "row_dot: ",
             a.shape_str(), " . ", b.shape_str());
  const auto A = to_ref(a), B = to_ref(b);
  for (int64_t t = 0; t < N; ++t)
    out.f32()[t] = g.defined() ? A.row(t).cwiseProduct(B.row(t)).dot(as_row(g).row(0)) : A.row(t).dot(B.row(t));
}

void rmsnorm_forward_stats(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& g, const Tensor& ss, int64_t H,
                           float eps, const Stream&) {
  const int64_t N = x.rows(), h = x.cols();
  PB_REQUIRE(g.numel() == h && y.numel() == x.numel() && rstd.numel() == N && ss.numel() == N && H >= h,
             "rmsnorm_forward_stats: x ", x.shape_str(), " of H ", H);
  const auto X = to_ref(x);
  ref::Mat<float> Y(N, h);
  for (int64_t t = 0; t < N; ++t) {  // as reference/ops/rmsnorm.h with the whole row's sum of squares
    rstd.f32()[t] = 1.0f / std::sqrt(ss.f32()[t] / float(H) + eps);
    Y.row(t) = (X.row(t) * rstd.f32()[t]).cwiseProduct(as_row(g).row(0));
  }
  from_ref(y, Y);
}

void rmsnorm_backward_stats(Tensor& dx, Tensor& dg, const Tensor& dy, const Tensor& x, const Tensor& rstd,
                            const Tensor& g, const Tensor& dot, int64_t H, const Stream&) {
  const int64_t N = x.rows(), h = x.cols();
  PB_REQUIRE(g.numel() == h && dg.numel() == h && dy.numel() == x.numel() && dx.numel() == x.numel() &&
                 rstd.numel() == N && dot.numel() == N,
             "rmsnorm_backward_stats: x ", x.shape_str());
  const auto X = to_ref(x), DY = to_ref(dy);
  ref::Mat<float> DX(N, h);
  auto DG = as_row(dg);
  for (int64_t t = 0; t < N; ++t) {
    const float r = rstd.f32()[t], c = dot.f32()[t] / float(H);
    const auto gdy = DY.row(t).cwiseProduct(as_row(g).row(0));
    DX.row(t) = r * (gdy - X.row(t) * (r * r * c));
    DG.row(0) += DY.row(t).cwiseProduct(X.row(t)) * r;
  }
  from_ref(dx, DX);
}

}  // namespace pb::cpu
