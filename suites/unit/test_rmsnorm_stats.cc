/* RMSNorm with the hidden dimension split in column blocks (ops::row_dot,
 * rmsnorm_forward_stats, rmsnorm_backward_stats; 2D / 3D tensor parallelism): with the row
 * statistics summed over q blocks, every block's y, rstd, dx and dg equal the whole-row
 * ops::rmsnorm_forward / rmsnorm_backward (fp32, to 1e-6 relative: the sums run per block),
 * for q = 1, 2, 3, 4; bf16 inputs go through the dispatch's fp32 promotion. */
#include <gtest/gtest.h>

#include <cmath>

#include "optimized/kernels/ops.h"
#include "reference/common/error.h"

namespace pb::test {

static Tensor filled(int64_t r, int64_t c, float salt) {
  Tensor t = Tensor::empty({r, c}, MemCategory::Workspace);
  for (int64_t k = 0; k < t.numel(); ++k) t.f32()[k] = std::sin(0.77f * float(k) + salt) * (1.0f + 0.1f * float(k % 7));
  return t;
}

// Columns [c0, c0 + n) of a row-major (R, C) tensor.
static Tensor columns(const Tensor& t, int64_t c0, int64_t n) {
  Tensor out = Tensor::empty({t.rows(), n}, MemCategory::Workspace, t.dtype());
  ops::copy_block(out, t, t.rows(), n, 0, c0, 0, 0);
  return out;
}

static double rel(const Tensor& got, const Tensor& want) {
  double d = 0, n = 0;
  for (int64_t k = 0; k < got.numel(); ++k) d += std::pow(double(got.f32()[k]) - want.f32()[k], 2), n += std::pow(double(want.f32()[k]), 2);
  return std::sqrt(d / n);
}

TEST(RmsNormStats, ColumnBlocksWithSummedStatisticsEqualTheWholeRow) {
  const int64_t N = 5, H = 12;
  const float eps = 1e-5f;
  const Tensor x = filled(N, H, 0.1f), dy = filled(N, H, 2.3f);
  Tensor g = filled(1, H, 4.1f).view(0, {H});
  Tensor y = Tensor::empty({N, H}, MemCategory::Workspace), rstd = Tensor::empty({N}, MemCategory::Workspace);
  ops::rmsnorm_forward(y, rstd, x, g, eps);
  Tensor dx = Tensor::empty({N, H}, MemCategory::Workspace), dg = Tensor::zeros({H}, MemCategory::Workspace);
  ops::rmsnorm_backward(dx, dg, dy, x, rstd, g);
  for (const int64_t q : {1, 2, 3, 4}) {
    const int64_t h = H / q;
    std::vector<Tensor> xs, dys, gs;
    Tensor ss = Tensor::zeros({N}, MemCategory::Workspace), dot = Tensor::zeros({N}, MemCategory::Workspace);
    Tensor part = Tensor::empty({N}, MemCategory::Workspace);
    for (int64_t b = 0; b < q; ++b) {  // the partial statistics, summed as the row's all-reduce would
      xs.push_back(columns(x, b * h, h)), dys.push_back(columns(dy, b * h, h));
      gs.push_back(columns(g.view(0, {1, H}), b * h, h).view(0, {h}));
      ops::row_dot(part, xs.back(), xs.back(), Tensor());
      ops::add_(ss, part);
      ops::row_dot(part, dys.back(), xs.back(), gs.back());
      ops::add_(dot, part);
    }
    for (int64_t b = 0; b < q; ++b) {
      Tensor yb = Tensor::empty({N, h}, MemCategory::Workspace), rb = Tensor::empty({N}, MemCategory::Workspace);
      ops::rmsnorm_forward_stats(yb, rb, xs[size_t(b)], gs[size_t(b)], ss, H, eps);
      EXPECT_LT(rel(yb, columns(y, b * h, h)), 1e-6) << q << " " << b;
      EXPECT_LT(rel(rb, rstd), 1e-6) << q << " " << b;
      Tensor dxb = Tensor::empty({N, h}, MemCategory::Workspace), dgb = Tensor::zeros({h}, MemCategory::Workspace);
      ops::rmsnorm_backward_stats(dxb, dgb, dys[size_t(b)], xs[size_t(b)], rb, gs[size_t(b)], dot, H);
      EXPECT_LT(rel(dxb, columns(dx, b * h, h)), 1e-6) << q << " " << b;
      EXPECT_LT(rel(dgb, columns(dg.view(0, {1, H}), b * h, h)), 1e-6) << q << " " << b;
    }
  }
}

TEST(RmsNormStats, BadShapesAreOneLine) {
  const Tensor x = filled(3, 4, 0.f), g = filled(1, 5, 0.f).view(0, {5});
  Tensor out = Tensor::empty({3}, MemCategory::Workspace);
  EXPECT_THROW(ops::row_dot(out, x, x, g), Error);
  Tensor y = Tensor::empty({3, 4}, MemCategory::Workspace), r = Tensor::empty({3}, MemCategory::Workspace);
  EXPECT_THROW(ops::rmsnorm_forward_stats(y, r, x, filled(1, 4, 0.f).view(0, {4}), out, 2, 1e-5f), Error);  // H < 4
}

}  // namespace pb::test
