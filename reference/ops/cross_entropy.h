/* Mean softmax cross-entropy over N token rows.
 *
 *   lse_t = log sum_v exp(z_tv)
 *   loss  = (1/N) sum_t (lse_t - z_t,y_t)
 *   dz_tv = dloss * (softmax(z_t)_v - [v == y_t]) / N
 *
 * z (N, V) logits, y (N) labels.
 */
#pragma once

#include <cmath>

#include "reference/common/error.h"
#include "reference/common/tensor.h"

namespace pb::ref {

template <class T>
T cross_entropy_forward(Vec<T>& lse, const Mat<T>& logits, const Tokens& labels) {
  const Index n = logits.rows();
  lse.resize(n);  // (N)
  T total = 0;
  for (Index t = 0; t < n; ++t) {
    const Index y = Index(labels[size_t(t)]);
    PB_REQUIRE(y >= 0 && y < logits.cols(), "label ", y, " outside vocabulary of ", logits.cols());
    const T m = logits.row(t).maxCoeff();
    lse(t) = m + std::log((logits.row(t).array() - m).exp().sum());
    total += lse(t) - logits(t, y);
  }
  return total / T(n);
}

template <class T>
void cross_entropy_backward(Mat<T>& dlogits, T dloss, const Mat<T>& logits, const Vec<T>& lse,
                            const Tokens& labels) {
  const Index n = logits.rows();
  dlogits.resize(n, logits.cols());  // (N, V)
  for (Index t = 0; t < n; ++t) {
    dlogits.row(t) = (logits.row(t).array() - lse(t)).exp().matrix() * (dloss / T(n));
    dlogits(t, Index(labels[size_t(t)])) -= dloss / T(n);
  }
}

}  // namespace pb::ref
