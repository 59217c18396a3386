/* CPU causal attention, FlashAttention-style: tiles of queries x keys with an online
 * softmax, no S x S buffer, GQA read in place (query head a reads kv head a / (A/G) straight
 * from K and V, no copy per head).
 *
 * Dao et al., "FlashAttention", arXiv 2205.14135; "FlashAttention-2", arXiv 2307.08691.
 * Same op as the reference (reference/ops/attention.h), same explicit positions: key j is
 * visible to query i iff kpos[j] <= qpos[i]; a row that sees no key gets o = 0, lse = -inf
 * (the partial blocks of ring attention, Liu et al., arXiv 2310.01889).
 *   q, o (B*S, A*D); k, v (B*Sk, G*D); lse (B*A, S)
 *
 * forward, one task per (b, a, query tile Qi of Br rows), key tiles Kj of Bc rows in order:
 *   S = scale Qi Kj^T (masked -inf)      m' = max(m, rowmax S)
 *   P = exp(S - m'),  l = l e^(m - m') + rowsum P,  O = O e^(m - m') + P Vj
 *   end: o = O / l,  lse = m + log l
 * backward, one task per (b, kv head g), which owns dK, dV of g and dQ of g's query heads
 * (no two tasks write one element: no atomics, no racing sums):
 *   Di = dO_i . o_i;  per key tile Kj, per query head of g, per query tile Qi:
 *   P = exp(scale Qi Kj^T - lse_i),  dVj += P^T dOi,  dP = dOi Vj^T,  dS = P (dP - Di)
 *   dQi += scale dS Kj,  dKj += scale dS^T Qi
 * A tile pair no key of which is visible to any of its queries is skipped (the causal upper
 * triangle); a pair with every key visible is not masked.
 *
 * Every tile product is the backend's SGEMM (sgemm.h) on the tensors' strided rows; the
 * order of every sum is fixed by the shape, so the result is bitwise the same for any thread
 * count. It differs from the reference's row-by-row order within the fp32 rule. */
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "optimized/kernels/cpu/cpu_kernels.h"
#include "optimized/kernels/cpu/parallel.h"
#include "optimized/kernels/cpu/scratch.h"
#include "optimized/kernels/cpu/sgemm.h"
#include "optimized/kernels/shape_checks.h"

namespace pb::cpu {

namespace {

constexpr int64_t kBr = 64, kBc = 64;  // query and key rows per tile
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

using RMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Rows = Eigen::Map<RMat, 0, Eigen::OuterStride<>>;         // a head's rows inside a tensor
using CRows = Eigen::Map<const RMat, 0, Eigen::OuterStride<>>;  // (rows, D), stride heads*D
using Buf = Eigen::Map<RMat>;                                   // a contiguous scratch tile

// The shape, its positions and each tile's position range.
struct Geometry {
  int64_t B, S, Sk, A, G, D, rep;
  float scale;
  std::vector<int64_t> qpos, kpos;
  std::vector<int64_t> qmin, qmax, kmin, kmax;  // per query / key tile

  explicit Geometry(const ops::AttnShape& s)
      : B(s.B), S(s.S), Sk(s.keys()), A(s.A), G(s.G), D(s.D), rep(s.A / s.G),
        scale(1.0f / std::sqrt(float(s.D))), qpos(s.query_positions()), kpos(s.key_positions()) {
    ranges(qpos, kBr, qmin, qmax);
    ranges(kpos, kBc, kmin, kmax);
  }
  int64_t q_tiles() const { return blocks_of(S, kBr); }
  int64_t k_tiles() const { return blocks_of(Sk, kBc); }
  // 0: no key of tile kj visible to any query of tile qi; 2: every key to every query; 1: some.
  int visibility(int64_t qi, int64_t kj) const {
    if (kmin[size_t(kj)] > qmax[size_t(qi)]) return 0;
    return kmax[size_t(kj)] <= qmin[size_t(qi)] ? 2 : 1;
  }
  // -inf on the masked entries of the tile (rows from query i0, columns from key j0).
  template <class M>
  void mask(M& s, int64_t i0, int64_t j0, float value) const {
    for (int64_t r = 0; r < s.rows(); ++r)
      for (int64_t c = 0; c < s.cols(); ++c)
        if (kpos[size_t(j0 + c)] > qpos[size_t(i0 + r)]) s(r, c) = value;
  }

 private:
  static void ranges(const std::vector<int64_t>& p, int64_t tile, std::vector<int64_t>& lo, std::vector<int64_t>& hi) {
    for (size_t b = 0; b < p.size(); b += size_t(tile)) {
      const auto e = p.begin() + int64_t(std::min(p.size(), b + size_t(tile)));
      lo.push_back(*std::min_element(p.begin() + int64_t(b), e));
      hi.push_back(*std::max_element(p.begin() + int64_t(b), e));
    }
  }
};

}  // namespace

void attention_forward(Tensor& o, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                       const ops::AttnShape& s, const Stream&) {
  checks::attention_inputs("attention forward", s, q, k, v);
  checks::attention_forward_outputs("attention forward", s, o, lse, q);
  const Geometry g(s);
  const int64_t qw = g.A * g.D, kw = g.G * g.D, nq = g.q_tiles();
  parallel_for(g.B * g.A * nq, [&](int64_t task) {
    const int64_t b = task / (g.A * nq), a = task / nq % g.A, qi = task % nq, kv = a / g.rep;
    const int64_t i0 = qi * kBr, n = std::min(kBr, g.S - i0);
    thread_local std::vector<float> s_buf, o_buf, ml_buf;
    Buf Sc(aligned64(s_buf, n * kBc), n, kBc), O(aligned64(o_buf, n * g.D), n, g.D);
    float* m = aligned64(ml_buf, 2 * n);
    float* l = m + n;
    O.setZero();
    std::fill(m, m + n, kNegInf);
    std::fill(l, l + n, 0.0f);
    const CRows Q(q.f32() + (b * g.S + i0) * qw + a * g.D, n, g.D, Eigen::OuterStride<>(qw));
    for (int64_t kj = 0; kj < g.k_tiles(); ++kj) {
      const int vis = g.visibility(qi, kj);
      if (!vis) continue;
      const int64_t j0 = kj * kBc, c = std::min(kBc, g.Sk - j0);
      const CRows K(k.f32() + (b * g.Sk + j0) * kw + kv * g.D, c, g.D, Eigen::OuterStride<>(kw));
      const CRows V(v.f32() + (b * g.Sk + j0) * kw + kv * g.D, c, g.D, Eigen::OuterStride<>(kw));
      auto St = Sc.leftCols(c);
      sgemm(false, true, n, c, g.D, Q.data(), qw, K.data(), kw, 0.0f, St.data(), kBc);  // Q K^T (n, c)
      St *= g.scale;
      if (vis == 1) g.mask(St, i0, j0, kNegInf);
      for (int64_t r = 0; r < n; ++r) {
        const float mn = std::max(m[r], St.row(r).maxCoeff());
        if (mn == kNegInf) {  // nothing visible in this row yet
          St.row(r).setZero();
          continue;
        }
        const float alpha = std::exp(m[r] - mn);  // 0 for the first visible tile
        St.row(r) = (St.row(r).array() - mn).exp().matrix();
        if (vis == 1)
          for (int64_t cc = 0; cc < c; ++cc)
            if (g.kpos[size_t(j0 + cc)] > g.qpos[size_t(i0 + r)]) St(r, cc) = 0.0f;  // exp(-inf) exactly 0
        l[r] = l[r] * alpha + St.row(r).sum();
        if (alpha != 1.0f) O.row(r) *= alpha;
        m[r] = mn;
      }
      sgemm(false, false, n, g.D, c, St.data(), kBc, V.data(), kw, 1.0f, O.data(), g.D);  // O += P V (n, D)
    }
    Rows Out(o.f32() + (b * g.S + i0) * qw + a * g.D, n, g.D, Eigen::OuterStride<>(qw));
    float* L = lse.f32() + (b * g.A + a) * g.S + i0;
    for (int64_t r = 0; r < n; ++r) {
      if (l[r] == 0.0f) {  // no visible key: o = 0, lse = -inf
        Out.row(r).setZero();
        L[r] = kNegInf;
      } else {
        Out.row(r) = O.row(r) / l[r];
        L[r] = m[r] + std::log(l[r]);
      }
    }
  });
}

void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                        const Tensor& v, const Tensor& o, const Tensor& lse, const ops::AttnShape& s, const Stream&) {
  checks::attention_inputs("attention backward", s, q, k, v);
  checks::attention_backward_operands("attention backward", s, dq, dk, dv, dout, q, k, o, lse);
  const Geometry g(s);
  const int64_t qw = g.A * g.D, kw = g.G * g.D, nq = g.q_tiles();
  parallel_for(g.B * g.G, [&](int64_t task) {
    const int64_t b = task / g.G, kv = task % g.G, a0 = kv * g.rep;
    thread_local std::vector<float> di_buf, p_buf, dp_buf, dkv_buf;
    // Di = dO . o for the group's query heads; dQ of those heads starts at 0.
    float* Di = aligned64(di_buf, g.rep * g.S);
    for (int64_t h = 0; h < g.rep; ++h) {
      const int64_t off = b * g.S * qw + (a0 + h) * g.D;
      const CRows dO(dout.f32() + off, g.S, g.D, Eigen::OuterStride<>(qw)), Ov(o.f32() + off, g.S, g.D,
                                                                                 Eigen::OuterStride<>(qw));
      for (int64_t i = 0; i < g.S; ++i) Di[h * g.S + i] = dO.row(i).dot(Ov.row(i));
      Rows(dq.f32() + off, g.S, g.D, Eigen::OuterStride<>(qw)).setZero();
    }
    Buf P(aligned64(p_buf, kBr * kBc), kBr, kBc), dP(aligned64(dp_buf, kBr * kBc), kBr, kBc);
    float* dkv = aligned64(dkv_buf, 2 * kBc * g.D);
    for (int64_t kj = 0; kj < g.k_tiles(); ++kj) {
      const int64_t j0 = kj * kBc, c = std::min(kBc, g.Sk - j0);
      const CRows K(k.f32() + (b * g.Sk + j0) * kw + kv * g.D, c, g.D, Eigen::OuterStride<>(kw));
      const CRows V(v.f32() + (b * g.Sk + j0) * kw + kv * g.D, c, g.D, Eigen::OuterStride<>(kw));
      Buf dK(dkv, c, g.D), dV(dkv + c * g.D, c, g.D);
      dK.setZero();
      dV.setZero();
      for (int64_t h = 0; h < g.rep; ++h) {
        const int64_t a = a0 + h;
        for (int64_t qi = 0; qi < nq; ++qi) {
          const int vis = g.visibility(qi, kj);
          if (!vis) continue;
          const int64_t i0 = qi * kBr, n = std::min(kBr, g.S - i0), off = (b * g.S + i0) * qw + a * g.D;
          const CRows Q(q.f32() + off, n, g.D, Eigen::OuterStride<>(qw)), dO(dout.f32() + off, n, g.D,
                                                                              Eigen::OuterStride<>(qw));
          Rows dQ(dq.f32() + off, n, g.D, Eigen::OuterStride<>(qw));
          auto Pt = P.topLeftCorner(n, c);
          auto dPt = dP.topLeftCorner(n, c);
          sgemm(false, true, n, c, g.D, Q.data(), qw, K.data(), kw, 0.0f, Pt.data(), kBc);  // Q K^T (n, c)
          Pt *= g.scale;
          const float* L = lse.f32() + (b * g.A + a) * g.S + i0;
          for (int64_t r = 0; r < n; ++r) {
            if (std::isinf(L[r])) Pt.row(r).setZero();  // fully masked row: no gradient
            else Pt.row(r) = (Pt.row(r).array() - L[r]).exp().matrix();
          }
          if (vis == 1) g.mask(Pt, i0, j0, 0.0f);
          sgemm(true, false, c, g.D, n, Pt.data(), kBc, dO.data(), qw, 1.0f, dV.data(), g.D);  // dV += P^T dO (c, D)
          sgemm(false, true, n, c, g.D, dO.data(), qw, V.data(), kw, 0.0f, dPt.data(), kBc);   // dP = dO V^T (n, c)
          for (int64_t r = 0; r < n; ++r)
            dPt.row(r) = Pt.row(r).cwiseProduct((dPt.row(r).array() - Di[h * g.S + i0 + r]).matrix());
          dPt *= g.scale;                                                                        // scale dS
          sgemm(false, false, n, g.D, c, dPt.data(), kBc, K.data(), kw, 1.0f, dQ.data(), qw);  // dQ += dS K (n, D)
          sgemm(true, false, c, g.D, n, dPt.data(), kBc, Q.data(), qw, 1.0f, dK.data(), g.D);  // dK += dS^T Q (c, D)
        }
      }
      Rows(dk.f32() + (b * g.Sk + j0) * kw + kv * g.D, c, g.D, Eigen::OuterStride<>(kw)) = dK;
      Rows(dv.f32() + (b * g.Sk + j0) * kw + kv * g.D, c, g.D, Eigen::OuterStride<>(kw)) = dV;
    }
  });
}

}  // namespace pb::cpu
