/* RoPE (rotate_half convention): forward formula, relative-position property, and
 * backward against central finite differences (float64). */
#include "reference/ops/rope.h"
#include "test_util.h"

namespace pb::test {

TEST(Rope, ForwardMatchesRotateHalfFormula) {
  const Index D = 6, heads = 2;
  MatD x = randn(3, heads * D, "x"), y = ref::nan_mat<double>(3, heads * D);
  const std::vector<int64_t> pos{0, 5, 17};
  const double theta = 500.0;
  ref::rope_forward(y, x, pos, D, theta);
  for (Index t = 0; t < 3; ++t)
    for (Index h = 0; h < heads; ++h)
      for (Index j = 0; j < D; ++j) {
        // y = x * cos(emb) + rotate_half(x) * sin(emb), emb = cat(freqs, freqs)
        const Index i = j % (D / 2);
        const double ang = double(pos[size_t(t)]) * std::pow(theta, -2.0 * double(i) / double(D));
        const double rot = j < D / 2 ? -x(t, h * D + j + D / 2) : x(t, h * D + j - D / 2);
        EXPECT_NEAR(y(t, h * D + j), x(t, h * D + j) * std::cos(ang) + rot * std::sin(ang), 1e-13);
      }
  EXPECT_NEAR((y.row(0) - x.row(0)).norm(), 0.0, 1e-15);  // position 0 is the identity
}

TEST(Rope, ScoresDependOnlyOnRelativePosition) {
  const Index D = 8;
  MatD q = randn(1, D, "q"), k = randn(1, D, "k"), q1, k1, q2, k2;
  ref::rope_forward(q1, q, {9}, D, 10000.0);
  ref::rope_forward(k1, k, {4}, D, 10000.0);
  ref::rope_forward(q2, q, {105}, D, 10000.0);
  ref::rope_forward(k2, k, {100}, D, 10000.0);
  EXPECT_NEAR(q1.row(0).dot(k1.row(0)), q2.row(0).dot(k2.row(0)), 1e-12);
}

TEST(Rope, BackwardMatchesFiniteDifferences) {
  const Index D = 4, heads = 3, n = 7;
  MatD x = randn(n, heads * D, "x"), r = randn(n, heads * D, "r");
  const auto pos = ref::sequence_positions(1, n);
  auto loss = [&] {
    MatD y;
    ref::rope_forward(y, x, pos, D, 10000.0);
    return dot(y, r);
  };
  MatD dx = ref::nan_mat<double>(n, heads * D);
  ref::rope_backward(dx, r, pos, D, 10000.0);
  EXPECT_LT(fd_rel_error(loss, x, dx), kFdTol);
}

}  // namespace pb::test
