/* The grids of multi-dimensional tensor parallelism (see tp_grid.h). */
#include "optimized/parallel/tp_grid.h"

#include "reference/common/error.h"

namespace pb {

namespace {
int root(int n, int power) {  // the integer r with r^power == n, or 0
  for (int r = 1;; ++r) {
    int64_t p = 1;
    for (int k = 0; k < power; ++k) p *= r;
    if (p == n) return r;
    if (p > n) return 0;
  }
}
}  // namespace

TpGrid TpGrid::of(const std::string& kind, int tp, int depth) {
  PB_REQUIRE(tp >= 1, "tp must be >= 1, got ", tp);
  PB_REQUIRE(depth == 1 || kind == "2.5d", "tp_depth ", depth, " is 2.5d's (d layers of the q x q grid), not ", kind, "'s");
  TpGrid g;
  if (kind == "1d") {
    g.q = tp;
    return g;
  }
  if (kind == "2d") {
    g.kind = TpKind::TwoD, g.q = root(tp, 2);
    PB_REQUIRE(g.q > 0, "tp_kind 2d arranges the tp ranks as q x q: tp must be a square, got tp ", tp);
    return g;
  }
  if (kind == "2.5d") {
    PB_REQUIRE(depth >= 1 && tp % depth == 0, "tp_kind 2.5d arranges the tp ranks as q x q x d: tp_depth ", depth,
               " must be >= 1 and divide tp ", tp);
    g.kind = TpKind::TwoHalfD, g.d = depth, g.q = root(tp / depth, 2);
    PB_REQUIRE(g.q > 0, "tp_kind 2.5d arranges the tp ranks as q x q x d: tp / d = ", tp / depth,
               " must be a square, got tp ", tp, ", tp_depth ", depth);
    return g;
  }
  if (kind == "3d") {
    g.kind = TpKind::ThreeD, g.q = root(tp, 3);
    PB_REQUIRE(g.q > 0, "tp_kind 3d arranges the tp ranks as q x q x q: tp must be a cube, got tp ", tp);
    return g;
  }
  throw Error("unknown tp_kind '" + kind + "' (1d, 2d, 2.5d, 3d)");
}

int TpGrid::size() const {
  switch (kind) {
    case TpKind::OneD: return q;
    case TpKind::TwoD: return q * q;
    case TpKind::TwoHalfD: return q * q * d;
    case TpKind::ThreeD: return q * q * q;
  }
  return q;
}

int TpGrid::row_blocks() const {
  switch (kind) {
    case TpKind::OneD: return 1;
    case TpKind::TwoD: return q;
    case TpKind::TwoHalfD: return q * d;
    case TpKind::ThreeD: return q * q;
  }
  return 1;
}

TpGrid::Coords TpGrid::coords(int r) const {
  PB_REQUIRE(r >= 0 && r < size(), "tp grid: rank ", r, " outside its ", size(), " ranks");
  switch (kind) {
    case TpKind::OneD: return {0, r, 0};
    case TpKind::TwoD: return {r / q, r % q, 0};
    case TpKind::TwoHalfD: return {r / q % q, r % q, r / (q * q)};
    case TpKind::ThreeD: return {r % q, r / q % q, r / (q * q)};
  }
  return {};
}

int TpGrid::rank(const Coords& c) const {
  switch (kind) {
    case TpKind::OneD: return c.j;
    case TpKind::TwoD: return c.i * q + c.j;
    case TpKind::TwoHalfD: return c.k * q * q + c.i * q + c.j;
    case TpKind::ThreeD: return c.i + q * c.j + q * q * c.k;
  }
  return 0;
}

std::vector<int> TpGrid::group(Dir dir, int r) const {
  const Coords me = coords(r);
  const int n = dir == Dir::K ? (kind == TpKind::TwoHalfD ? d : kind == TpKind::ThreeD ? q : 1)
                              : (kind == TpKind::OneD && dir == Dir::I ? 1 : q);
  std::vector<int> out;
  for (int x = 0; x < n; ++x) {
    Coords c = me;
    (dir == Dir::I ? c.i : dir == Dir::J ? c.j : c.k) = x;
    out.push_back(rank(c));
  }
  return out;
}

}  // namespace pb
