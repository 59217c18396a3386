/* Grouped linear (MoE experts, Megatron-LM's GroupedMLP in the linear layout) on the CPU
 * backend, against a plain per-group loop of the linear ops on row slices:
 *   y_i = x_i w_i^T,   dx_i = dy_i w_i,   dW_i += dy_i^T x_i
 * fp32 (to 1e-6) and bf16 (x, w, y, dy, dx bf16, dW fp32: within bf16 rounding) with empty
 * groups first, in the middle and last, all rows in one group, E = 1 and M = 0; dW
 * accumulates (twice doubles it); bad shapes and dtypes throw one-line errors naming the op. */
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "optimized/kernels/ops.h"
#include "reference/common/counter_rng.h"
#include "reference/common/error.h"

namespace pb::test {

static Tensor randn(std::vector<int64_t> shape, const std::string& name, DType dt = DType::F32) {
  Tensor f = Tensor::empty(shape, MemCategory::Workspace, DType::F32, Device::CPU);
  CounterRng rng(7, name);
  for (int64_t i = 0; i < f.numel(); ++i) f.f32()[i] = float(rng.normal(uint64_t(i)));
  if (dt == DType::F32) return f;
  Tensor b = Tensor::empty(shape, MemCategory::Workspace, DType::BF16, Device::CPU);
  ops::cast(b, f);
  return b;
}

static Tensor empty(std::vector<int64_t> shape, DType dt = DType::F32) {
  return Tensor::empty(std::move(shape), MemCategory::Workspace, dt, Device::CPU);
}

// The values of either dtype as fp32 (bf16 widened exactly).
static std::vector<float> values(const Tensor& t) {
  std::vector<float> v(size_t(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i)
    v[size_t(i)] = t.dtype() == DType::F32 ? t.f32()[i] : bf16_to_float(t.bf16_bits()[i]);
  return v;
}

static Tensor copy_of(const Tensor& t) {
  Tensor c = empty(t.shape(), t.dtype());
  ops::copy(c, t);
  return c;
}

// Group e's weight (out, in) of w (E, out, in).
static Tensor weight(const Tensor& w, int64_t e) { return w.view(e * w.dim(1) * w.dim(2), {w.dim(1), w.dim(2)}); }

struct Grouped {
  Tensor y, dx, dw;
};

// The ops under test; dw starts from dw0.
static Grouped run_grouped(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor& dw0,
                           const std::vector<int64_t>& sizes) {
  Grouped g{empty({x.dim(0), w.dim(1)}, x.dtype()), empty({x.dim(0), w.dim(2)}, x.dtype()), copy_of(dw0)};
  ops::grouped_linear_forward(g.y, x, w, sizes);
  ops::grouped_linear_backward_input(g.dx, dy, w, sizes);
  ops::grouped_linear_backward_weight(g.dw, dy, x, sizes);
  return g;
}

// The per-group loop of the linear ops on row slices (an empty group: nothing).
static Grouped run_loop(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor& dw0,
                        const std::vector<int64_t>& sizes) {
  Grouped g{empty({x.dim(0), w.dim(1)}, x.dtype()), empty({x.dim(0), w.dim(2)}, x.dtype()), copy_of(dw0)};
  int64_t r = 0;
  for (int64_t e = 0; e < int64_t(sizes.size()); ++e) {
    const int64_t n = sizes[size_t(e)];
    if (n) {
      Tensor ye = g.y.slice_rows(r, n), dxe = g.dx.slice_rows(r, n), dwe = weight(g.dw, e);
      ops::linear_forward(ye, x.slice_rows(r, n), weight(w, e));            // (n, out)
      ops::linear_backward_input(dxe, dy.slice_rows(r, n), weight(w, e));   // (n, in)
      ops::linear_backward_weight(dwe, dy.slice_rows(r, n), x.slice_rows(r, n));  // (out, in)
    }
    r += n;
  }
  return g;
}

// |a - b| <= tol * (1 + |b|) elementwise.
static void expect_close(const Tensor& a, const Tensor& b, double tol, const std::string& what) {
  ASSERT_EQ(a.shape(), b.shape()) << what;
  const std::vector<float> va = values(a), vb = values(b);
  for (size_t i = 0; i < va.size(); ++i)
    ASSERT_LE(std::fabs(double(va[i]) - vb[i]), tol * (1 + std::fabs(double(vb[i])))) << what << " element " << i;
}

static void check_case(const std::vector<int64_t>& sizes, int64_t in, int64_t out, DType dt, const std::string& name) {
  int64_t M = 0;
  for (int64_t s : sizes) M += s;
  const int64_t E = int64_t(sizes.size());
  Tensor x = randn({M, in}, name + "x", dt), w = randn({E, out, in}, name + "w", dt), dy = randn({M, out}, name + "dy", dt);
  Tensor dw0 = randn({E, out, in}, name + "dw0");
  const Grouped g = run_grouped(x, w, dy, dw0, sizes), l = run_loop(x, w, dy, dw0, sizes);
  // bf16 outputs: one rounding of the same fp32 math, which may differ in the last bit
  // (a GEMM's summation order): within one bf16 ulp.
  const double tol = dt == DType::F32 ? 1e-6 : 1.0 / 128;
  expect_close(g.y, l.y, tol, name + " y");
  expect_close(g.dx, l.dx, tol, name + " dx");
  expect_close(g.dw, l.dw, dt == DType::F32 ? 1e-6 : 1e-5, name + " dw");
  ASSERT_EQ(g.dw.dtype(), DType::F32);
  // Empty groups keep dW as it was.
  for (int64_t e = 0; e < E; ++e)
    if (!sizes[size_t(e)]) expect_close(weight(g.dw, e), weight(dw0, e), 0, name + " empty group dw");
}

TEST(GroupedLinear, Fp32MatchesPerGroupLinear) {
  check_case({3, 0, 5, 1, 0}, 7, 4, DType::F32, "mid-last");
  check_case({0, 4, 2}, 5, 6, DType::F32, "first");
  check_case({0, 9, 0}, 8, 3, DType::F32, "one-group");
  check_case({11}, 13, 5, DType::F32, "E1");
  check_case({2, 0, 0, 3}, 1, 1, DType::F32, "1x1");
  check_case({0, 0}, 4, 3, DType::F32, "M0");
}

TEST(GroupedLinear, Bf16MatchesPerGroupLinear) {
  check_case({3, 0, 5, 1, 0}, 7, 4, DType::BF16, "mid-last");
  check_case({0, 4, 2}, 33, 17, DType::BF16, "first");
  check_case({0, 9, 0}, 8, 3, DType::BF16, "one-group");
  check_case({11}, 64, 24, DType::BF16, "E1");
}

// bf16 y against the fp64 truth of the bf16-valued inputs: rounded once (relative error
// at most 2^-9 per element, plus the fp32 GEMM's error).
TEST(GroupedLinear, Bf16ForwardRoundsOnce) {
  const std::vector<int64_t> sizes{4, 0, 6};
  const int64_t M = 10, in = 16, out = 8;
  Tensor x = randn({M, in}, "bx", DType::BF16), w = randn({3, out, in}, "bw", DType::BF16);
  Tensor y = empty({M, out}, DType::BF16);
  ops::grouped_linear_forward(y, x, w, sizes);
  const std::vector<float> vx = values(x), vw = values(w), vy = values(y);
  int64_t r = 0;
  for (int64_t e = 0; e < 3; ++e) {
    for (int64_t i = r; i < r + sizes[size_t(e)]; ++i)
      for (int64_t o = 0; o < out; ++o) {
        double s = 0;
        for (int64_t k = 0; k < in; ++k) s += double(vx[size_t(i * in + k)]) * vw[size_t((e * out + o) * in + k)];
        EXPECT_NEAR(vy[size_t(i * out + o)], s, std::fabs(s) / 256 + 1e-5) << "row " << i << " col " << o;
      }
    r += sizes[size_t(e)];
  }
}

TEST(GroupedLinear, WeightGradAccumulates) {
  const std::vector<int64_t> sizes{2, 0, 5};
  for (DType dt : {DType::F32, DType::BF16}) {
    Tensor x = randn({7, 6}, "ax", dt), dy = randn({7, 4}, "ady", dt);
    Tensor once = Tensor::zeros({3, 4, 6}, MemCategory::Grads, DType::F32, Device::CPU);
    Tensor twice = Tensor::zeros({3, 4, 6}, MemCategory::Grads, DType::F32, Device::CPU);
    ops::grouped_linear_backward_weight(once, dy, x, sizes);
    ops::grouped_linear_backward_weight(twice, dy, x, sizes);
    ops::grouped_linear_backward_weight(twice, dy, x, sizes);
    for (int64_t i = 0; i < once.numel(); ++i) EXPECT_EQ(twice.f32()[i], 2 * once.f32()[i]) << i;  // x2 is exact
    for (int64_t i = 4 * 6; i < 2 * 4 * 6; ++i) EXPECT_EQ(twice.f32()[i], 0.0f) << "empty group " << i;
  }
}

// The call throws a pb::Error of one line that names op.
template <class F>
static void expect_one_line_error(F&& f, const std::string& op, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << what << ": no error";
  } catch (const pb::Error& e) {
    const std::string m = e.what();
    EXPECT_EQ(m.find('\n'), std::string::npos) << what << ": " << m;
    EXPECT_NE(m.find(op), std::string::npos) << what << ": " << m;
  }
}

TEST(GroupedLinear, RejectsBadShapes) {
  Tensor x = randn({4, 3}, "x"), w = randn({2, 5, 3}, "w"), dy = randn({4, 5}, "dy");
  Tensor y = empty({4, 5}), dx = empty({4, 3}), dw = Tensor::zeros({2, 5, 3}, MemCategory::Grads, DType::F32, Device::CPU);
  const std::string fwd = "grouped_linear_forward", bin = "grouped_linear_backward_input",
                    bw = "grouped_linear_backward_weight";
  Tensor w2 = randn({5, 3}, "w2"), wbad = randn({2, 5, 4}, "wbad"), ybad = empty({4, 4}), y3 = empty({3, 5});
  expect_one_line_error([&] { ops::grouped_linear_forward(y, x, w2, {4}); }, fwd, "2-D w");
  expect_one_line_error([&] { ops::grouped_linear_forward(y, x, w, {4}); }, fwd, "one size for two groups");
  expect_one_line_error([&] { ops::grouped_linear_forward(y, x, wbad, {2, 2}); }, fwd, "w in != x cols");
  expect_one_line_error([&] { ops::grouped_linear_forward(y, x, w, {1, 2}); }, fwd, "sizes sum to 3");
  expect_one_line_error([&] { ops::grouped_linear_forward(y, x, w, {5, -1}); }, fwd, "negative size");
  expect_one_line_error([&] { ops::grouped_linear_forward(ybad, x, w, {2, 2}); }, fwd, "y cols");
  expect_one_line_error([&] { ops::grouped_linear_forward(y3, x, w, {2, 2}); }, fwd, "y rows");
  expect_one_line_error([&] { ops::grouped_linear_backward_input(dx, dy, w, {3, 0}); }, bin, "sizes sum");
  expect_one_line_error([&] { ops::grouped_linear_backward_input(dx, x, w, {2, 2}); }, bin, "dy cols");
  expect_one_line_error([&] { ops::grouped_linear_backward_input(ybad, dy, w, {2, 2}); }, bin, "dx cols");
  Tensor dwbad = Tensor::zeros({2, 5, 4}, MemCategory::Grads, DType::F32, Device::CPU);
  Tensor dwbf = empty({2, 5, 3}, DType::BF16), xbf = randn({4, 3}, "xbf", DType::BF16);
  expect_one_line_error([&] { ops::grouped_linear_backward_weight(dwbad, dy, x, {2, 2}); }, bw, "dw shape");
  expect_one_line_error([&] { ops::grouped_linear_backward_weight(dw, dy, x, {2, 2, 0}); }, bw, "three sizes");
  expect_one_line_error([&] { ops::grouped_linear_backward_weight(dw, dy, x, {4, 1}); }, bw, "sizes sum to 5");
  expect_one_line_error([&] { ops::grouped_linear_backward_weight(dwbf, dy, x, {2, 2}); }, bw, "bf16 dw");
  expect_one_line_error([&] { ops::grouped_linear_backward_weight(dw, dy, xbf, {2, 2}); }, bw, "mixed dy, x");
}

}  // namespace pb::test
