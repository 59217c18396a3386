/* CPU merge of two partial attention results by their log-sum-exp: the accumulation step
 * of ring attention (Liu et al., arXiv 2310.01889; FEATURES.md, context parallelism), where
 * every key block that passes round the ring leaves its (o_blk, lse_blk) for the queries.
 * Per sequence b, head a and query i, with l = lse, l' = lse_blk:
 *   m = max(l, l');  w = e^(l - m), w' = e^(l' - m)
 *   o = (w o + w' o_blk) / (w + w');  lse = m + log(w + w')
 * A side with lse = -inf (it saw no key) has weight 0: when it is the block, o and lse stay
 * as they are; when it is o, the result is the block. Those two cases are taken directly,
 * without reading the side of weight 0. The math is in double; o and o_blk are fp32 here
 * (bf16 is the dispatch's emulation).
 *   o, o_blk (B*n, A*D); lse, lse_blk (B*A, n) */
#include <algorithm>
#include <cmath>

#include "optimized/kernels/cpu/cpu_kernels.h"
#include "reference/common/error.h"

namespace pb::cpu {

void attention_merge(Tensor& o, Tensor& lse, const Tensor& o_blk, const Tensor& lse_blk, int64_t B, int64_t A,
                     int64_t D, const Stream&) {
  const int64_t n = B > 0 && A > 0 ? lse.numel() / (B * A) : 0;
  PB_REQUIRE(B > 0 && A > 0 && D > 0 && lse.numel() == B * A * n && lse_blk.numel() == lse.numel() &&
                 o.rows() == B * n && o.cols() == A * D && o_blk.shape() == o.shape(),
             "attention_merge: o ", o.shape_str(), ", lse ", lse.shape_str(), ", o_blk ", o_blk.shape_str(),
             ", lse_blk ", lse_blk.shape_str(), " for B ", B, " A ", A, " D ", D);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t a = 0; a < A; ++a) {
        const int64_t h = (b * A + a) * n + i, row = ((b * n + i) * A + a) * D;
        float* oi = o.f32() + row;
        const float* bi = o_blk.f32() + row;
        const double l1 = lse.f32()[h], l2 = lse_blk.f32()[h];
        if (l2 == -INFINITY) continue;  // the block saw no key (or neither did): nothing changes
        if (l1 == -INFINITY) {          // nothing merged yet: the block itself
          std::copy(bi, bi + D, oi);
          lse.f32()[h] = lse_blk.f32()[h];
          continue;
        }
        const double m = std::max(l1, l2), w1 = std::exp(l1 - m), w2 = std::exp(l2 - m), s = w1 + w2;
        for (int64_t d = 0; d < D; ++d) oi[d] = float((w1 * oi[d] + w2 * bi[d]) / s);
        lse.f32()[h] = float(m + std::log(s));
      }
}

}  // namespace pb::cpu
