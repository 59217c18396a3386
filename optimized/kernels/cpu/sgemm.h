/* The CPU backend's SGEMM: C (m, n) = op(A) op(B) + beta C, row-major, on the calling
 * thread (the callers partition over the kernel threads: parallel.h).
 *
 * Where the compiler targets AVX-512 or AVX2 and FMA (PB_NATIVE builds on x86-64), a packed
 * register-blocked kernel of this project's own (sgemm.cc: 12 x 32 tiles with AVX-512,
 * 6 x 16 with AVX2) that is row- and column-stable:
 * an element of C has the same bits whatever the other rows and columns of the call and
 * wherever it sits among them. MC2 (parallel/mc2_linear.h) relies on it: its chunked
 * products must equal SP's whole ones bitwise. Elsewhere Eigen's GEMM on mapped memory,
 * whose rows are stable only in groups of 4 (measured at MC2's shapes; MC2's chunks keep to
 * that).
 *   k = 0 gives C = beta C; m = 0 or n = 0 does nothing. */
#pragma once

#include <cstdint>
#include <string>

namespace pb::cpu {

void sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* B,
           int64_t ldb, float beta, float* C, int64_t ldc);

// What sgemm runs in this build: "avx512 12x32", "avx2-fma 6x16" or "eigen" (results files'
// env.cpu_gemm).
std::string sgemm_backend();
// Whether any row of C is the same whatever the call's other rows (false: groups of 4).
bool sgemm_rows_stable();

}  // namespace pb::cpu
