/* Tensor-core FlashAttention-2 for bf16, head dims 64 and 128 — OPT-IN and UNVERIFIED.
 *
 * Status: written and compile-checked for sm_90 (nvcc 13) by a session without a GPU. It
 * has never run. cuda::attention_forward/backward (attention.cu) take it only where
 * PB_CUDA_FLASH=1 is set (or cuda::set_flash_attention(true) in a test) and the operands
 * are bf16 with D 64 or 128; the warp-per-row kernels stay the default and the oracle.
 * The first check on a GPU: `test_cuda_kernels --gtest_filter='CudaFlash*'`
 * (suites/unit/test_cuda_flash.cc), which compares this path with the warp-per-row one and
 * with the fp32 CPU op.
 *
 * Op (Dao, "FlashAttention-2", arXiv 2307.08691; same semantics as attention.cu): per batch
 * b, query head a (kv head g = a / (A/G), read in place), query row i, key row j:
 *   s_ij = scale q_i . k_j (scale = 1/sqrt(D)), visible iff kpos_j <= qpos_i
 *   forward : o_i = sum_j softmax_j(s_ij) v_j,  lse_i = log sum_j e^(s_ij)
 *             (no visible key: o_i = 0, lse_i = -inf)
 *   backward: p_ij = e^(s_ij - lse_i) (recomputed), D_i = dO_i . o_i,
 *             ds_ij = p_ij (dO_i . v_j - D_i),
 *             dV_j = sum_i p_ij dO_i, dK_j = scale sum_i ds_ij q_i, dQ_i = scale sum_j ds_ij k_j
 *             rows with lse = -inf contribute nothing (the ring's "no gradient")
 *
 * Tiling: Br = 64 query rows x Bc = 64 keys, 4 warps (128 threads) per block, each warp
 * owning 16 rows of the block's tile (query rows in the forward and dQ pass, key rows in the
 * dK/dV pass). Tiles live in shared memory, row-major with rows padded to D + 8 elements
 * (16 bytes) so the 8 row addresses of an ldmatrix fall in 8 different 4-bank groups (no
 * bank conflicts). Global -> shared: plain 16-byte vector loads (no cp.async, no
 * double buffering: correctness first), rows past S or Sk zero-filled.
 *   forward (grid nq x A x B, heaviest causal tiles first): Q tile once; per visible key
 *     tile: S = Q K^T (fp32 in registers), scale to the log2 domain, mask, online softmax
 *       m' = max(m, rowmax S), alpha = 2^(m - m'), P = 2^(S - m'), l = alpha l + rowsum P,
 *       O = alpha O + P V   (P rounded to bf16 for the tensor cores, l summed in fp32)
 *     end: o = O / l, lse = m ln 2 + ln l  (the log2-domain m converted back)
 *   backward, three launches, no atomics (deterministic):
 *     delta : D_i = dO_i . o_i in fp32, one warp per (row, head)
 *     dQ    : grid nq x A x B; Q, dO tiles once; per visible key tile: S = Q K^T,
 *             dP = dO V^T, P = 2^(S log2e scale - lse log2e), dS = P (dP - D_i),
 *             dQ += dS K; end dQ *= scale
 *     dK/dV : grid nk x G x B, the block owns one key tile of kv head g and loops over the
 *             group's A/G query heads and every visible query tile: S^T = K Q^T,
 *             dP^T = V dO^T, P^T, dS^T as above (per column: lse, D, qpos of the query),
 *             dV += P^T dO, dK += dS^T Q; end dK *= scale
 * Tile visibility from each tile's position range (min/max of its positions; analytic for
 * the default positions 0..n-1, computed on the host and uploaded with the positions
 * otherwise), as kernels/cpu/attention.cc: kmin > qmax: skip; kmax <= qmin and the key
 * tile full: no mask; else mask by positions element-wise. Keys past Sk get position
 * INT64_MAX (never visible), query rows past S position INT64_MIN and lse -inf (never
 * stored, and P = 0 for them in the dK/dV pass).
 *
 * Tensor cores: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 by inline PTX, operands
 * from shared memory by ldmatrix(.trans). Chosen over nvcuda::wmma because the FA2 trick —
 * reusing the fp32 accumulator fragment of S = Q K^T, rounded to bf16, directly as the A
 * operand of P V — needs the documented per-thread fragment layout of mma.sync; wmma's
 * fragment layout is unspecified, so P would have to round-trip through shared memory.
 * (wgmma/TMA — Hopper's fast path, FlashAttention-3 — is the next step, not this one.)
 * Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k16 with floating point
 * type"); lane = 0..31, gr = lane / 4 (row group), tq = lane % 4 (thread in the quad):
 *   A 16x16 row-major, 4 x .b32 (2 bf16 each, the lower column in the low half):
 *     a0 = (gr, 2tq..2tq+1)  a1 = (gr+8, 2tq..)  a2 = (gr, 2tq+8..)  a3 = (gr+8, 2tq+8..)
 *   B 16x8 "col" (k x n, each column n contiguous over k), 2 x .b32:
 *     b0 = (k 2tq..2tq+1, n gr)   b1 = (k 2tq+8..2tq+9, n gr)
 *   C/D 16x8 fp32: c0 = (gr, 2tq) c1 = (gr, 2tq+1) c2 = (gr+8, 2tq) c3 = (gr+8, 2tq+1)
 *   ldmatrix.x4: lanes 8m..8m+7 give the 8 row addresses of matrix m; register m of lane
 *     holds (row lane/4, cols 2(lane%4), +1) of matrix m; with .trans it holds
 *     (rows 2(lane%4), +1; col lane/4) — the B layout for a k-major (row = k) tile.
 *   A from a row-major tile at (r0, c0): lane -> &T[r0 + lane%16][c0 + (lane/16)*8]
 *     (matrices: rows 0-7/8-15 x cols 0-7, then x cols 8-15 = a0 a1 a2 a3)
 *   B from an n-major tile ([n][k], e.g. K for Q K^T), n-blocks n0 and n0+8, k-chunk c0:
 *     lane -> &T[n0 + lane%8 + (lane/16)*8][c0 + ((lane/8)%2)*8]
 *     -> r0 = b0(n0), r1 = b1(n0), r2 = b0(n0+8), r3 = b1(n0+8)
 *   B from a k-major tile ([k][n], e.g. V for P V) with .trans, k-chunk k0, n-blocks n0, n0+8:
 *     lane -> &T[k0 + lane%8 + ((lane/8)%2)*8][n0 + (lane/16)*8]
 *     -> r0 = b0(n0), r1 = b1(n0), r2 = b0(n0+8), r3 = b1(n0+8)
 *   C of S (16 x 64: n-blocks nb = 0..7) as A of P V for the key chunk kk (16 keys =
 *     n-blocks 2kk, 2kk+1): a0 = pack(c0, c1 of 2kk), a1 = pack(c2, c3 of 2kk),
 *     a2 = pack(c0, c1 of 2kk+1), a3 = pack(c2, c3 of 2kk+1).
 * Row statistics: a row's 64 scores of a tile sit in the 4 lanes of a quad (16 each), so a
 * row max is the thread's max then __shfl_xor 1 and 2; l stays a per-thread partial sum
 * (every partial of a row is rescaled by the same alpha) and is summed over the quad at the
 * end (fixed order: deterministic).
 *
 * Precision: scores, exponentials, m, l, D_i and every accumulator fp32; P and dS are
 * rounded to bf16 as tensor-core operands (as FlashAttention-2 does), so o, dQ, dK, dV
 * differ from the fp32-accumulated warp-per-row kernel by a few bf16 ulps relative (the
 * test's tolerance: 2e-2 relative in norm on bf16 outputs, 1e-4 on lse).
 *
 * What was checked without a GPU: it compiles for sm_90 without warnings (ptxas -v: forward
 * 99 / 168 registers for D 64 / 128, no spills; dQ 128 (4 bytes of spill) / 168; dK/dV 186 / 255 with 12 bytes
 * of spill at D = 128). A NumPy model of these loops — the same address formulas, masks and
 * recurrences, with ldmatrix and mma.sync emulated from the PTX fragment definitions (not
 * committed; it lived in the writing session's /tmp) — matched the fp64 op at S 37 / 257,
 * explicit ring positions, unsorted keys, Sk != S, GQA and D 64 / 128: o, dQ, dK, dV about
 * 2e-3 relative (the bf16-rounded exact o alone: 1.6e-3), lse 4e-8, masked rows exactly 0;
 * and it failed (errors ~1) with a deliberately wrong ldmatrix address or fragment order.
 * That checks the index math and the recurrences, not this CUDA code itself.
 *
 * Unverified, in the order to check: fragment layouts and ldmatrix addressing (a wrong one
 * gives large errors everywhere, D 64 and 128 alike); masking at partial tiles (S = 37,
 * 257) and explicit positions; the dynamic shared memory opt-in (D = 128: 52 KiB forward,
 * 69 KiB backward, above the 48 KiB default); register spills of the D = 128 dK/dV kernel
 * (-Xptxas -v); then speed (no cp.async pipeline yet).
 */
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <vector>

#include "optimized/kernels/cuda/common.cuh"
#include "optimized/kernels/cuda/flash_attention.h"
#include "optimized/kernels/shape_checks.h"
#include "reference/common/error.h"

namespace pb::cuda {

namespace {

constexpr int kBr = 64, kBc = 64;  // query rows and keys per tile (both 64: one range list)
constexpr int kWarps = 4, kFlashThreads = 32 * kWarps;
constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;
constexpr int64_t kNoKey = INT64_MAX;     // position of a key row past Sk: never visible
constexpr int64_t kNoQuery = INT64_MIN;   // position of a query row past S: sees nothing
static_assert(kBr == 16 * kWarps && kBc == 64, "a warp owns 16 rows; S tiles are 8 n-blocks of 8");

struct Geo {
  int64_t B, S, Sk, A, G, rep;
  int nq, nk;                              // query and key tiles
  float scale, scale_log2;                 // 1/sqrt(D), and times log2(e)
  const int64_t* qpos;                     // S positions, or null: 0..S-1
  const int64_t* kpos;                     // Sk positions, or null: 0..Sk-1
  const int64_t* qrange;                   // [nq minima | nq maxima], or null: analytic
  const int64_t* krange;                   // [nk minima | nk maxima], or null: analytic
};

__device__ __forceinline__ int64_t qpos_at(const Geo& g, int64_t i) {
  return i < g.S ? (g.qpos ? g.qpos[i] : i) : kNoQuery;
}
__device__ __forceinline__ int64_t kpos_at(const Geo& g, int64_t j) {
  return j < g.Sk ? (g.kpos ? g.kpos[j] : j) : kNoKey;
}

// 0: no key of key tile kj is visible to any query of query tile qi (skip); 2: every key
// to every query and no key past Sk (no mask); 1: mask element-wise. The same for every
// thread of a block (a block-uniform branch around __syncthreads is safe).
__device__ __forceinline__ int visibility(const Geo& g, int qi, int kj) {
  const int64_t i0 = int64_t(qi) * kBr, j0 = int64_t(kj) * kBc;
  const int64_t qlo = g.qrange ? g.qrange[qi] : i0;
  const int64_t qhi = g.qrange ? g.qrange[g.nq + qi] : min(i0 + kBr, g.S) - 1;
  const int64_t klo = g.krange ? g.krange[kj] : j0;
  const int64_t khi = g.krange ? g.krange[g.nk + kj] : min(j0 + kBc, g.Sk) - 1;
  if (klo > qhi) return 0;
  return (khi <= qlo && j0 + kBc <= g.Sk) ? 2 : 1;
}

// ---- PTX wrappers ---------------------------------------------------------------------

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// c += A (16x16 bf16, row) * B (16x8 bf16, col), fp32 accumulate.
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two fp32 values as one .b32 of two bf16 (x in the low half: the lower column index).
__device__ __forceinline__ uint32_t pack_bf16(float x, float y) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(x, y);  // .x = low 16 bits
  uint32_t u;
  memcpy(&u, &h, sizeof u);
  return u;
}

// ---- shared-memory tiles --------------------------------------------------------------

template <int D>
struct Tile {
  static constexpr int LD = D + 8;               // padded row (elements): 16 bytes past D
  static constexpr int kElems = 64 * LD;         // one 64-row tile
  static_assert(D % 16 == 0 && (LD * sizeof(bf16)) % 16 == 0, "ldmatrix rows need 16-byte alignment");
};

// Rows 0..63 of a tile from global rows src + r*ld (r < valid), zero past `valid`. 16-byte
// chunks, consecutive threads on consecutive chunks of a row (coalesced).
template <int D>
__device__ __forceinline__ void load_tile(bf16* dst, const bf16* src, int64_t ld, int64_t valid) {
  constexpr int kChunks = D / 8;  // 8 bf16 = 16 bytes
  for (int c = threadIdx.x; c < 64 * kChunks; c += kFlashThreads) {
    const int r = c / kChunks, col = (c % kChunks) * 8;
    uint4 val = make_uint4(0u, 0u, 0u, 0u);
    if (r < valid) val = *reinterpret_cast<const uint4*>(src + r * ld + col);
    *reinterpret_cast<uint4*>(dst + r * Tile<D>::LD + col) = val;
  }
}

// Operand addresses (see the header comment for the derivations).
template <int D>
__device__ __forceinline__ const bf16* a_addr(const bf16* t, int r0, int c0, int lane) {
  return t + (r0 + (lane & 15)) * Tile<D>::LD + c0 + (lane >> 4) * 8;
}
template <int D>  // n-major tile [n][k]: n-blocks n0, n0+8 at k-chunk c0 (ldmatrix, no .trans)
__device__ __forceinline__ const bf16* bn_addr(const bf16* t, int n0, int c0, int lane) {
  return t + (n0 + (lane & 7) + (lane >> 4) * 8) * Tile<D>::LD + c0 + ((lane >> 3) & 1) * 8;
}
template <int D>  // k-major tile [k][n]: k-chunk k0, n-blocks n0, n0+8 (ldmatrix .trans)
__device__ __forceinline__ const bf16* bk_addr(const bf16* t, int k0, int n0, int lane) {
  return t + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * Tile<D>::LD + n0 + (lane >> 4) * 8;
}

// acc[0..7] (16 rows x 64 columns) = A_tile rows [r0, r0+16) x B_tile rows [0, 64), over D:
// A row-major from `at` (rows of this warp), B n-major from `bt` (its rows are the columns).
template <int D>
__device__ __forceinline__ void gemm_abt(float (&acc)[8][4], const bf16* at, int r0, const bf16* bt, int lane) {
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t a[4];
    ldsm_x4(a, a_addr<D>(at, r0, kk * 16, lane));
#pragma unroll
    for (int np = 0; np < 4; ++np) {
      uint32_t b[4];
      ldsm_x4(b, bn_addr<D>(bt, np * 16, kk * 16, lane));
      mma_bf16(acc[2 * np], a, b[0], b[1]);
      mma_bf16(acc[2 * np + 1], a, b[2], b[3]);
    }
  }
}

// out[0..D/8) (16 rows x D) += P (16 x 64, fp32 C fragments, rounded to bf16 here) * T
// where T is a k-major [64][D] tile (rows = the 64 columns of P).
template <int D>
__device__ __forceinline__ void gemm_pv(float (&out)[D / 8][4], const float (&p)[8][4], const bf16* t, int lane) {
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    const uint32_t a[4] = {pack_bf16(p[2 * kk][0], p[2 * kk][1]), pack_bf16(p[2 * kk][2], p[2 * kk][3]),
                           pack_bf16(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                           pack_bf16(p[2 * kk + 1][2], p[2 * kk + 1][3])};
#pragma unroll
    for (int dp = 0; dp < D / 16; ++dp) {
      uint32_t b[4];
      ldsm_x4_trans(b, bk_addr<D>(t, kk * 16, dp * 16, lane));
      mma_bf16(out[2 * dp], a, b[0], b[1]);
      mma_bf16(out[2 * dp + 1], a, b[2], b[3]);
    }
  }
}

// ---- forward ----------------------------------------------------------------------------

template <int D>
__global__ void __launch_bounds__(kFlashThreads) flash_fwd_kernel(bf16* __restrict__ o, float* __restrict__ lse,
                                                                  const bf16* __restrict__ q,
                                                                  const bf16* __restrict__ k,
                                                                  const bf16* __restrict__ v, Geo g) {
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sQ = reinterpret_cast<bf16*>(smem);
  bf16* sK = sQ + Tile<D>::kElems;
  bf16* sV = sK + Tile<D>::kElems;
  int64_t* sKpos = reinterpret_cast<int64_t*>(sV + Tile<D>::kElems);

  const int qi = g.nq - 1 - int(blockIdx.x);  // the causal diagonal's long rows first
  const int64_t a = blockIdx.y, b = blockIdx.z, kvh = a / g.rep;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gr = lane >> 2, tq = lane & 3;
  const int64_t qld = g.A * D, kld = g.G * D, i0 = int64_t(qi) * kBr;

  load_tile<D>(sQ, q + (b * g.S + i0) * qld + a * D, qld, g.S - i0);
  const int r0 = warp * 16 + gr;  // this thread's rows r0 and r0 + 8 of the tile
  const int64_t qp0 = qpos_at(g, i0 + r0), qp1 = qpos_at(g, i0 + r0 + 8);

  float acc[D / 8][4];
#pragma unroll
  for (int d = 0; d < D / 8; ++d) acc[d][0] = acc[d][1] = acc[d][2] = acc[d][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;  // log2 domain; l per thread

  for (int kj = 0; kj < g.nk; ++kj) {
    const int vis = visibility(g, qi, kj);
    if (!vis) continue;
    const int64_t j0 = int64_t(kj) * kBc;
    __syncthreads();  // the previous tile's sK, sV, sKpos are no longer read
    load_tile<D>(sK, k + (b * g.Sk + j0) * kld + kvh * D, kld, g.Sk - j0);
    load_tile<D>(sV, v + (b * g.Sk + j0) * kld + kvh * D, kld, g.Sk - j0);
    if (threadIdx.x < kBc) sKpos[threadIdx.x] = kpos_at(g, j0 + threadIdx.x);
    __syncthreads();  // (the first time also: sQ written)

    float s[8][4];
#pragma unroll
    for (int nb = 0; nb < 8; ++nb) s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.0f;
    gemm_abt<D>(s, sQ, warp * 16, sK, lane);  // S = Q K^T, rows r0 (c0, c1) and r0+8 (c2, c3)

    float mx0 = m0, mx1 = m1;
#pragma unroll
    for (int nb = 0; nb < 8; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[nb][e] * g.scale_log2;
        if (vis == 1 && sKpos[nb * 8 + 2 * tq + (e & 1)] > (e < 2 ? qp0 : qp1)) x = -INFINITY;
        s[nb][e] = x;
        if (e < 2) mx0 = fmaxf(mx0, x);
        else mx1 = fmaxf(mx1, x);
      }
    // The row's other 48 scores are in the other 3 lanes of the quad (lane ^ 1, lane ^ 2).
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    // Nothing visible in the row so far: subtract 0 instead of -inf (no inf - inf = NaN);
    // every p is then 2^-inf = 0 and alpha = 2^(-inf) = 0 on an O and l that are still 0.
    const float base0 = mx0 == -INFINITY ? 0.0f : mx0, base1 = mx1 == -INFINITY ? 0.0f : mx1;
    const float alpha0 = exp2f(m0 - base0), alpha1 = exp2f(m1 - base1);
    m0 = mx0;
    m1 = mx1;
    float rs0 = 0.0f, rs1 = 0.0f;
#pragma unroll
    for (int nb = 0; nb < 8; ++nb) {
      s[nb][0] = exp2f(s[nb][0] - base0);
      s[nb][1] = exp2f(s[nb][1] - base0);
      s[nb][2] = exp2f(s[nb][2] - base1);
      s[nb][3] = exp2f(s[nb][3] - base1);
      rs0 += s[nb][0] + s[nb][1];
      rs1 += s[nb][2] + s[nb][3];
    }
    l0 = l0 * alpha0 + rs0;
    l1 = l1 * alpha1 + rs1;
#pragma unroll
    for (int d = 0; d < D / 8; ++d) {
      acc[d][0] *= alpha0;
      acc[d][1] *= alpha0;
      acc[d][2] *= alpha1;
      acc[d][3] *= alpha1;
    }
    gemm_pv<D>(acc, s, sV, lane);  // O += P V
  }

  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  // l > 0 iff the row saw a key (its maximum contributes 2^0 = 1).
  const float inv0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, inv1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
  const int64_t i_lo = i0 + r0, i_hi = i0 + r0 + 8;
#pragma unroll
  for (int d = 0; d < D / 8; ++d) {
    const int col = d * 8 + 2 * tq;
    if (i_lo < g.S)
      *reinterpret_cast<__nv_bfloat162*>(o + (b * g.S + i_lo) * qld + a * D + col) =
          __floats2bfloat162_rn(acc[d][0] * inv0, acc[d][1] * inv0);
    if (i_hi < g.S)
      *reinterpret_cast<__nv_bfloat162*>(o + (b * g.S + i_hi) * qld + a * D + col) =
          __floats2bfloat162_rn(acc[d][2] * inv1, acc[d][3] * inv1);
  }
  if (tq == 0) {
    if (i_lo < g.S) lse[(b * g.A + a) * g.S + i_lo] = l0 > 0.0f ? m0 * kLn2 + logf(l0) : -INFINITY;
    if (i_hi < g.S) lse[(b * g.A + a) * g.S + i_hi] = l1 > 0.0f ? m1 * kLn2 + logf(l1) : -INFINITY;
  }
}

// ---- backward ---------------------------------------------------------------------------

// D_i = dO_i . o_i (fp32), one warp per (b, i, a); delta (B*A, S) like lse.
template <int D>
__global__ void flash_delta_kernel(float* __restrict__ delta, const bf16* __restrict__ dout,
                                   const bf16* __restrict__ o, Geo g) {
  const int64_t rows = g.B * g.S * g.A, lane = threadIdx.x % 32;
  for (int64_t r = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; r < rows;
       r += int64_t(gridDim.x) * blockDim.x / 32) {
    // row r = (b*S + i)*A + a: its D elements start at r*D in (B*S, A*D).
    const __nv_bfloat162* x = reinterpret_cast<const __nv_bfloat162*>(dout + r * D);
    const __nv_bfloat162* y = reinterpret_cast<const __nv_bfloat162*>(o + r * D);
    float s = 0.0f;
#pragma unroll
    for (int c = int(lane); c < D / 2; c += 32) {
      const float2 xf = __bfloat1622float2(x[c]), yf = __bfloat1622float2(y[c]);
      s += xf.x * yf.x + xf.y * yf.y;
    }
    s = warp_sum(s);
    if (lane == 0) {
      const int64_t a = r % g.A, bi = r / g.A, i = bi % g.S, b = bi / g.S;
      delta[(b * g.A + a) * g.S + i] = s;
    }
  }
}

// dQ: one block per (query tile, head a, batch b).
template <int D>
__global__ void __launch_bounds__(kFlashThreads) flash_bwd_dq_kernel(bf16* __restrict__ dq,
                                                                     const bf16* __restrict__ dout,
                                                                     const bf16* __restrict__ q,
                                                                     const bf16* __restrict__ k,
                                                                     const bf16* __restrict__ v,
                                                                     const float* __restrict__ lse,
                                                                     const float* __restrict__ delta, Geo g) {
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sQ = reinterpret_cast<bf16*>(smem);
  bf16* sdO = sQ + Tile<D>::kElems;
  bf16* sK = sdO + Tile<D>::kElems;
  bf16* sV = sK + Tile<D>::kElems;
  int64_t* sKpos = reinterpret_cast<int64_t*>(sV + Tile<D>::kElems);

  const int qi = g.nq - 1 - int(blockIdx.x);
  const int64_t a = blockIdx.y, b = blockIdx.z, kvh = a / g.rep;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gr = lane >> 2, tq = lane & 3;
  const int64_t qld = g.A * D, kld = g.G * D, i0 = int64_t(qi) * kBr;

  load_tile<D>(sQ, q + (b * g.S + i0) * qld + a * D, qld, g.S - i0);
  load_tile<D>(sdO, dout + (b * g.S + i0) * qld + a * D, qld, g.S - i0);
  const int r0 = warp * 16 + gr;
  const int64_t i_lo = i0 + r0, i_hi = i0 + r0 + 8;
  const int64_t qp0 = qpos_at(g, i_lo), qp1 = qpos_at(g, i_hi);
  const int64_t h0 = (b * g.A + a) * g.S;
  // lse in the log2 domain; -inf (no gradient) for a row that saw nothing or is past S.
  const float L0 = i_lo < g.S ? lse[h0 + i_lo] * kLog2e : -INFINITY;
  const float L1 = i_hi < g.S ? lse[h0 + i_hi] * kLog2e : -INFINITY;
  const float D0 = i_lo < g.S ? delta[h0 + i_lo] : 0.0f, D1 = i_hi < g.S ? delta[h0 + i_hi] : 0.0f;
  const bool live0 = !isinf(L0), live1 = !isinf(L1);

  float acc[D / 8][4];
#pragma unroll
  for (int d = 0; d < D / 8; ++d) acc[d][0] = acc[d][1] = acc[d][2] = acc[d][3] = 0.0f;

  for (int kj = 0; kj < g.nk; ++kj) {
    const int vis = visibility(g, qi, kj);
    if (!vis) continue;
    const int64_t j0 = int64_t(kj) * kBc;
    __syncthreads();
    load_tile<D>(sK, k + (b * g.Sk + j0) * kld + kvh * D, kld, g.Sk - j0);
    load_tile<D>(sV, v + (b * g.Sk + j0) * kld + kvh * D, kld, g.Sk - j0);
    if (threadIdx.x < kBc) sKpos[threadIdx.x] = kpos_at(g, j0 + threadIdx.x);
    __syncthreads();

    float s[8][4], dp[8][4];
#pragma unroll
    for (int nb = 0; nb < 8; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[nb][e] = dp[nb][e] = 0.0f;
    gemm_abt<D>(s, sQ, warp * 16, sK, lane);    // S = Q K^T
    gemm_abt<D>(dp, sdO, warp * 16, sV, lane);  // dP = dO V^T
#pragma unroll
    for (int nb = 0; nb < 8; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const bool lo = e < 2;
        const bool visible =
            (lo ? live0 : live1) && (vis == 2 || sKpos[nb * 8 + 2 * tq + (e & 1)] <= (lo ? qp0 : qp1));
        const float p = visible ? exp2f(s[nb][e] * g.scale_log2 - (lo ? L0 : L1)) : 0.0f;
        dp[nb][e] = p * (dp[nb][e] - (lo ? D0 : D1));  // dS
      }
    gemm_pv<D>(acc, dp, sK, lane);  // dQ += dS K (K as the k-major [key][dim] tile)
  }

#pragma unroll
  for (int d = 0; d < D / 8; ++d) {
    const int col = d * 8 + 2 * tq;
    if (i_lo < g.S)
      *reinterpret_cast<__nv_bfloat162*>(dq + (b * g.S + i_lo) * qld + a * D + col) =
          __floats2bfloat162_rn(acc[d][0] * g.scale, acc[d][1] * g.scale);
    if (i_hi < g.S)
      *reinterpret_cast<__nv_bfloat162*>(dq + (b * g.S + i_hi) * qld + a * D + col) =
          __floats2bfloat162_rn(acc[d][2] * g.scale, acc[d][3] * g.scale);
  }
}

// dK, dV: one block per (key tile, kv head g, batch b); warps own 16 key rows each.
template <int D>
__global__ void __launch_bounds__(kFlashThreads) flash_bwd_dkv_kernel(bf16* __restrict__ dk, bf16* __restrict__ dv,
                                                                      const bf16* __restrict__ dout,
                                                                      const bf16* __restrict__ q,
                                                                      const bf16* __restrict__ k,
                                                                      const bf16* __restrict__ v,
                                                                      const float* __restrict__ lse,
                                                                      const float* __restrict__ delta, Geo g) {
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sK = reinterpret_cast<bf16*>(smem);
  bf16* sV = sK + Tile<D>::kElems;
  bf16* sQ = sV + Tile<D>::kElems;
  bf16* sdO = sQ + Tile<D>::kElems;
  int64_t* sQpos = reinterpret_cast<int64_t*>(sdO + Tile<D>::kElems);
  float* sL = reinterpret_cast<float*>(sQpos + kBr);  // lse (log2 domain) of the tile's queries
  float* sD = sL + kBr;                               // D_i of the tile's queries

  const int kj = int(blockIdx.x);
  const int64_t kvh = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gr = lane >> 2, tq = lane & 3;
  const int64_t qld = g.A * D, kld = g.G * D, j0 = int64_t(kj) * kBc;

  load_tile<D>(sK, k + (b * g.Sk + j0) * kld + kvh * D, kld, g.Sk - j0);
  load_tile<D>(sV, v + (b * g.Sk + j0) * kld + kvh * D, kld, g.Sk - j0);
  const int r0 = warp * 16 + gr;  // this thread's key rows r0, r0 + 8 of the tile
  const int64_t j_lo = j0 + r0, j_hi = j0 + r0 + 8;
  const int64_t kp0 = kpos_at(g, j_lo), kp1 = kpos_at(g, j_hi);

  float ak[D / 8][4], av[D / 8][4];
#pragma unroll
  for (int d = 0; d < D / 8; ++d)
#pragma unroll
    for (int e = 0; e < 4; ++e) ak[d][e] = av[d][e] = 0.0f;

  for (int64_t a = kvh * g.rep; a < (kvh + 1) * g.rep; ++a)  // every query head of kv head g
    for (int qi = 0; qi < g.nq; ++qi) {
      const int vis = visibility(g, qi, kj);
      if (!vis) continue;
      const int64_t i0 = int64_t(qi) * kBr, h0 = (b * g.A + a) * g.S;
      __syncthreads();  // the previous tile's sQ, sdO, sQpos, sL, sD are no longer read
      load_tile<D>(sQ, q + (b * g.S + i0) * qld + a * D, qld, g.S - i0);
      load_tile<D>(sdO, dout + (b * g.S + i0) * qld + a * D, qld, g.S - i0);
      if (threadIdx.x < kBr) {
        const int64_t i = i0 + threadIdx.x;
        sQpos[threadIdx.x] = qpos_at(g, i);
        sL[threadIdx.x] = i < g.S ? lse[h0 + i] * kLog2e : -INFINITY;
        sD[threadIdx.x] = i < g.S ? delta[h0 + i] : 0.0f;
      }
      __syncthreads();  // (the first time also: sK, sV written)

      float st[8][4], dpt[8][4];  // S^T and dP^T: rows = this warp's 16 keys, columns = 64 queries
#pragma unroll
      for (int nb = 0; nb < 8; ++nb)
#pragma unroll
        for (int e = 0; e < 4; ++e) st[nb][e] = dpt[nb][e] = 0.0f;
      gemm_abt<D>(st, sK, warp * 16, sQ, lane);    // S^T = K Q^T
      gemm_abt<D>(dpt, sV, warp * 16, sdO, lane);  // dP^T = V dO^T
#pragma unroll
      for (int nb = 0; nb < 8; ++nb)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int c = nb * 8 + 2 * tq + (e & 1);  // the query (column) in the tile
          const float L = sL[c];
          const bool visible = !isinf(L) && (vis == 2 || (e < 2 ? kp0 : kp1) <= sQpos[c]);
          const float p = visible ? exp2f(st[nb][e] * g.scale_log2 - L) : 0.0f;
          st[nb][e] = p;                            // P^T
          dpt[nb][e] = p * (dpt[nb][e] - sD[c]);    // dS^T
        }
      gemm_pv<D>(av, st, sdO, lane);   // dV += P^T dO  (dO as the k-major [query][dim] tile)
      gemm_pv<D>(ak, dpt, sQ, lane);   // dK += dS^T Q
    }

#pragma unroll
  for (int d = 0; d < D / 8; ++d) {
    const int col = d * 8 + 2 * tq;
    if (j_lo < g.Sk) {
      const int64_t off = (b * g.Sk + j_lo) * kld + kvh * D + col;
      *reinterpret_cast<__nv_bfloat162*>(dk + off) = __floats2bfloat162_rn(ak[d][0] * g.scale, ak[d][1] * g.scale);
      *reinterpret_cast<__nv_bfloat162*>(dv + off) = __floats2bfloat162_rn(av[d][0], av[d][1]);
    }
    if (j_hi < g.Sk) {
      const int64_t off = (b * g.Sk + j_hi) * kld + kvh * D + col;
      *reinterpret_cast<__nv_bfloat162*>(dk + off) = __floats2bfloat162_rn(ak[d][2] * g.scale, ak[d][3] * g.scale);
      *reinterpret_cast<__nv_bfloat162*>(dv + off) = __floats2bfloat162_rn(av[d][2], av[d][3]);
    }
  }
}

// ---- host side --------------------------------------------------------------------------

constexpr size_t fwd_smem(int D) { return size_t(3) * 64 * (D + 8) * sizeof(bf16) + kBc * sizeof(int64_t); }
constexpr size_t dq_smem(int D) { return size_t(4) * 64 * (D + 8) * sizeof(bf16) + kBc * sizeof(int64_t); }
constexpr size_t dkv_smem(int D) {
  return size_t(4) * 64 * (D + 8) * sizeof(bf16) + kBr * (sizeof(int64_t) + 2 * sizeof(float));
}

int tiles(int64_t n, int tile) { return int((n + tile - 1) / tile); }

// Positions followed by each tile's minimum and maximum position (one upload).
std::vector<int64_t> with_ranges(const std::vector<int64_t>& pos, int tile) {
  const int n = tiles(int64_t(pos.size()), tile);
  std::vector<int64_t> out(pos);
  out.resize(pos.size() + 2 * size_t(n));
  for (int t = 0; t < n; ++t) {
    const auto lo = pos.begin() + int64_t(t) * tile, hi = pos.begin() + std::min<int64_t>(int64_t(t + 1) * tile, int64_t(pos.size()));
    out[pos.size() + size_t(t)] = *std::min_element(lo, hi);
    out[pos.size() + size_t(n + t)] = *std::max_element(lo, hi);
  }
  return out;
}

// The geometry, with explicit positions (and their tile ranges) uploaded into qbuf / kbuf
// on the op's stream; keep both alive until the launches are queued.
Geo geometry(const ops::AttnShape& a, IndexTensor& qbuf, IndexTensor& kbuf, const Stream& stream) {
  Geo g{};
  g.B = a.B;
  g.S = a.S;
  g.Sk = a.keys();
  g.A = a.A;
  g.G = a.G;
  g.rep = a.A / a.G;
  g.nq = tiles(g.S, kBr);
  g.nk = tiles(g.Sk, kBc);
  g.scale = 1.0f / std::sqrt(float(a.D));
  g.scale_log2 = g.scale * kLog2e;
  if (!a.qpos.empty()) {
    qbuf = on_device(with_ranges(a.qpos, kBr), stream);
    g.qpos = qbuf.device_data(stream);
    g.qrange = g.qpos + g.S;
  }
  if (!a.kpos.empty()) {
    kbuf = on_device(with_ranges(a.kpos, kBc), stream);
    g.kpos = kbuf.device_data(stream);
    g.krange = g.kpos + g.Sk;
  }
  return g;
}

template <class Kernel>
void allow_smem(Kernel kernel, size_t bytes) {
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

template <int D>
void forward_d(Tensor& o, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v, const Geo& g,
               cudaStream_t st) {
  allow_smem(flash_fwd_kernel<D>, fwd_smem(D));
  const dim3 grid(unsigned(g.nq), unsigned(g.A), unsigned(g.B));
  flash_fwd_kernel<D><<<grid, kFlashThreads, fwd_smem(D), st>>>(ptr<bf16>(o), lse.f32(), ptr<bf16>(q), ptr<bf16>(k),
                                                                ptr<bf16>(v), g);
  CUDA_CHECK_LAUNCH();
}

template <int D>
void backward_d(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                const Tensor& v, const Tensor& o, const Tensor& lse, const Geo& g, cudaStream_t st) {
  const int64_t rows = g.B * g.A * g.S;
  Tensor delta = Tensor::empty({rows}, MemCategory::Workspace, DType::F32, Device::CUDA);
  flash_delta_kernel<D><<<blocks_for(rows * 32), kThreads, 0, st>>>(delta.f32(), ptr<bf16>(dout), ptr<bf16>(o), g);
  CUDA_CHECK_LAUNCH();
  allow_smem(flash_bwd_dq_kernel<D>, dq_smem(D));
  flash_bwd_dq_kernel<D><<<dim3(unsigned(g.nq), unsigned(g.A), unsigned(g.B)), kFlashThreads, dq_smem(D), st>>>(
      ptr<bf16>(dq), ptr<bf16>(dout), ptr<bf16>(q), ptr<bf16>(k), ptr<bf16>(v), lse.f32(), delta.f32(), g);
  CUDA_CHECK_LAUNCH();
  allow_smem(flash_bwd_dkv_kernel<D>, dkv_smem(D));
  flash_bwd_dkv_kernel<D><<<dim3(unsigned(g.nk), unsigned(g.G), unsigned(g.B)), kFlashThreads, dkv_smem(D), st>>>(
      ptr<bf16>(dk), ptr<bf16>(dv), ptr<bf16>(dout), ptr<bf16>(q), ptr<bf16>(k), ptr<bf16>(v), lse.f32(), delta.f32(),
      g);
  CUDA_CHECK_LAUNCH();
}

// -1: not set from code, follow the environment.
std::atomic<int> g_flash_override{-1};

bool env_flash() {
  static const bool on = [] {
    const char* e = std::getenv("PB_CUDA_FLASH");
    return e != nullptr && std::strcmp(e, "1") == 0;
  }();
  return on;
}

void require_supported(const ops::AttnShape& a, const char* what) {
  PB_REQUIRE(a.D == 64 || a.D == 128, what, ": head dim ", a.D, " (the flash kernels take 64 and 128)");
  PB_REQUIRE(a.S > 0 && a.keys() > 0 && a.B > 0 && a.A > 0, what, ": empty shape (the flash kernels need rows)");
  PB_REQUIRE(a.B <= 65535 && a.A <= 65535, what, ": B and A must fit a grid dimension (65535)");
}

}  // namespace

bool flash_attention_enabled() {
  const int o = g_flash_override.load();
  return o >= 0 ? o == 1 : env_flash();
}

void set_flash_attention(bool on) { g_flash_override = on ? 1 : 0; }

bool flash_attention_applies(const ops::AttnShape& a, std::initializer_list<const Tensor*> bf16_operands) {
  if (!flash_attention_enabled()) return false;
  if ((a.D != 64 && a.D != 128) || a.B <= 0 || a.S <= 0 || a.keys() <= 0 || a.A <= 0 || a.B > 65535 || a.A > 65535)
    return false;
  for (const Tensor* t : bf16_operands)
    if (t->dtype() != DType::BF16 || t->device() != Device::CUDA ||
        reinterpret_cast<uintptr_t>(t->raw()) % 16 != 0)
      return false;
  return true;
}

void flash_attention_forward(Tensor& o, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                             const ops::AttnShape& a, const Stream& stream) {
  checks::attention_inputs("flash attention forward (cuda)", a, q, k, v);
  checks::attention_forward_outputs("flash attention forward (cuda)", a, o, lse, q);
  require_supported(a, "flash attention forward (cuda)");
  IndexTensor qb, kb;
  const Geo g = geometry(a, qb, kb, stream);
  if (a.D == 64)
    forward_d<64>(o, lse, q, k, v, g, cu(stream));
  else
    forward_d<128>(o, lse, q, k, v, g, cu(stream));
}

void flash_attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q,
                              const Tensor& k, const Tensor& v, const Tensor& o, const Tensor& lse,
                              const ops::AttnShape& a, const Stream& stream) {
  checks::attention_inputs("flash attention backward (cuda)", a, q, k, v);
  checks::attention_backward_operands("flash attention backward (cuda)", a, dq, dk, dv, dout, q, k, o, lse);
  require_supported(a, "flash attention backward (cuda)");
  IndexTensor qb, kb;
  const Geo g = geometry(a, qb, kb, stream);
  const StreamScope on(stream, Device::CUDA);  // the delta workspace belongs to the op's stream
  if (a.D == 64)
    backward_d<64>(dq, dk, dv, dout, q, k, v, o, lse, g, cu(stream));
  else
    backward_d<128>(dq, dk, dv, dout, q, k, v, o, lse, g, cu(stream));
}

}  // namespace pb::cuda
