/* RMSNorm (Zhang & Sennrich, "Root Mean Square Layer Normalization", NeurIPS 2019),
 * as Llama uses it.
 *
 *   forward : r_t   = 1 / sqrt(mean_j x_tj^2 + eps)          rstd (N) saved
 *             y_tj  = x_tj * r_t * g_j                        x, y (N, H), g (H)
 *   backward: with  c_t = mean_j(x_tj * g_j * dy_tj)
 *             dx_tj = r_t * (g_j * dy_tj - x_tj * r_t^2 * c_t)
 *             dg_j += sum_t dy_tj * x_tj * r_t
 */
#pragma once

#include <cmath>

#include "reference/common/tensor.h"

namespace pb::ref {

// g is stored as a (1, H) row.
template <class T>
void rmsnorm_forward(Mat<T>& y, Vec<T>& rstd, const Mat<T>& x, const Mat<T>& g, T eps) {
  const Index n = x.rows(), h = x.cols();
  y.resize(n, h);   // (N, H)
  rstd.resize(n);   // (N)
  for (Index t = 0; t < n; ++t) {
    T ms = x.row(t).squaredNorm() / T(h);
    rstd(t) = T(1) / std::sqrt(ms + eps);
    y.row(t) = (x.row(t) * rstd(t)).cwiseProduct(g.row(0));
  }
}

template <class T>
void rmsnorm_backward(Mat<T>& dx, Mat<T>& dg, const Mat<T>& dy, const Mat<T>& x, const Vec<T>& rstd,
                      const Mat<T>& g) {
  const Index n = x.rows(), h = x.cols();
  dx.resize(n, h);  // (N, H)
  for (Index t = 0; t < n; ++t) {
    const T r = rstd(t);
    const auto gdy = dy.row(t).cwiseProduct(g.row(0));  // g_j * dy_tj
    const T c = x.row(t).dot(gdy) / T(h);
    dx.row(t) = r * (gdy - x.row(t) * (r * r * c));
    dg.row(0) += dy.row(t).cwiseProduct(x.row(t)) * r;
  }
}

}  // namespace pb::ref
