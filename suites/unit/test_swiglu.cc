/* SwiGLU and the Llama MLP: backward against central finite differences (float64). */
#include "reference/model/mlp.h"
#include "test_util.h"

namespace pb::test {

TEST(SwiGlu, BackwardMatchesFiniteDifferences) {
  MatD a = randn(7, 5, "a", 2.0), u = randn(7, 5, "u"), r = randn(7, 5, "r");
  auto loss = [&] {
    MatD y;
    ref::swiglu_forward(y, a, u);
    return dot(y, r);
  };
  MatD da = ref::nan_mat<double>(7, 5), du = ref::nan_mat<double>(7, 5);
  ref::swiglu_backward(da, du, r, a, u);
  EXPECT_LT(fd_rel_error(loss, a, da), kFdTol);
  EXPECT_LT(fd_rel_error(loss, u, du), kFdTol);
}

TEST(SwiGlu, ForwardIsSiluTimesUp) {
  MatD a(1, 3), u(1, 3), y;
  a << -1.0, 0.0, 2.0;
  u << 3.0, 5.0, -0.5;
  ref::swiglu_forward(y, a, u);
  for (Index j = 0; j < 3; ++j) EXPECT_NEAR(y(0, j), a(0, j) / (1 + std::exp(-a(0, j))) * u(0, j), 1e-15);
}

TEST(Mlp, BackwardMatchesFiniteDifferences) {
  const Index n = 7, h = 12, f = 5;
  MatD x = randn(n, h, "x"), wg = randn(f, h, "wg", 0.5), wu = randn(f, h, "wu", 0.5), wd = randn(h, f, "wd", 0.5);
  MatD r = randn(n, h, "r");
  auto loss = [&] {
    MatD y;
    ref::MlpCache<double> c;
    ref::mlp_forward(y, c, x, wg, wu, wd);
    return dot(y, r);
  };
  MatD y, dx;
  ref::MlpCache<double> c;
  ref::mlp_forward(y, c, x, wg, wu, wd);
  MatD dwg = MatD::Zero(f, h), dwu = MatD::Zero(f, h), dwd = MatD::Zero(h, f);
  ref::mlp_backward(dx, dwg, dwu, dwd, r, c, wg, wu, wd);
  EXPECT_LT(fd_rel_error(loss, x, dx), kFdTol);
  EXPECT_LT(fd_rel_error(loss, wg, dwg), kFdTol);
  EXPECT_LT(fd_rel_error(loss, wu, dwu), kFdTol);
  EXPECT_LT(fd_rel_error(loss, wd, dwd), kFdTol);
}

}  // namespace pb::test
