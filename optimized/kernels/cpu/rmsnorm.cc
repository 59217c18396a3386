/* CPU RMSNorm (Zhang & Sennrich, arXiv 1910.07467), fused: one pass over each row, on the
 * tensors' memory, rows in fixed blocks on the kernel threads (parallel.h).
 *   forward   rstd_t = 1 / sqrt(sum_j x_tj^2 / H + eps),   y_tj = x_tj rstd_t g_j
 *   backward  gdy_tj = g_j dy_tj,   c_t = x_t . gdy_t / H
 *             dx_t = rstd_t (gdy_t - x_t rstd_t^2 c_t),   dg_j += sum_t dy_tj x_tj rstd_t
 * Each row is the reference's expression (reference/ops/rmsnorm.h) on the row in place.
 * dg's sum over rows is split by the row blocks: each block sums its rows in order into its
 * own partial, and the partials are added to dg in block order (fixed by N, not by the
 * thread count; the order differs from the reference's single running sum, within the fp32
 * rule).
 *   x, y, dx, dy (N, H); g, dg (H); rstd (N) */
#include <cmath>
#include <vector>

#include "optimized/kernels/cpu/cpu_kernels.h"
#include "optimized/kernels/cpu/parallel.h"
#include "reference/common/error.h"

namespace pb::cpu {

namespace {

constexpr int64_t kRows = 64;  // rows per block

void require_rows(const char* op, const Tensor& x, int64_t h, std::initializer_list<const Tensor*> same,
                  std::initializer_list<const Tensor*> per_col, std::initializer_list<const Tensor*> per_row) {
  const int64_t N = x.numel() / (h > 0 ? h : 1);
  bool ok = h > 0 && x.numel() == N * h;
  for (const Tensor* t : same) ok = ok && t->numel() == x.numel();
  for (const Tensor* t : per_col) ok = ok && t->numel() == h;
  for (const Tensor* t : per_row) ok = ok && t->numel() == N;
  PB_REQUIRE(ok, op, ": x ", x.shape_str(), " with rows of ", h, ": an operand's size does not match");
}

// The rows' dg contributions: block partials, then dg += partials in block order.
template <class RowFn>
void blocked_dg(Tensor& dg, int64_t N, int64_t h, const RowFn& row) {
  const int64_t nb = blocks_of(N, kRows);
  std::vector<float> part(size_t(nb * h), 0.0f);
  parallel_blocks(N, kRows, [&](int64_t b, int64_t e) {
    MatMap P(part.data() + (b / kRows) * h, 1, h);
    for (int64_t t = b; t < e; ++t) row(t, P);
  });
  auto DG = as_row(dg);
  for (int64_t k = 0; k < nb; ++k) DG += CMatMap(part.data() + k * h, 1, h);
}

}  // namespace

void rmsnorm_forward(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& g, float eps, const Stream&) {
  const int64_t h = g.numel(), N = x.numel() / (h > 0 ? h : 1);
  require_rows("rmsnorm_forward", x, h, {&y}, {}, {&rstd});
  const CMatMap X(x.f32(), N, h), G = as_row(g);
  MatMap Y(y.f32(), N, h);
  float* r = rstd.f32();
  parallel_blocks(N, kRows, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      r[t] = 1.0f / std::sqrt(X.row(t).squaredNorm() / float(h) + eps);
      Y.row(t) = (X.row(t) * r[t]).cwiseProduct(G);
    }
  });
}

void rmsnorm_backward(Tensor& dx, Tensor& dg, const Tensor& dy, const Tensor& x, const Tensor& rstd, const Tensor& g,
                      const Stream&) {
  const int64_t h = g.numel(), N = x.numel() / (h > 0 ? h : 1);
  require_rows("rmsnorm_backward", x, h, {&dx, &dy}, {&dg}, {&rstd});
  const CMatMap X(x.f32(), N, h), DY(dy.f32(), N, h), G = as_row(g);
  MatMap DX(dx.f32(), N, h);
  const float* rs = rstd.f32();
  blocked_dg(dg, N, h, [&](int64_t t, MatMap& P) {
    const float r = rs[t];
    const auto gdy = DY.row(t).cwiseProduct(G);  // g_j dy_tj
    const float c = X.row(t).dot(gdy) / float(h);
    DX.row(t) = r * (gdy - X.row(t) * (r * r * c));
    P += DY.row(t).cwiseProduct(X.row(t)) * r;
  });
}

void row_dot(Tensor& out, const Tensor& a, const Tensor& b, const Tensor& g, const Stream&) {
  const int64_t N = a.rows(), H = a.cols();
  PB_REQUIRE(b.numel() == a.numel() && out.numel() == N && (!g.defined() || g.numel() == H), "row_dot: ",
             a.shape_str(), " . ", b.shape_str());
  const auto A = as_mat(a), B = as_mat(b);
  float* o = out.f32();
  parallel_blocks(N, kRows, [&](int64_t b0, int64_t e) {
    for (int64_t t = b0; t < e; ++t)
      o[t] = g.defined() ? A.row(t).cwiseProduct(B.row(t)).dot(as_row(g).row(0)) : A.row(t).dot(B.row(t));
  });
}

// As rmsnorm_forward with the whole row's sum of squares ss (the row split over ranks).
void rmsnorm_forward_stats(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& g, const Tensor& ss, int64_t H,
                           float eps, const Stream&) {
  const int64_t N = x.rows(), h = x.cols();
  PB_REQUIRE(g.numel() == h && y.numel() == x.numel() && rstd.numel() == N && ss.numel() == N && H >= h,
             "rmsnorm_forward_stats: x ", x.shape_str(), " of H ", H);
  const auto X = as_mat(x), G = as_row(g);
  MatMap Y(y.f32(), N, h);
  parallel_blocks(N, kRows, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      rstd.f32()[t] = 1.0f / std::sqrt(ss.f32()[t] / float(H) + eps);
      Y.row(t) = (X.row(t) * rstd.f32()[t]).cwiseProduct(G);
    }
  });
}

void rmsnorm_backward_stats(Tensor& dx, Tensor& dg, const Tensor& dy, const Tensor& x, const Tensor& rstd,
                            const Tensor& g, const Tensor& dot, int64_t H, const Stream&) {
  const int64_t N = x.rows(), h = x.cols();
  PB_REQUIRE(g.numel() == h && dg.numel() == h && dy.numel() == x.numel() && dx.numel() == x.numel() &&
                 rstd.numel() == N && dot.numel() == N,
             "rmsnorm_backward_stats: x ", x.shape_str());
  const auto X = as_mat(x), DY = as_mat(dy), G = as_row(g);
  MatMap DX(dx.f32(), N, h);
  blocked_dg(dg, N, h, [&](int64_t t, MatMap& P) {
    const float r = rstd.f32()[t], c = dot.f32()[t] / float(H);
    const auto gdy = DY.row(t).cwiseProduct(G);
    DX.row(t) = r * (gdy - X.row(t) * (r * r * c));
    P += DY.row(t).cwiseProduct(X.row(t)) * r;
  });
}

}  // namespace pb::cpu
