/* Helpers shared by the unit tests: deterministic random matrices and a central
 * finite-difference gradient checker in float64. */
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "reference/common/counter_rng.h"
#include "reference/common/error.h"
#include "reference/common/tensor.h"

namespace pb::test {

using ref::Index;
using ref::Mat;
using MatD = ref::Mat<double>;

// (rows, cols) with N(0, scale^2) entries from the named stream.
inline MatD randn(Index rows, Index cols, const std::string& name, double scale = 1.0, uint64_t seed = 7) {
  MatD m(rows, cols);
  CounterRng rng(seed, name);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = scale * rng.normal(uint64_t(i));
  return m;
}

// Relative error ||num - analytic|| / ||num|| where num is the central difference
// (f(x + h e_i) - f(x - h e_i)) / 2h for every element i of x. f must read x.
inline double fd_rel_error(const std::function<double()>& f, MatD& x, const MatD& analytic, double h = 1e-5) {
  EXPECT_EQ(x.rows(), analytic.rows());
  EXPECT_EQ(x.cols(), analytic.cols());
  MatD num(x.rows(), x.cols());
  for (Index i = 0; i < x.size(); ++i) {
    const double x0 = x.data()[i];
    x.data()[i] = x0 + h;
    const double fp = f();
    x.data()[i] = x0 - h;
    const double fm = f();
    x.data()[i] = x0;
    num.data()[i] = (fp - fm) / (2 * h);
  }
  const double denom = num.norm();
  return denom > 0 ? (num - analytic).norm() / denom : analytic.norm();
}

// <A, B> summed over all elements: the scalar probe loss = sum(out .* R).
inline double dot(const MatD& a, const MatD& b) { return a.cwiseProduct(b).sum(); }

constexpr double kFdTol = 1e-6;  // issue 2: relative error < 1e-6 in float64

}  // namespace pb::test
