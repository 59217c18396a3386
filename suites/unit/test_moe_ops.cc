/* The MoE router and token-permutation ops on the CPU backend (kernels/cpu/moe_router.cc,
 * kernels/cpu/permute.cc through ops.h):
 *  - moe_router_forward / moe_router_backward equal the reference's router_forward /
 *    router_backward (reference/ops/moe_router.h) bit for bit in fp32, with and without
 *    renormalization, K = 1 and 2, rows with exact ties (the lower expert id wins), and the
 *    load-balancing term passed as the per-expert constant aux_grad_e = daux coef E f_e / N;
 *  - gather_rows / sum_rows round trip (the inverse permutation; K = 2 with dropped copies;
 *    no rows at all), scale_rows (in place too), row_dot, bf16 gathers exact;
 *  - bad input throws pb::Error with one line naming the op. */
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "optimized/kernels/ops.h"
#include "reference/common/counter_rng.h"
#include "reference/common/error.h"
#include "reference/ops/moe_router.h"

namespace pb::test {

static Tensor host(std::vector<int64_t> shape, DType dt = DType::F32) {
  return Tensor::empty(std::move(shape), MemCategory::Workspace, dt, Device::CPU);
}

static Tensor randn(std::vector<int64_t> shape, const std::string& name, DType dt = DType::F32) {
  Tensor f = host(shape);
  CounterRng rng(17, name);
  for (int64_t i = 0; i < f.numel(); ++i) f.f32()[i] = float(rng.normal(uint64_t(i)));
  if (dt == DType::F32) return f;
  Tensor b = host(shape, DType::BF16);
  ops::cast(b, f);
  return b;
}

static Tensor nan_host(std::vector<int64_t> shape) {
  Tensor t = host(std::move(shape));
  std::fill_n(t.f32(), t.numel(), std::numeric_limits<float>::quiet_NaN());
  return t;
}

static Tensor f32_of(const Tensor& t) {
  if (t.dtype() == DType::F32) return t;
  Tensor f = host(t.shape());
  ops::cast(f, t);
  return f;
}

static ref::Mat<float> mat(const Tensor& t) {
  ref::Mat<float> m(t.rows(), t.numel() / (t.rows() ? t.rows() : 1));
  for (int64_t i = 0; i < t.numel(); ++i) m.data()[i] = t.f32()[i];
  return m;
}

// Router logits (T, E) with two rows of exact ties: row 0 all equal (the top-K is 0, 1, ...),
// row 1 with experts 2 and 4 tied for the best (2 first) and 1 and 5 tied next (1 first).
static Tensor router_logits(int64_t T, int64_t E) {
  Tensor z = randn({T, E}, "router_logits");
  for (int64_t e = 0; e < E; ++e) z.f32()[e] = 0.25f;
  const float row1[6] = {-1.0f, 1.5f, 3.0f, 0.5f, 3.0f, 1.5f};
  for (int64_t e = 0; e < E; ++e) z.f32()[E + e] = row1[e % 6];
  return z;
}

class Router : public ::testing::TestWithParam<std::tuple<int, bool>> {};

TEST_P(Router, ForwardEqualsReference) {
  const auto [K, renorm] = GetParam();
  const int64_t T = 13, E = 6;
  const Tensor z = router_logits(T, E);
  Tensor probs = nan_host({T, E}), weights = nan_host({T, K});
  std::vector<int64_t> idx;
  std::vector<double> sums;
  ops::moe_router_forward(probs, weights, idx, sums, z, K, renorm);

  ref::RouterOut<float> r;
  const float coef = 0.01f;
  ref::router_forward(r, mat(z), K, renorm, coef);
  ASSERT_EQ(idx.size(), size_t(T * K));
  for (int64_t i = 0; i < T * E; ++i) EXPECT_EQ(probs.f32()[i], r.probs.data()[i]) << "probs " << i;
  for (int64_t i = 0; i < T * K; ++i) {
    EXPECT_EQ(idx[size_t(i)], r.idx[size_t(i)]) << "idx " << i;
    EXPECT_EQ(weights.f32()[i], r.weights.data()[i]) << "weights " << i;
  }
  // Ties: the lower expert id first.
  for (int64_t k = 0; k < K; ++k) EXPECT_EQ(idx[size_t(k)], k);
  EXPECT_EQ(idx[size_t(K)], 2);
  if (K == 2) {
    EXPECT_EQ(idx[size_t(K + 1)], 4);
  }
  // prob_sums: the column sums in double, rows in order; with the counts they give the loss.
  ASSERT_EQ(sums.size(), size_t(E));
  double aux = 0;
  for (int64_t e = 0; e < E; ++e) {
    double s = 0;
    for (int64_t t = 0; t < T; ++t) s += double(r.probs(t, e));
    EXPECT_EQ(sums[size_t(e)], s) << "expert " << e;
    aux += double(coef) * double(E) * (double(r.count[size_t(e)]) / double(T * K)) * (sums[size_t(e)] / double(T));
  }
  EXPECT_NEAR(aux, double(r.aux), 1e-7);
}

TEST_P(Router, BackwardEqualsReference) {
  const auto [K, renorm] = GetParam();
  const int64_t T = 13, E = 6;
  const Tensor z = router_logits(T, E);
  Tensor probs = nan_host({T, E}), weights = nan_host({T, K});
  std::vector<int64_t> idx;
  std::vector<double> sums;
  ops::moe_router_forward(probs, weights, idx, sums, z, K, renorm);
  const Tensor dw = randn({T, K}, "router_dw");
  for (const float coef : {0.0f, 0.01f}) {
    const float daux = 0.75f;
    ref::RouterOut<float> r;
    ref::router_forward(r, mat(z), K, renorm, coef);
    ref::Mat<float> want;
    ref::router_backward(want, mat(dw), daux, r, K, renorm, coef);
    // The caller's per-expert constant, as the reference forms it in fp32.
    std::vector<double> aux_grad(size_t(E), 0.0);
    if (coef != 0.0f)
      for (int64_t e = 0; e < E; ++e)
        aux_grad[size_t(e)] =
            daux * coef * float(E) * (float(r.count[size_t(e)]) / float(T * K)) / float(T);
    Tensor dl = nan_host({T, E});
    ops::moe_router_backward(dl, dw, probs, weights, IndexTensor(idx, Device::CPU), aux_grad, K, renorm);
    for (int64_t i = 0; i < T * E; ++i) EXPECT_EQ(dl.f32()[i], want.data()[i]) << "dlogits " << i << " coef " << coef;
  }
}

INSTANTIATE_TEST_SUITE_P(KAndRenorm, Router,
                         ::testing::Values(std::tuple{1, false}, std::tuple{1, true}, std::tuple{2, false},
                                           std::tuple{2, true}));

TEST(RouterEdge, NoRows) {
  Tensor z = host({0, 4}), probs = host({0, 4}), weights = host({0, 2}), dl = host({0, 4}), dw = host({0, 2});
  std::vector<int64_t> idx{7};
  std::vector<double> sums;
  ops::moe_router_forward(probs, weights, idx, sums, z, 2, true);
  EXPECT_TRUE(idx.empty());
  EXPECT_EQ(sums, std::vector<double>(4, 0.0));
  ops::moe_router_backward(dl, dw, probs, weights, IndexTensor({}, Device::CPU), std::vector<double>(4, 0.5), 2, true);
}

// Top-2 routing of T tokens over E experts (each token's two experts from the router), the
// copies sorted by expert as the MoE dispatcher lays them out; `drop` copies get slot -1.
struct Routing {
  std::vector<int64_t> rows;   // (R) token of each permuted row
  std::vector<int64_t> slots;  // (T*K) permuted row of each copy, -1 when dropped
};
static Routing route(const std::vector<int64_t>& idx, int64_t T, int64_t K, int64_t E,
                     const std::vector<int64_t>& drop) {
  Routing r;
  r.slots.assign(size_t(T * K), -1);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t c = 0; c < T * K; ++c)
      if (idx[size_t(c)] == e && std::find(drop.begin(), drop.end(), c) == drop.end()) {
        r.slots[size_t(c)] = int64_t(r.rows.size());
        r.rows.push_back(c / K);
      }
  return r;
}

TEST(Permute, InversePermutationRoundTripsExactly) {
  const int64_t T = 11, C = 7;
  const std::vector<int64_t> perm{3, 10, 0, 7, 1, 9, 2, 8, 5, 4, 6};
  std::vector<int64_t> inv(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) inv[size_t(perm[size_t(i)])] = i;
  for (DType dt : {DType::F32, DType::BF16}) {
    const Tensor x = randn({T, C}, "perm_x", dt);
    Tensor p = host({T, C}, dt), back = host({T, C}, dt);
    ops::gather_rows(p, x, IndexTensor(perm, Device::CPU));
    ops::sum_rows(back, p, IndexTensor(inv, Device::CPU), 1);
    const size_t bytes = size_t(x.bytes());
    EXPECT_EQ(std::memcmp(back.raw(), x.raw(), bytes), 0) << dtype_name(dt);
    const size_t row = bytes / size_t(T);
    for (int64_t i = 0; i < T; ++i)  // a gathered row is an exact copy (bf16 too)
      EXPECT_EQ(std::memcmp(static_cast<const char*>(p.raw()) + size_t(i) * row,
                            static_cast<const char*>(x.raw()) + size_t(perm[size_t(i)]) * row, row),
                0)
          << dtype_name(dt) << " row " << i;
  }
}

TEST(Permute, TopTwoDispatchAndCombineWithDroppedCopies) {
  const int64_t T = 9, C = 5, K = 2, E = 4;
  std::vector<int64_t> idx(size_t(T * K));
  for (int64_t t = 0; t < T; ++t) {
    idx[size_t(t * K)] = t % E;
    idx[size_t(t * K + 1)] = (t * 3 + 1) % E == t % E ? (t + 1) % E : (t * 3 + 1) % E;
  }
  const Routing r = route(idx, T, K, E, /*drop=*/{1, 4, 5, 12});  // token 2 loses both copies
  const int64_t R = int64_t(r.rows.size());
  ASSERT_EQ(R, T * K - 4);
  for (DType dt : {DType::F32, DType::BF16}) {
    const Tensor x = randn({T, C}, "dispatch_x", dt);
    Tensor p = host({R, C}, dt);
    ops::gather_rows(p, x, IndexTensor(r.rows, Device::CPU));
    // Scale each copy by a combine weight, then sum the copies back (Megatron's unpermute).
    Tensor w = randn({R}, "dispatch_w");
    Tensor pw = host({R, C}, dt);
    ops::scale_rows(pw, p, w);
    Tensor y = host({T, C}, dt);
    std::fill_n(static_cast<char*>(y.raw()), y.bytes(), char(0x7f));  // poisoned: overwritten
    ops::sum_rows(y, pw, IndexTensor(r.slots, Device::CPU), K);
    const Tensor xf = f32_of(x), yf = f32_of(y);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < C; ++c) {
        float want = 0.0f;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t s = r.slots[size_t(t * K + k)];
          if (s < 0) continue;
          float prod = xf.f32()[t * C + c] * w.f32()[s];
          if (dt == DType::BF16) prod = bf16_to_float(float_to_bf16(prod));  // pw is bf16
          want += prod;
        }
        if (dt == DType::BF16) want = bf16_to_float(float_to_bf16(want));  // rounded once
        EXPECT_EQ(yf.f32()[t * C + c], want) << dtype_name(dt) << " token " << t << " col " << c;
      }
    for (int64_t c = 0; c < C; ++c) EXPECT_EQ(yf.f32()[2 * C + c], 0.0f) << "token 2 has no copies";
  }
}

TEST(Permute, EmptyRows) {
  const int64_t T = 4, C = 3;
  const Tensor x = randn({T, C}, "empty_x");
  Tensor p = host({0, C});
  ops::gather_rows(p, x, IndexTensor({}, Device::CPU));
  Tensor y = nan_host({T, C});
  ops::sum_rows(y, p, IndexTensor(std::vector<int64_t>(size_t(2 * T), -1), Device::CPU), 2);
  for (int64_t i = 0; i < T * C; ++i) EXPECT_EQ(y.f32()[i], 0.0f);
  Tensor y0 = host({0, C});
  ops::sum_rows(y0, x, IndexTensor({}, Device::CPU), 2);
  Tensor s0 = host({0}), d0 = host({0});
  ops::scale_rows(p, p, s0);
  ops::row_dot(d0, p, p);
}

TEST(Permute, ScaleRowsInPlaceAndBf16) {
  const int64_t R = 6, C = 9;
  const Tensor s = randn({R}, "scale_s");
  for (DType dt : {DType::F32, DType::BF16}) {
    const Tensor x = randn({R, C}, "scale_x", dt);
    const Tensor xf = f32_of(x);
    Tensor y = host({R, C}, dt);
    ops::scale_rows(y, x, s);
    Tensor z = randn({R, C}, "scale_x", dt);  // the same values, scaled in place
    ops::scale_rows(z, z, s);
    const Tensor yf = f32_of(y), zf = f32_of(z);
    for (int64_t i = 0; i < R; ++i)
      for (int64_t c = 0; c < C; ++c) {
        float want = xf.f32()[i * C + c] * s.f32()[i];
        if (dt == DType::BF16) want = bf16_to_float(float_to_bf16(want));
        EXPECT_EQ(yf.f32()[i * C + c], want) << dtype_name(dt);
        EXPECT_EQ(zf.f32()[i * C + c], want) << dtype_name(dt) << " in place";
      }
  }
}

TEST(Permute, RowDot) {
  const int64_t R = 5, C = 33;
  for (DType dt : {DType::F32, DType::BF16}) {
    const Tensor a = randn({R, C}, "dot_a", dt), b = randn({R, C}, "dot_b", dt);
    const Tensor af = f32_of(a), bf = f32_of(b);
    Tensor out = nan_host({R});
    ops::row_dot(out, a, b);
    for (int64_t i = 0; i < R; ++i) {
      double want = 0;
      for (int64_t c = 0; c < C; ++c) want += double(af.f32()[i * C + c]) * bf.f32()[i * C + c];
      EXPECT_NEAR(out.f32()[i], want, 1e-5 * (1 + std::abs(want))) << dtype_name(dt) << " row " << i;
    }
  }
  // Mixed dtypes: promoted.
  const Tensor a = randn({R, C}, "dot_a"), b16 = randn({R, C}, "dot_b", DType::BF16);
  Tensor o1 = nan_host({R}), o2 = nan_host({R});
  ops::row_dot(o1, a, b16);
  ops::row_dot(o2, a, f32_of(b16));
  for (int64_t i = 0; i < R; ++i) EXPECT_EQ(o1.f32()[i], o2.f32()[i]);
}

// On a CPU worker stream the ops queue (closures holding their arguments) and the router's
// forward, which returns host values, runs after the stream's queued work.
TEST(MoeOps, WorkerStreamMatchesInline) {
  const int64_t T = 8, E = 5, K = 2, C = 6;
  const Tensor z = randn({T, E}, "stream_z"), x = randn({T, C}, "stream_x");
  Tensor p0 = host({T, E}), w0 = host({T, K});
  std::vector<int64_t> i0, i1;
  std::vector<double> s0, s1;
  ops::moe_router_forward(p0, w0, i0, s0, z, K, true);
  const Stream st = Stream::create(Device::CPU);
  Tensor zz = host({T, E}), p1 = host({T, E}), w1 = host({T, K});
  ops::copy(zz, z, st);  // queued: the router must see it
  ops::moe_router_forward(p1, w1, i1, s1, zz, K, true, st);
  EXPECT_EQ(i0, i1);
  EXPECT_EQ(s0, s1);
  EXPECT_EQ(std::memcmp(p0.raw(), p1.raw(), p0.bytes()), 0);
  EXPECT_EQ(std::memcmp(w0.raw(), w1.raw(), w0.bytes()), 0);
  const std::vector<int64_t> rows{7, 0, 3, 3, 1};
  Tensor g = host({5, C}), y = nan_host({T, C});
  ops::gather_rows(g, x, IndexTensor(rows, Device::CPU), st);
  ops::scale_rows(g, g, randn({5}, "stream_s"), st);
  ops::sum_rows(y, g, IndexTensor({1, -1, 4, -1, -1, -1, 2, 3, -1, -1, -1, -1, -1, -1, 0, -1}, Device::CPU), K, st);
  Tensor d = nan_host({T});
  ops::row_dot(d, y, y, st);
  st.synchronize();
  Tensor g2 = host({5, C}), y2 = nan_host({T, C}), d2 = nan_host({T});
  ops::gather_rows(g2, x, IndexTensor(rows, Device::CPU));
  ops::scale_rows(g2, g2, randn({5}, "stream_s"));
  ops::sum_rows(y2, g2, IndexTensor({1, -1, 4, -1, -1, -1, 2, 3, -1, -1, -1, -1, -1, -1, 0, -1}, Device::CPU), K);
  ops::row_dot(d2, y2, y2);
  EXPECT_EQ(std::memcmp(y.raw(), y2.raw(), y.bytes()), 0);
  EXPECT_EQ(std::memcmp(d.raw(), d2.raw(), d.bytes()), 0);
}

// One line, naming the op.
template <class F>
static void expect_error(F&& f, const std::string& op) {
  try {
    f();
    ADD_FAILURE() << op << ": no error";
  } catch (const pb::Error& e) {
    const std::string m = e.what();
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    EXPECT_EQ(m.rfind(op + ":", 0), 0u) << m;
  }
}

TEST(MoeOps, BadInputThrowsOneLine) {
  const int64_t T = 4, E = 3;
  Tensor z = randn({T, E}, "bad_z"), probs = host({T, E}), w2 = host({T, 2}), w4 = host({T, 4});
  std::vector<int64_t> idx;
  std::vector<double> sums;
  const std::string fwd = "moe_router_forward", bwd = "moe_router_backward";
  expect_error([&] { ops::moe_router_forward(probs, w2, idx, sums, z, 0, false); }, fwd);
  expect_error([&] { ops::moe_router_forward(probs, w4, idx, sums, z, 4, false); }, fwd);
  expect_error([&] { ops::moe_router_forward(probs, w4, idx, sums, z, 2, false); }, fwd);  // weights (T, 4)
  expect_error([&] { Tensor p = host({T, E + 1}); ops::moe_router_forward(p, w2, idx, sums, z, 2, false); }, fwd);
  expect_error([&] { ops::moe_router_forward(probs, w2, idx, sums, randn({T, E}, "bad_z", DType::BF16), 2, false); },
               fwd);
  expect_error([&] { ops::moe_router_forward(probs, w2, idx, sums, host({T * E}), 2, false); }, fwd);

  ops::moe_router_forward(probs, w2, idx, sums, z, 2, true);
  const IndexTensor good(idx, Device::CPU);
  Tensor dl = host({T, E}), dw = randn({T, 2}, "bad_dw");
  const std::vector<double> aux(size_t(E), 0.0);
  expect_error([&] { ops::moe_router_backward(dl, dw, probs, w2, IndexTensor({0, 1}, Device::CPU), aux, 2, true); },
               bwd);
  expect_error(
      [&] {
        std::vector<int64_t> bad = idx;
        bad[3] = E;
        ops::moe_router_backward(dl, dw, probs, w2, IndexTensor(bad, Device::CPU), aux, 2, true);
      },
      bwd);
  expect_error([&] { ops::moe_router_backward(dl, dw, probs, w2, good, {0.0}, 2, true); }, bwd);
  expect_error([&] { ops::moe_router_backward(dl, w4, probs, w2, good, aux, 2, true); }, bwd);
  expect_error([&] { ops::moe_router_backward(dl, dw, probs, w2, good, aux, 4, true); }, bwd);

  const Tensor x = randn({T, 5}, "bad_x");
  Tensor out = host({2, 5});
  expect_error([&] { ops::gather_rows(out, x, IndexTensor({0, T}, Device::CPU)); }, "gather_rows");
  expect_error([&] { ops::gather_rows(out, x, IndexTensor({0, -1}, Device::CPU)); }, "gather_rows");
  expect_error([&] { ops::gather_rows(out, x, IndexTensor({0}, Device::CPU)); }, "gather_rows");
  expect_error([&] { Tensor o = host({2, 4}); ops::gather_rows(o, x, IndexTensor({0, 1}, Device::CPU)); },
               "gather_rows");
  expect_error([&] { Tensor o = host({2, 5}, DType::BF16); ops::gather_rows(o, x, IndexTensor({0, 1}, Device::CPU)); },
               "gather_rows");
  Tensor y = host({T, 5});
  expect_error([&] { ops::sum_rows(y, out, IndexTensor(std::vector<int64_t>(size_t(T), 2), Device::CPU), 1); },
               "sum_rows");  // slot 2 of 2 rows
  expect_error([&] { ops::sum_rows(y, out, IndexTensor(std::vector<int64_t>(size_t(T), 0), Device::CPU), 2); },
               "sum_rows");  // T slots for K = 2
  expect_error([&] { ops::sum_rows(y, out, IndexTensor({}, Device::CPU), 0); }, "sum_rows");
  expect_error([&] { Tensor yy = x; ops::scale_rows(yy, x, host({T + 1})); }, "scale_rows");
  expect_error([&] { Tensor yy = host({T, 5}, DType::BF16); ops::scale_rows(yy, x, host({T})); }, "scale_rows");
  expect_error([&] { Tensor yy = x; ops::scale_rows(yy, x, host({T}, DType::BF16)); }, "scale_rows");
  expect_error([&] { Tensor o = host({T}); ops::row_dot(o, x, host({T, 4})); }, "row_dot");
  expect_error([&] { Tensor o = host({T}, DType::BF16); ops::row_dot(o, x, x); }, "row_dot");
  expect_error([&] { Tensor o = host({T - 1}); ops::row_dot(o, x, x); }, "row_dot");
}

}  // namespace pb::test
