/* CPU MoE token permutation (Megatron-LM's moe_utils permute / unpermute; the dispatch and
 * combine of a top-K router, Fedus et al., "Switch Transformers", arXiv 2101.03961), fp32
 * (bf16 is the dispatch's promote-and-round emulation: a gather of promoted bf16 rows rounds
 * back exactly):
 *
 *   gather_rows  out (R, C)_i = in (T, C)_rows[i]                    (the permutation)
 *   sum_rows     out (T, C)_t = sum_{k < K, slots[t*K+k] >= 0} in (R, C)_slots[t*K+k]
 *                             (the unpermutation, summed in fp32 in k order; 0 without copies)
 *   scale_rows   y (R, C)_i   = x (R, C)_i * s_i                    (y may alias x)
 *   row_dot      out_i        = sum_c a_ic b_ic                     (fp32, in column order)
 *
 * The dispatch (kernels/dispatch_moe.cc) has checked the shapes and the indices. */
#include <cstring>

#include "optimized/kernels/cpu/cpu_kernels.h"
#include "reference/common/error.h"

namespace pb::cpu {

namespace {

// The row width of a (rows, ...) tensor: the product of its trailing dims (also for 0 rows).
int64_t width(const Tensor& t) {
  int64_t c = 1;
  for (size_t i = 1; i < t.shape().size(); ++i) c *= t.shape()[i];
  return c;
}

}  // namespace

void gather_rows(Tensor& out, const Tensor& in, const IndexTensor& rows, const Stream&) {
  const std::vector<int64_t>& r = rows.host();  // (R)
  const int64_t C = width(in);
  if (r.empty() || !C) return;
  float* o = out.f32();       // (R, C)
  const float* x = in.f32();  // (T, C)
  for (size_t i = 0; i < r.size(); ++i)
    std::memcpy(o + int64_t(i) * C, x + r[i] * C, size_t(C) * sizeof(float));
}

void sum_rows(Tensor& out, const Tensor& in, const IndexTensor& slots, int64_t K, const Stream&) {
  const std::vector<int64_t>& sl = slots.host();  // (T*K)
  const int64_t T = out.rows(), C = width(out);
  if (!T || !C) return;
  float* o = out.f32();                                          // (T, C)
  const float* x = in.numel() ? in.f32() : nullptr;              // (R, C)
  for (int64_t t = 0; t < T; ++t) {
    float* dst = o + t * C;
    for (int64_t c = 0; c < C; ++c) dst[c] = 0.0f;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t s = sl[size_t(t * K + k)];
      if (s < 0) continue;  // a dropped copy, or one served elsewhere
      const float* src = x + s * C;
      for (int64_t c = 0; c < C; ++c) dst[c] += src[c];
    }
  }
}

void scale_rows(Tensor& y, const Tensor& x, const Tensor& s, const Stream&) {
  const int64_t R = x.rows(), C = width(x);
  if (!R || !C) return;
  float* o = y.f32();         // (R, C)
  const float* a = x.f32();   // (R, C), may be o
  const float* f = s.f32();   // (R)
  for (int64_t i = 0; i < R; ++i)
    for (int64_t c = 0; c < C; ++c) o[i * C + c] = a[i * C + c] * f[i];
}

void row_dot(Tensor& out, const Tensor& a, const Tensor& b, const Stream&) {
  const int64_t R = a.rows(), C = width(a);
  if (!R) return;
  float* o = out.f32();          // (R)
  const float* x = a.f32();      // (R, C)
  const float* y = b.f32();      // (R, C)
  for (int64_t i = 0; i < R; ++i) {
    float acc = 0.0f;
    for (int64_t c = 0; c < C; ++c) acc += x[i * C + c] * y[i * C + c];
    o[i] = acc;
  }
}

}  // namespace pb::cpu
