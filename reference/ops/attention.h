/* Causal scaled dot-product attention with grouped-query attention (GQA), returning the
 * log-sum-exp of every softmax row.
 *
 * Vaswani et al., "Attention Is All You Need" (2017); GQA: Ainslie et al., arXiv 2305.13245;
 * backward in the FlashAttention form: Dao et al., arXiv 2205.14135 / 2307.08691.
 *
 *   Q (B*Sq, A*D), K, V (B*Sk, G*D); query head a reads kv head g = a / (A/G)
 *   s_ij  = scale * q_i . k_j      scale = 1/sqrt(D); masked (-inf) when kpos_j > qpos_i
 *   lse_i = log sum_j exp(s_ij)    LSE (B*A, Sq), row b*A + a; -inf for a fully masked row
 *   p_ij  = exp(s_ij - lse_i)
 *   o_i   = sum_j p_ij v_j         O (B*Sq, A*D); 0 for a fully masked row
 * backward, from dO and the saved Q, K, V, O, LSE:
 *   D_i   = dO_i . o_i
 *   dV_j += p_ij dO_i
 *   ds_ij = p_ij (dO_i . v_j - D_i)
 *   dQ_i += scale ds_ij k_j,   dK_j += scale ds_ij q_i   (dK, dV summed over the A/G
 *                                                          query heads sharing a kv head)
 *
 * Positions are explicit so that the same op serves a full causal sequence (qpos = kpos =
 * 0..S-1) and the partial blocks of ring attention (any two chunks of a sequence). LSE is
 * what lets partial results merge (FEATURES.md, CP ring attention).
 */
#pragma once

#include <cmath>
#include <limits>
#include <vector>

#include "reference/common/error.h"
#include "reference/common/tensor.h"

namespace pb::ref {

struct AttentionShape {
  Index B, Sq, Sk, A, G, D;
};

template <class T>
void attention_forward(Mat<T>& o, Mat<T>& lse, const Mat<T>& q, const Mat<T>& k, const Mat<T>& v,
                       const AttentionShape& sh, const std::vector<int64_t>& qpos,
                       const std::vector<int64_t>& kpos) {
  const auto [B, Sq, Sk, A, G, D] = sh;
  PB_REQUIRE(G > 0 && A % G == 0, "attention: heads ", A, " not divisible by kv heads ", G);
  const Index group = A / G;
  const T scale = T(1) / std::sqrt(T(D));
  const T neg_inf = -std::numeric_limits<T>::infinity();
  o = Mat<T>::Zero(B * Sq, A * D);  // (B*Sq, A*D)
  lse.resize(B * A, Sq);            // (B*A, Sq)
  std::vector<T> s(static_cast<size_t>(Sk));     // one row of scores
  for (Index b = 0; b < B; ++b)
    for (Index a = 0; a < A; ++a) {
      const Index g = a / group;
      for (Index i = 0; i < Sq; ++i) {
        const auto qi = q.row(b * Sq + i).segment(a * D, D);
        T m = neg_inf;
        for (Index j = 0; j < Sk; ++j) {
          s[size_t(j)] = kpos[size_t(j)] > qpos[size_t(i)]
                             ? neg_inf
                             : scale * qi.dot(k.row(b * Sk + j).segment(g * D, D));
          m = std::max(m, s[size_t(j)]);
        }
        if (m == neg_inf) {  // nothing visible: O stays 0, LSE = -inf
          lse(b * A + a, i) = neg_inf;
          continue;
        }
        T l = 0;
        for (Index j = 0; j < Sk; ++j) l += std::exp(s[size_t(j)] - m);
        const T lse_i = m + std::log(l);
        lse(b * A + a, i) = lse_i;
        auto oi = o.row(b * Sq + i).segment(a * D, D);
        for (Index j = 0; j < Sk; ++j)
          if (s[size_t(j)] != neg_inf) oi += std::exp(s[size_t(j)] - lse_i) * v.row(b * Sk + j).segment(g * D, D);
      }
    }
}

// dq, dk, dv are overwritten (sized here). o and lse are the forward's outputs.
template <class T>
void attention_backward(Mat<T>& dq, Mat<T>& dk, Mat<T>& dv, const Mat<T>& dout, const Mat<T>& q,
                        const Mat<T>& k, const Mat<T>& v, const Mat<T>& o, const Mat<T>& lse,
                        const AttentionShape& sh, const std::vector<int64_t>& qpos,
                        const std::vector<int64_t>& kpos) {
  const auto [B, Sq, Sk, A, G, D] = sh;
  const Index group = A / G;
  const T scale = T(1) / std::sqrt(T(D));
  dq = Mat<T>::Zero(B * Sq, A * D);  // (B*Sq, A*D)
  dk = Mat<T>::Zero(B * Sk, G * D);  // (B*Sk, G*D)
  dv = Mat<T>::Zero(B * Sk, G * D);  // (B*Sk, G*D)
  for (Index b = 0; b < B; ++b)
    for (Index a = 0; a < A; ++a) {
      const Index g = a / group;
      for (Index i = 0; i < Sq; ++i) {
        const T lse_i = lse(b * A + a, i);
        if (std::isinf(lse_i)) continue;  // fully masked row: no gradient
        const auto qi = q.row(b * Sq + i).segment(a * D, D);
        const auto doi = dout.row(b * Sq + i).segment(a * D, D);
        const T Di = doi.dot(o.row(b * Sq + i).segment(a * D, D));
        for (Index j = 0; j < Sk; ++j) {
          if (kpos[size_t(j)] > qpos[size_t(i)]) continue;
          const auto kj = k.row(b * Sk + j).segment(g * D, D);
          const auto vj = v.row(b * Sk + j).segment(g * D, D);
          const T p = std::exp(scale * qi.dot(kj) - lse_i);
          dv.row(b * Sk + j).segment(g * D, D) += p * doi;
          const T ds = p * (doi.dot(vj) - Di);
          dq.row(b * Sq + i).segment(a * D, D) += scale * ds * kj;
          dk.row(b * Sk + j).segment(g * D, D) += scale * ds * qi;
        }
      }
    }
}

}  // namespace pb::ref
