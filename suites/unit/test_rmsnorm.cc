/* RMSNorm: forward formula and backward against central finite differences (float64). */
#include "reference/ops/rmsnorm.h"
#include "test_util.h"

namespace pb::test {

TEST(RmsNorm, ForwardFormula) {
  MatD x = randn(4, 12, "x"), g = randn(1, 12, "g"), y = ref::nan_mat<double>(4, 12);
  ref::Vec<double> rstd;
  ref::rmsnorm_forward(y, rstd, x, g, 1e-6);
  for (Index t = 0; t < 4; ++t) {
    const double r = 1.0 / std::sqrt(x.row(t).squaredNorm() / 12 + 1e-6);
    EXPECT_NEAR(rstd(t), r, 1e-14);
    for (Index j = 0; j < 12; ++j) EXPECT_NEAR(y(t, j), x(t, j) * r * g(0, j), 1e-13);
  }
}

TEST(RmsNorm, BackwardMatchesFiniteDifferences) {
  for (auto [n, h] : {std::pair{7, 12}, {1, 1}, {5, 13}}) {
    // eps comparable to mean(x^2) so that eps matters in the check
    MatD x = randn(n, h, "x"), g = randn(1, h, "g"), r = randn(n, h, "r");
    const double eps = 0.3;
    auto loss = [&] {
      MatD y;
      ref::Vec<double> rstd;
      ref::rmsnorm_forward(y, rstd, x, g, eps);
      return dot(y, r);
    };
    MatD y, dx = ref::nan_mat<double>(n, h), dg = MatD::Zero(1, h);
    ref::Vec<double> rstd;
    ref::rmsnorm_forward(y, rstd, x, g, eps);
    ref::rmsnorm_backward(dx, dg, r, x, rstd, g);
    EXPECT_LT(fd_rel_error(loss, x, dx), kFdTol) << n << "x" << h;
    EXPECT_LT(fd_rel_error(loss, g, dg), kFdTol) << n << "x" << h;
  }
}

}  // namespace pb::test
