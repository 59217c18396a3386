/* Multi-dimensional tensor parallelism's building blocks (issue 17): the grids of the TP
 * ranks (tp_grid.h), SUMMA, 2D's linear (tp2d_summa.h), and 3D's linear (tp3d_linear.h).
 *   - every grid: coordinates and ranks invert each other; each direction's group holds the
 *     ranks that differ only in that coordinate, in its order; 2D and 3D number as
 *     Colossal-AI's legacy parallel_2d / parallel_3d; bad rank counts give one line;
 *   - SUMMA on 2 x 2 ranks: y, dx and dW equal the dense x W^T, dy W and dy^T x (fp32, to
 *     1e-6 relative: the sums run in another order), and every rank's communication equals
 *     summa_terms exactly;
 *   - 2.5D on 2 layers of 2 x 2 (8 ranks): SUMMA per layer on its half of the batch, the
 *     weight gradient summed over the depth group equal to the dense one of the whole batch;
 *   - the 3D linear on 2 x 2 x 2 ranks, two weights on one input: y, dx and dW equal the dense
 *     products at each rank's blocks, and every rank's communication equals linear3d_terms
 *     exactly. */
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <memory>

#include "mpi_test_util.h"
#include "optimized/comm/ledger.h"
#include "optimized/comm/mpi_communicator.h"
#include "optimized/kernels/ops.h"
#include "optimized/parallel/tp2d_summa.h"
#include "optimized/parallel/tp3d_linear.h"
#include "optimized/parallel/tp_grid.h"
#include "reference/common/error.h"

namespace pb::test {

TEST(TpGrid, CoordinatesAndGroups) {
  for (const auto& [kind, tp, depth] : std::vector<std::tuple<std::string, int, int>>{
           {"1d", 4, 1}, {"2d", 4, 1}, {"2d", 9, 1}, {"2.5d", 8, 2}, {"2.5d", 12, 3}, {"3d", 8, 1}, {"3d", 27, 1}}) {
    const TpGrid g = TpGrid::of(kind, tp, depth);
    ASSERT_EQ(g.size(), tp) << kind;
    for (int r = 0; r < tp; ++r) {
      const TpGrid::Coords c = g.coords(r);
      EXPECT_EQ(g.rank(c), r) << kind << " " << r;
      for (const auto dir : {TpGrid::Dir::I, TpGrid::Dir::J, TpGrid::Dir::K}) {
        const std::vector<int> m = g.group(dir, r);
        const int place = dir == TpGrid::Dir::I ? c.i : dir == TpGrid::Dir::J ? c.j : c.k;
        ASSERT_LT(place, int(m.size())) << kind;
        EXPECT_EQ(m[size_t(place)], r) << kind;
        for (size_t x = 0; x < m.size(); ++x) {
          TpGrid::Coords o = g.coords(m[x]), want = c;
          (dir == TpGrid::Dir::I ? want.i : dir == TpGrid::Dir::J ? want.j : want.k) = int(x);
          EXPECT_EQ(o, want) << kind << " " << r;
        }
      }
    }
  }
  // 2D: the row of rank 5 on 3 x 3 is 3, 4, 5 (Colossal-AI: rank = i q + j); 3D's input
  // group (vary j) of rank 1 on 2 x 2 x 2 is 1, 3 (rank = i + q j + q^2 k).
  EXPECT_EQ(TpGrid::of("2d", 9).group(TpGrid::Dir::J, 5), (std::vector<int>{3, 4, 5}));
  EXPECT_EQ(TpGrid::of("3d", 8).group(TpGrid::Dir::J, 1), (std::vector<int>{1, 3}));
  EXPECT_EQ(TpGrid::of("2.5d", 8, 2).group(TpGrid::Dir::K, 1), (std::vector<int>{1, 5}));
  for (const auto& [kind, tp, depth, what] : std::vector<std::tuple<std::string, int, int, std::string>>{
           {"2d", 8, 1, "tp must be a square, got tp 8"},
           {"2.5d", 8, 3, "tp_depth 3 must be >= 1 and divide tp 8"},
           {"2.5d", 12, 2, "tp / d = 6 must be a square"},
           {"3d", 9, 1, "tp must be a cube, got tp 9"},
           {"2d", 4, 2, "tp_depth 2 is 2.5d's"},
           {"4d", 4, 1, "unknown tp_kind '4d'"}}) {
    try {
      TpGrid::of(kind, tp, depth);
      ADD_FAILURE() << kind << " " << tp << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    }
  }
}

// Element (r, c) of a global test matrix, the same on every rank.
static float value(int64_t r, int64_t c, float salt) { return std::sin(0.37f * float(r) + 0.91f * float(c) + salt); }

// Rows [r0, r0 + nr) and columns [c0, c0 + nc) of the global test matrix `salt`.
static Tensor sub_matrix(int64_t r0, int64_t nr, int64_t c0, int64_t nc, float salt) {
  Tensor t = Tensor::empty({nr, nc}, MemCategory::Workspace);
  for (int64_t a = 0; a < nr; ++a)
    for (int64_t e = 0; e < nc; ++e) t.f32()[a * nc + e] = value(r0 + a, c0 + e, salt);
  return t;
}

// Block (bi, bj) of a global (R, C) matrix in a q x q blocking.
static Tensor block(int64_t R, int64_t C, int q, int bi, int bj, float salt) {
  return sub_matrix(bi * (R / q), R / q, bj * (C / q), C / q, salt);
}

// A communicator of MPI_COMM_WORLD's ranks of one color, ordered by key.
static std::unique_ptr<MpiCommunicator> split_world(const char* name, int color, int key) {
  MPI_Comm m;
  MPI_Comm_split(MPI_COMM_WORLD, color, key, &m);
  return std::make_unique<MpiCommunicator>(name, m);
}

static void expect_close(const Tensor& got, const std::vector<double>& want, const char* what) {
  double diff = 0, norm = 0;
  for (int64_t k = 0; k < got.numel(); ++k)
    diff += std::pow(got.f32()[k] - want[size_t(k)], 2), norm += want[size_t(k)] * want[size_t(k)];
  EXPECT_LT(std::sqrt(diff / norm), 1e-6) << what;
}

// Every rank's ledger holds exactly the terms' rows: calls per (group, op, phase, call size).
static void expect_ledger_is(const Terms& t) {
  const auto& e = CommLedger::get().entries();
  for (const auto& term : t.comm) {
    const auto it = e.find({term.group, term.op, term.phase, term.bytes_per_call});
    ASSERT_NE(it, e.end()) << term.group << " " << comm_op_name(term.op) << " " << term.bytes_per_call;
    EXPECT_EQ(it->second.calls, term.calls) << term.group << " " << comm_op_name(term.op);
  }
  EXPECT_EQ(t.comm.size(), e.size());
}

TEST(Summa, EqualsTheDenseProductWithExactCommunication) {
  if (world_size() != 4) GTEST_SKIP() << "a 2 x 2 grid: 4 ranks";
  const TpGrid g = TpGrid::of("2d", 4);
  const int q = g.q;
  const TpGrid::Coords c = g.coords(world_rank());
  const auto row_p = split_world("row", c.i, c.j), col_p = split_world("col", c.j, c.i);  // same i / same j
  Communicator &row = *row_p, &col = *col_p;
  const int64_t N = 6, in = 4, out = 8;
  const Tensor x = block(N, in, q, c.i, c.j, 0.1f), w = block(out, in, q, c.j, c.i, 0.7f);
  const Tensor dy = block(N, out, q, c.i, c.j, 1.3f);
  CommLedger::get().clear();
  Tensor y = Tensor::empty({N / q, out / q}, MemCategory::Workspace);
  {
    PhaseScope phase(Phase::Forward);
    summa_forward(y, x, w, row, col);
  }
  Tensor dx = Tensor::empty({N / q, in / q}, MemCategory::Workspace);
  Tensor dw = Tensor::zeros({out / q, in / q}, MemCategory::Workspace);
  {
    PhaseScope phase(Phase::Backward);
    summa_backward(dx, dw, dy, x, w, row, col);
  }
  // The dense products, in double: y = x W^T, dx = dy W, dW = dy^T x, at this rank's blocks.
  std::vector<double> wy, wdx, wdw;
  for (int64_t a = 0; a < N / q; ++a)
    for (int64_t b = 0; b < out / q; ++b) {
      double s = 0;
      for (int64_t k = 0; k < in; ++k) s += double(value(c.i * N / q + a, k, 0.1f)) * value(c.j * out / q + b, k, 0.7f);
      wy.push_back(s);
    }
  for (int64_t a = 0; a < N / q; ++a)
    for (int64_t b = 0; b < in / q; ++b) {
      double s = 0;
      for (int64_t k = 0; k < out; ++k) s += double(value(c.i * N / q + a, k, 1.3f)) * value(k, c.j * in / q + b, 0.7f);
      wdx.push_back(s);
    }
  for (int64_t a = 0; a < out / q; ++a)  // W_ji: output rows block j, input columns block i
    for (int64_t b = 0; b < in / q; ++b) {
      double s = 0;
      for (int64_t k = 0; k < N; ++k) s += double(value(k, c.j * out / q + a, 1.3f)) * value(k, c.i * in / q + b, 0.1f);
      wdw.push_back(s);
    }
  expect_close(y, wy, "y");
  expect_close(dx, wdx, "dx");
  expect_close(dw, wdw, "dW");
  Terms t;
  summa_terms("row", "col", q, 1, N, in, {out}, 4, t);
  expect_ledger_is(t);
}

// 2.5D (Tesseract): d = 2 layers of 2 x 2, rank k q^2 + i q + j; layer k trains on batch half
// k with SUMMA (the weights replicated over the layers), and the weight gradient is the sum
// over the depth group: equal to the dense dW over the whole batch.
TEST(Summa, TesseractLayersSumToTheWholeBatch) {
  if (world_size() != 8) GTEST_SKIP() << "2 layers of 2 x 2: 8 ranks";
  const TpGrid g = TpGrid::of("2.5d", 8, 2);
  const int q = g.q;
  const TpGrid::Coords c = g.coords(world_rank());
  const auto row = split_world("row", c.k * q + c.i, c.j), col = split_world("col", c.k * q + c.j, c.i);
  const auto depth = split_world("depth", c.i * q + c.j, c.k);
  const int64_t N = 8, in = 4, out = 6, half = N / g.d;  // layer k: rows k*half ..
  const int64_t r0 = c.k * half + c.i * (half / q);
  const Tensor x = sub_matrix(r0, half / q, c.j * (in / q), in / q, 0.3f);
  const Tensor w = sub_matrix(c.j * (out / q), out / q, c.i * (in / q), in / q, 0.6f);
  const Tensor dy = sub_matrix(r0, half / q, c.j * (out / q), out / q, 1.1f);
  Tensor y = Tensor::empty({half / q, out / q}, MemCategory::Workspace);
  summa_forward(y, x, w, *row, *col);
  Tensor dx = Tensor::empty({half / q, in / q}, MemCategory::Workspace);
  Tensor dw = Tensor::zeros({out / q, in / q}, MemCategory::Workspace);
  summa_backward(dx, dw, dy, x, w, *row, *col);
  static_cast<Communicator&>(*depth).all_reduce(dw);  // the replicas' sum (the gradient reduction's job in a model)
  std::vector<double> wy, wdw;
  for (int64_t a = 0; a < half / q; ++a)
    for (int64_t e = 0; e < out / q; ++e) {
      double s = 0;
      for (int64_t k = 0; k < in; ++k) s += double(value(r0 + a, k, 0.3f)) * value(c.j * (out / q) + e, k, 0.6f);
      wy.push_back(s);
    }
  for (int64_t a = 0; a < out / q; ++a)
    for (int64_t e = 0; e < in / q; ++e) {
      double s = 0;
      for (int64_t n = 0; n < N; ++n) s += double(value(n, c.j * (out / q) + a, 1.1f)) * value(n, c.i * (in / q) + e, 0.3f);
      wdw.push_back(s);
    }
  expect_close(y, wy, "y");
  expect_close(dw, wdw, "dW over both layers");
}

// 3D: rank (i, j, k) = i + 2j + 4k; x rows: batch block i, sub-block j, columns input block k;
// W (out, in) rows: output block j, sub-block i, columns input block k; y rows: batch block i,
// sub-block k, columns output block j (tp3d_linear.h). Two weights on one input (q and k of
// a layer): the shared gathers and dx's one reduce-scatter.
TEST(Linear3d, EqualsTheDenseProductWithExactCommunication) {
  if (world_size() != 8) GTEST_SKIP() << "a 2 x 2 x 2 grid: 8 ranks";
  const TpGrid g = TpGrid::of("3d", 8);
  const int q = g.q;
  const TpGrid::Coords c = g.coords(world_rank());
  const auto input = split_world("input", c.i + 4 * c.k, c.j), weight = split_world("weight", c.j + 4 * c.k, c.i);
  const auto output = split_world("output", c.i + 4 * c.j, c.k);
  const int64_t B = 8, in = 4, b = B / (q * q);
  const std::vector<int64_t> outs = {8, 4};
  const float wsalt[2] = {0.5f, 0.6f}, dysalt[2] = {0.9f, 1.7f};
  // Global X (B, in), W_w (out_w, in) with W(o, k) = value(k, o), dY_w (B, out_w); this rank's blocks.
  const int64_t xr = c.i * (B / q) + c.j * b, yr = c.i * (B / q) + c.k * b;
  const Tensor x = sub_matrix(xr, b, c.k * (in / q), in / q, 0.2f);
  std::vector<Tensor> w, dy, y, dw;
  for (size_t v = 0; v < outs.size(); ++v) {
    const int64_t out = outs[v], ob = out / (q * q), o0 = c.j * (out / q) + c.i * ob;
    Tensor t = Tensor::empty({ob, in / q}, MemCategory::Workspace);
    for (int64_t a = 0; a < ob; ++a)
      for (int64_t e = 0; e < in / q; ++e) t.f32()[a * (in / q) + e] = value(c.k * (in / q) + e, o0 + a, wsalt[v]);
    w.push_back(t);
    dy.push_back(sub_matrix(yr, b, c.j * (out / q), out / q, dysalt[v]));
    y.push_back(Tensor::empty({b, out / q}, MemCategory::Workspace));
    dw.push_back(Tensor::zeros({ob, in / q}, MemCategory::Workspace));
  }
  CommLedger::get().clear();
  {
    PhaseScope phase(Phase::Forward);
    linear3d_forward({&y[0], &y[1]}, x, {&w[0], &w[1]}, *input, *weight, *output);
  }
  Tensor dx = Tensor::empty({b, in / q}, MemCategory::Workspace);
  {
    PhaseScope phase(Phase::Backward);
    linear3d_backward(dx, {&dw[0], &dw[1]}, {&dy[0], &dy[1]}, x, {&w[0], &w[1]}, *input, *weight, *output);
  }
  for (size_t v = 0; v < outs.size(); ++v) {
    const int64_t out = outs[v], ob = out / (q * q), o0 = c.j * (out / q) + c.i * ob;
    std::vector<double> wy, wdw;
    for (int64_t a = 0; a < b; ++a)  // y = X W^T: rows yr.., output block j
      for (int64_t e = 0; e < out / q; ++e) {
        double s = 0;
        for (int64_t k = 0; k < in; ++k) s += double(value(yr + a, k, 0.2f)) * value(k, c.j * (out / q) + e, wsalt[v]);
        wy.push_back(s);
      }
    for (int64_t a = 0; a < ob; ++a)  // dW = dY^T X: output rows o0.., input block k
      for (int64_t e = 0; e < in / q; ++e) {
        double s = 0;
        for (int64_t n = 0; n < B; ++n) s += double(value(n, o0 + a, dysalt[v])) * value(n, c.k * (in / q) + e, 0.2f);
        wdw.push_back(s);
      }
    expect_close(y[v], wy, "y");
    expect_close(dw[v], wdw, "dW");
  }
  std::vector<double> wdx;
  for (int64_t a = 0; a < b; ++a)  // dx = sum_w dY_w W_w: rows xr.., input block k
    for (int64_t e = 0; e < in / q; ++e) {
      double s = 0;
      for (size_t v = 0; v < outs.size(); ++v)
        for (int64_t o = 0; o < outs[v]; ++o)
          s += double(value(xr + a, o, dysalt[v])) * value(c.k * (in / q) + e, o, wsalt[v]);
      wdx.push_back(s);
    }
  expect_close(dx, wdx, "dx");
  Terms t;
  linear3d_terms("input", "weight", "output", q, 1, B, in, outs, 4, t);
  expect_ledger_is(t);
}

}  // namespace pb::test
