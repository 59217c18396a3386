/* The CPU SGEMM (see sgemm.h): a packed, register-blocked kernel in the manner of BLIS
 * (Van Zee & van de Geijn, "BLIS: A Framework for Rapidly Instantiating BLAS Functionality",
 * ACM TOMS 2015; Goto & van de Geijn, ACM TOMS 2008) for AVX-512 or AVX2 + FMA, and Eigen's
 * GEMM where the compiler targets neither.
 *
 *   loops   jc over n by NC, pc over k by KC (pack B: KC x NC in panels of NR columns),
 *           ic over m by MC (pack A: MC x KC in panels of MR rows), then MR x NR micro-tiles
 *   tile    AVX-512: 12 x 32, 24 zmm accumulators; per k two loads of B, twelve broadcasts
 *           of A, 24 FMAs.  AVX2: 6 x 16, 12 ymm accumulators; two loads, six broadcasts,
 *           twelve FMAs.
 *   C       first k-block: C = acc (beta 0) or C + acc; later k-blocks C + acc (beta other
 *           than 0 and 1 scales C first)
 * Row- and column-stable by construction: every element is one FMA chain over each k-block
 * of KC (a constant) in k order, the same instructions wherever the element sits in its
 * tile, the missing rows and columns of an edge tile being zeros in the packed panels. So a
 * row of C has the same bits whatever other rows the call computes (MC2's chunks equal SP's
 * whole products: parallel/mc2_linear.h), and any fixed partition of C over threads gives the
 * same bits for any thread count. The two kernels do the same arithmetic per element (the
 * same k-blocks, the same FMA chain, the same final add), so they give the same bits.
 *
 * OpenBLAS 0.3.21 was measured first (faster than Eigen here: optimized/kernels/cpu/NOTES.md)
 * and rejected: its rows depend on their position in the call (its Zen kernel sums a row
 * differently at positions 0 and 5 of a 6-row group), which would break MC2's bitwise rule. */
#include "optimized/kernels/cpu/sgemm.h"

#include <Eigen/Dense>
#include <algorithm>
#include <cstdint>
#include <vector>

#include "optimized/kernels/cpu/scratch.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#define PB_SGEMM_PACKED 1
#define PB_SGEMM_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define PB_SGEMM_PACKED 1
#endif

namespace pb::cpu {

namespace {

using RMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Strided = Eigen::Map<const RMat, 0, Eigen::OuterStride<>>;

[[maybe_unused]] void eigen_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* A, int64_t lda,
                                 const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  Eigen::Map<RMat, 0, Eigen::OuterStride<>> Cm(C, m, n, Eigen::OuterStride<>(ldc));
  const Strided Am(A, ta ? k : m, ta ? m : k, Eigen::OuterStride<>(lda));
  const Strided Bm(B, tb ? n : k, tb ? k : n, Eigen::OuterStride<>(ldb));
  if (beta == 0.0f) Cm.setZero();
  else if (beta != 1.0f) Cm *= beta;
  if (ta && tb) Cm.noalias() += Am.transpose() * Bm.transpose();
  else if (ta) Cm.noalias() += Am.transpose() * Bm;
  else if (tb) Cm.noalias() += Am * Bm.transpose();
  else Cm.noalias() += Am * Bm;
}

#ifdef PB_SGEMM_PACKED
#ifdef PB_SGEMM_AVX512
constexpr int64_t MR = 12, NR = 32;  // 24 zmm accumulators
#else
constexpr int64_t MR = 6, NR = 16;  // 12 ymm accumulators
#endif
constexpr int64_t KC = 256, MC = 120, NC = 4096;

// out (8 lines of stride ldo) = the transpose of src's 8 x 8 block (8 lines of stride lds).
void transpose8(const float* src, int64_t lds, float* out, int64_t ldo) {
  __m256 r[8], t[8], u[8];
  for (int j = 0; j < 8; ++j) r[j] = _mm256_loadu_ps(src + j * lds);
  for (int j = 0; j < 8; j += 2) t[j] = _mm256_unpacklo_ps(r[j], r[j + 1]), t[j + 1] = _mm256_unpackhi_ps(r[j], r[j + 1]);
  for (int j = 0; j < 8; j += 4) {  // [a_c b_c c_c d_c | a_c+4 ...] for c = 0..3
    u[j] = _mm256_shuffle_ps(t[j], t[j + 2], 0x44), u[j + 1] = _mm256_shuffle_ps(t[j], t[j + 2], 0xEE);
    u[j + 2] = _mm256_shuffle_ps(t[j + 1], t[j + 3], 0x44), u[j + 3] = _mm256_shuffle_ps(t[j + 1], t[j + 3], 0xEE);
  }
  for (int c = 0; c < 4; ++c) {
    _mm256_storeu_ps(out + c * ldo, _mm256_permute2f128_ps(u[c], u[c + 4], 0x20));
    _mm256_storeu_ps(out + (c + 4) * ldo, _mm256_permute2f128_ps(u[c], u[c + 4], 0x31));
  }
}

// The same for a 4 x 4 block.
void transpose4(const float* src, int64_t lds, float* out, int64_t ldo) {
  __m128 r0 = _mm_loadu_ps(src), r1 = _mm_loadu_ps(src + lds), r2 = _mm_loadu_ps(src + 2 * lds),
         r3 = _mm_loadu_ps(src + 3 * lds);
  _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
  _mm_storeu_ps(out, r0), _mm_storeu_ps(out + ldo, r1), _mm_storeu_ps(out + 2 * ldo, r2), _mm_storeu_ps(out + 3 * ldo, r3);
}

// A panel of w rows of a matrix op(X) (k-major: out[k * w + i] = op(X)(r0 + i, p0 + k)),
// zero-padded to w rows. op(X) = X^T copies X's row p0 + k over i; op(X) = X transposes
// blocks of 8 (then 4) rows x 8 (then 4) k in registers, the rest one element at a time.
// Only data moves, so the packing has no effect on the bits.
void pack_panel(bool trans, const float* X, int64_t ldx, int64_t r0, int64_t rows, int64_t p0, int64_t kc, int64_t w,
                float* out) {
  if (rows < w) std::fill(out, out + kc * w, 0.0f);
  if (trans) {
    for (int64_t k = 0; k < kc; ++k) {
      const float* src = X + (p0 + k) * ldx + r0;
      for (int64_t i = 0; i < rows; ++i) out[k * w + i] = src[i];
    }
    return;
  }
  int64_t i = 0;
  for (const int64_t blk : {int64_t(8), int64_t(4)}) {
    for (; i + blk <= rows; i += blk) {
      const float* src = X + (r0 + i) * ldx + p0;
      int64_t k = 0;
      for (; k + blk <= kc; k += blk) (blk == 8 ? transpose8 : transpose4)(src + k, ldx, out + k * w + i, w);
      for (; k < kc; ++k)
        for (int64_t ii = 0; ii < blk; ++ii) out[k * w + i + ii] = src[ii * ldx + k];
    }
  }
  for (; i < rows; ++i) {
    const float* src = X + (r0 + i) * ldx + p0;
    for (int64_t k = 0; k < kc; ++k) out[k * w + i] = src[k];
  }
}

// op(A) rows [i0, i0 + mc) x cols [p0, p0 + kc) into panels of MR rows.
void pack_a(bool ta, const float* A, int64_t lda, int64_t i0, int64_t mc, int64_t p0, int64_t kc, float* out) {
  for (int64_t ir = 0; ir < mc; ir += MR)
    pack_panel(ta, A, lda, i0 + ir, std::min(MR, mc - ir), p0, kc, MR, out + ir * kc);
}

// op(B) rows [p0, p0 + kc) x cols [j0, j0 + nc) into panels of NR columns: the panels of
// op(B)^T's rows, so op(B) = B is the transposed read.
void pack_b(bool tb, const float* B, int64_t ldb, int64_t p0, int64_t kc, int64_t j0, int64_t nc, float* out) {
  for (int64_t jr = 0; jr < nc; jr += NR)
    pack_panel(!tb, B, ldb, j0 + jr, std::min(NR, nc - jr), p0, kc, NR, out + jr * kc);
}

// The vector of the kernel's ISA (VL floats) and the four operations store_tile needs.
#ifdef PB_SGEMM_AVX512
using Vec = __m512;
constexpr int64_t VL = 16;
inline Vec vload(const float* p) { return _mm512_loadu_ps(p); }
inline void vstore(float* p, Vec v) { _mm512_storeu_ps(p, v); }
inline Vec vadd(Vec a, Vec b) { return _mm512_add_ps(a, b); }
#else
using Vec = __m256;
constexpr int64_t VL = 8;
inline Vec vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, Vec v) { _mm256_storeu_ps(p, v); }
inline Vec vadd(Vec a, Vec b) { return _mm256_add_ps(a, b); }
#endif
static_assert(NR == 2 * VL, "a micro-tile row is two vectors");

// The C tile (mr <= MR rows, nr <= NR columns) = acc (overwrite) or C + acc: whole tiles
// straight from the registers, edge tiles through a scratch tile (the same additions).
void store_tile(const Vec (&acc)[MR][2], float* c, int64_t ldc, int64_t mr, int64_t nr, bool overwrite) {
  if (mr == MR && nr == NR) {
    for (int64_t i = 0; i < MR; ++i)
      for (int h = 0; h < 2; ++h) {
        float* p = c + i * ldc + h * VL;
        vstore(p, overwrite ? acc[i][h] : vadd(vload(p), acc[i][h]));
      }
    return;
  }
  alignas(64) float t[MR][NR];
  for (int64_t i = 0; i < MR; ++i)
    for (int h = 0; h < 2; ++h) vstore(t[i] + h * VL, acc[i][h]);
  for (int64_t i = 0; i < mr; ++i)
    for (int64_t j = 0; j < nr; ++j) c[i * ldc + j] = overwrite ? t[i][j] : c[i * ldc + j] + t[i][j];
}

#ifdef PB_SGEMM_AVX512
// C tile (mr <= MR, nr <= NR) = acc (overwrite) or C + acc, acc = a panel x b panel over kc.
void micro(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int64_t mr, int64_t nr, bool overwrite) {
  // 24 accumulators (12 rows x 2 zmm of 16 columns), named so that none is spilled.
  __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  __m512 c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00;
  __m512 c80 = c00, c81 = c00, c90 = c00, c91 = c00, ca0 = c00, ca1 = c00, cb0 = c00, cb1 = c00;
#define PB_ROW(i, r0, r1)                       \
  {                                             \
    const __m512 ai = _mm512_set1_ps(a[i]);     \
    r0 = _mm512_fmadd_ps(ai, b0, r0);           \
    r1 = _mm512_fmadd_ps(ai, b1, r1);           \
  }
#pragma GCC unroll 2
  for (int64_t k = 0; k < kc; ++k, a += MR, b += NR) {
    const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);  // packs are 64-byte aligned
    PB_ROW(0, c00, c01) PB_ROW(1, c10, c11) PB_ROW(2, c20, c21) PB_ROW(3, c30, c31)
    PB_ROW(4, c40, c41) PB_ROW(5, c50, c51) PB_ROW(6, c60, c61) PB_ROW(7, c70, c71)
    PB_ROW(8, c80, c81) PB_ROW(9, c90, c91) PB_ROW(10, ca0, ca1) PB_ROW(11, cb0, cb1)
  }
#undef PB_ROW
  const __m512 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51},
                             {c60, c61}, {c70, c71}, {c80, c81}, {c90, c91}, {ca0, ca1}, {cb0, cb1}};
  store_tile(acc, c, ldc, mr, nr, overwrite);
}
#else
// C tile (mr <= MR, nr <= NR) = acc (overwrite) or C + acc, acc = a panel x b panel over kc.
void micro(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int64_t mr, int64_t nr, bool overwrite) {
  // The twelve accumulators as named registers (an array indexed in a loop may be spilled).
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k, a += MR, b += NR) {
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);  // packs are 64-byte aligned
    __m256 ai = _mm256_broadcast_ss(a);
    c00 = _mm256_fmadd_ps(ai, b0, c00), c01 = _mm256_fmadd_ps(ai, b1, c01);
    ai = _mm256_broadcast_ss(a + 1);
    c10 = _mm256_fmadd_ps(ai, b0, c10), c11 = _mm256_fmadd_ps(ai, b1, c11);
    ai = _mm256_broadcast_ss(a + 2);
    c20 = _mm256_fmadd_ps(ai, b0, c20), c21 = _mm256_fmadd_ps(ai, b1, c21);
    ai = _mm256_broadcast_ss(a + 3);
    c30 = _mm256_fmadd_ps(ai, b0, c30), c31 = _mm256_fmadd_ps(ai, b1, c31);
    ai = _mm256_broadcast_ss(a + 4);
    c40 = _mm256_fmadd_ps(ai, b0, c40), c41 = _mm256_fmadd_ps(ai, b1, c41);
    ai = _mm256_broadcast_ss(a + 5);
    c50 = _mm256_fmadd_ps(ai, b0, c50), c51 = _mm256_fmadd_ps(ai, b1, c51);
  }
  const __m256 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  store_tile(acc, c, ldc, mr, nr, overwrite);
}

#endif


void packed_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* B,
               int64_t ldb, float beta, float* C, int64_t ldc) {
  if (beta != 0.0f && beta != 1.0f)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) C[i * ldc + j] *= beta;
  thread_local std::vector<float> abuf_v, bbuf_v;
  for (int64_t jc = 0; jc < n; jc += NC) {
    const int64_t nc = std::min(NC, n - jc), ncp = (nc + NR - 1) / NR * NR;
    for (int64_t pc = 0; pc < k; pc += KC) {
      const int64_t kc = std::min(KC, k - pc);
      float* bbuf = aligned64(bbuf_v, kc * ncp);  // each panel and k-step (NR floats) 64-byte aligned
      pack_b(tb, B, ldb, pc, kc, jc, nc, bbuf);
      const bool overwrite = pc == 0 && beta == 0.0f;
      for (int64_t ic = 0; ic < m; ic += MC) {
        const int64_t mc = std::min(MC, m - ic), mcp = (mc + MR - 1) / MR * MR;
        float* abuf = aligned64(abuf_v, kc * mcp);
        pack_a(ta, A, lda, ic, mc, pc, kc, abuf);
        for (int64_t jr = 0; jr < nc; jr += NR)
          for (int64_t ir = 0; ir < mc; ir += MR)
            micro(kc, abuf + ir * kc, bbuf + jr * kc, C + (ic + ir) * ldc + jc + jr, ldc,
                  std::min(MR, mc - ir), std::min(NR, nc - jr), overwrite);
      }
    }
  }
}
#endif

}  // namespace

void sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* B,
           int64_t ldb, float beta, float* C, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {  // an empty sum: C = beta C
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
    return;
  }
#ifdef PB_SGEMM_PACKED
  packed_gemm(ta, tb, m, n, k, A, lda, B, ldb, beta, C, ldc);
#else
  eigen_gemm(ta, tb, m, n, k, A, lda, B, ldb, beta, C, ldc);
#endif
}

std::string sgemm_backend() {
#if defined(PB_SGEMM_AVX512)
  return "avx512 12x32";
#elif defined(PB_SGEMM_PACKED)
  return "avx2-fma 6x16";
#else
  return "eigen";
#endif
}

bool sgemm_rows_stable() {
#ifdef PB_SGEMM_PACKED
  return true;
#else
  return false;
#endif
}

}  // namespace pb::cpu
