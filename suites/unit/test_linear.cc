/* Linear and embedding: backward against central finite differences (float64). */
#include "reference/ops/embedding.h"
#include "reference/ops/linear.h"
#include "test_util.h"

namespace pb::test {

TEST(Linear, ForwardIsXWt) {
  MatD x = randn(3, 5, "x"), w = randn(4, 5, "w"), y = ref::nan_mat<double>(3, 4);
  ref::linear_forward(y, x, w);
  for (Index i = 0; i < 3; ++i)
    for (Index o = 0; o < 4; ++o) {
      double s = 0;
      for (Index k = 0; k < 5; ++k) s += x(i, k) * w(o, k);
      EXPECT_NEAR(y(i, o), s, 1e-12);
    }
}

TEST(Linear, BackwardMatchesFiniteDifferences) {
  for (auto [n, in, out] : {std::tuple{7, 12, 5}, {1, 13, 1}, {3, 1, 11}}) {
    MatD x = randn(n, in, "x"), w = randn(out, in, "w"), r = randn(n, out, "r");
    auto loss = [&] {
      MatD y;
      ref::linear_forward(y, x, w);
      return dot(y, r);
    };
    MatD dx = ref::nan_mat<double>(n, in), dw = MatD::Zero(out, in);
    ref::linear_backward(dx, dw, r, x, w);
    EXPECT_LT(fd_rel_error(loss, x, dx), kFdTol) << n << "x" << in << "->" << out;
    EXPECT_LT(fd_rel_error(loss, w, dw), kFdTol);
  }
}

TEST(Embedding, BackwardScatterAddsRepeatedTokens) {
  MatD table = randn(11, 6, "E"), r = randn(5, 6, "r");
  const ref::Tokens tok{3, 0, 3, 10, 3};
  auto loss = [&] {
    MatD y;
    ref::embedding_forward(y, tok, table);
    return dot(y, r);
  };
  MatD dtable = MatD::Zero(11, 6);
  ref::embedding_backward(dtable, r, tok);
  EXPECT_LT(fd_rel_error(loss, table, dtable), kFdTol);
  EXPECT_NEAR((dtable.row(3) - (r.row(0) + r.row(2) + r.row(4))).norm(), 0.0, 1e-14);
}

TEST(Embedding, RejectsOutOfRangeToken) {
  MatD table = randn(4, 2, "E"), y;
  EXPECT_THROW(ref::embedding_forward(y, ref::Tokens{1, 4}, table), pb::Error);
  EXPECT_THROW(ref::embedding_forward(y, ref::Tokens{-1}, table), pb::Error);
}

}  // namespace pb::test
