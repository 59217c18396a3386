/* Mean cross-entropy: value and backward against central finite differences (float64). */
#include "reference/ops/cross_entropy.h"
#include "test_util.h"

namespace pb::test {

TEST(CrossEntropy, ValueAndBackward) {
  const Index n = 7, V = 11;
  MatD z = randn(n, V, "z", 3.0);
  const ref::Tokens y{0, 10, 3, 3, 7, 1, 5};
  ref::Vec<double> lse;
  const double loss = ref::cross_entropy_forward(lse, z, y);
  double expect = 0;
  for (Index t = 0; t < n; ++t) expect += -std::log(std::exp(z(t, y[size_t(t)])) / z.row(t).array().exp().sum());
  EXPECT_NEAR(loss, expect / double(n), 1e-13);
  auto f = [&] {
    ref::Vec<double> l;
    return ref::cross_entropy_forward(l, z, y);
  };
  MatD dz = ref::nan_mat<double>(n, V);
  ref::cross_entropy_backward(dz, 1.0, z, lse, y);
  EXPECT_LT(fd_rel_error(f, z, dz), kFdTol);
  EXPECT_NEAR(dz.sum(), 0.0, 1e-14);  // softmax minus one-hot sums to zero per row
}

TEST(CrossEntropy, RejectsLabelOutsideVocabulary) {
  MatD z = randn(2, 3, "z");
  ref::Vec<double> lse;
  EXPECT_THROW(ref::cross_entropy_forward(lse, z, ref::Tokens{0, 3}), pb::Error);
}

}  // namespace pb::test
