/* CUDA causal GQA attention, FlashAttention's recurrences without the tiling
 * (Dao et al., arXiv 2205.14135 / 2307.08691; formulas in reference/ops/attention.h).
 * A correctness-first version: one warp per query row (forward, dQ) or per key row (dK,
 * dV), the D elements of a row spread over the 32 lanes; O(S) memory per head, online
 * softmax, and no atomics, so results are deterministic. The tensor-core kernels of the
 * performance targets replace it later behind the same signature.
 *   forward : m, l online over j <= i; o = sum_j e^(s_ij - m) v_j / l; lse = m + log l
 *   backward: D_i = dO_i . o_i; p = e^(s_ij - lse_i); ds = p (dO_i . v_j - D_i)
 *             dQ_i = scale sum_j ds k_j       (warp per query)
 *             dV_j = sum_{a in g, i >= j} p dO_i; dK_j = scale sum ds q_i   (warp per key)
 * q, k, v, o, dO, dQ, dK, dV are fp32 or bf16 (one dtype per call): bf16 elements are read
 * as fp32, every score, exponential and accumulator is fp32, and the outputs o, dQ, dK, dV
 * are rounded to bf16 once at the end; lse and the row statistic D_i stay fp32. Head dims
 * up to 256 (64 and 128 in the model).
 */
#include "optimized/kernels/cuda/common.cuh"
#include "optimized/kernels/cuda/cuda_kernels.h"
#include "reference/common/error.h"

namespace pb::cuda {

namespace {

constexpr int kMaxPerLane = 8;  // D <= 256
constexpr int kWarpsPerBlock = 4;

struct Dims {
  int64_t B, S, A, G, D;
  float scale;
};

// Lane-strided dot product of two D-vectors, in fp32, summed over the warp.
template <class T>
__device__ inline float warp_dot(const T* x, const T* y, int64_t D, int lane) {
  float s = 0;
  for (int64_t d = lane; d < D; d += 32) s += to_float(x[d]) * to_float(y[d]);
  return warp_sum(s);
}

template <class T>
__global__ void attn_fwd_kernel(T* o, float* lse, const T* q, const T* k, const T* v, Dims s) {
  const int64_t warp = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= s.B * s.A * s.S) return;
  const int64_t i = warp % s.S, a = (warp / s.S) % s.A, b = warp / (s.S * s.A), g = a / (s.A / s.G);
  const T* qi = q + (b * s.S + i) * s.A * s.D + a * s.D;
  float acc[kMaxPerLane] = {};
  float m = -INFINITY, l = 0;
  for (int64_t j = 0; j <= i; ++j) {
    const T* kj = k + (b * s.S + j) * s.G * s.D + g * s.D;
    const T* vj = v + (b * s.S + j) * s.G * s.D + g * s.D;
    const float sc = s.scale * warp_dot(qi, kj, s.D, lane);
    const float m_new = fmaxf(m, sc), corr = expf(m - m_new), p = expf(sc - m_new);
    l = l * corr + p;
#pragma unroll
    for (int c = 0; c < kMaxPerLane; ++c) {
      const int64_t d = lane + 32 * c;
      if (d < s.D) acc[c] = acc[c] * corr + p * to_float(vj[d]);
    }
    m = m_new;
  }
  T* oi = o + (b * s.S + i) * s.A * s.D + a * s.D;
#pragma unroll
  for (int c = 0; c < kMaxPerLane; ++c) {
    const int64_t d = lane + 32 * c;
    if (d < s.D) oi[d] = from_float<T>(acc[c] / l);
  }
  if (lane == 0) lse[(b * s.A + a) * s.S + i] = m + logf(l);
}

template <class T>
__global__ void attn_bwd_dq_kernel(T* dq, float* delta, const T* dout, const T* q, const T* k, const T* v, const T* o,
                                   const float* lse, Dims s) {
  const int64_t warp = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= s.B * s.A * s.S) return;
  const int64_t i = warp % s.S, a = (warp / s.S) % s.A, b = warp / (s.S * s.A), g = a / (s.A / s.G);
  const int64_t row = (b * s.S + i) * s.A * s.D + a * s.D;
  const float Di = warp_dot(dout + row, o + row, s.D, lane);
  const float L = lse[(b * s.A + a) * s.S + i];
  if (lane == 0) delta[(b * s.A + a) * s.S + i] = Di;
  float acc[kMaxPerLane] = {};
  for (int64_t j = 0; j <= i; ++j) {
    const T* kj = k + (b * s.S + j) * s.G * s.D + g * s.D;
    const T* vj = v + (b * s.S + j) * s.G * s.D + g * s.D;
    const float p = expf(s.scale * warp_dot(q + row, kj, s.D, lane) - L);
    const float ds = p * (warp_dot(dout + row, vj, s.D, lane) - Di);
#pragma unroll
    for (int c = 0; c < kMaxPerLane; ++c) {
      const int64_t d = lane + 32 * c;
      if (d < s.D) acc[c] += s.scale * ds * to_float(kj[d]);
    }
  }
#pragma unroll
  for (int c = 0; c < kMaxPerLane; ++c) {
    const int64_t d = lane + 32 * c;
    if (d < s.D) dq[row + d] = from_float<T>(acc[c]);
  }
}

template <class T>
__global__ void attn_bwd_dkv_kernel(T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const float* lse,
                                    const float* delta, Dims s) {
  const int64_t warp = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= s.B * s.G * s.S) return;
  const int64_t j = warp % s.S, g = (warp / s.S) % s.G, b = warp / (s.S * s.G), group = s.A / s.G;
  const int64_t krow = (b * s.S + j) * s.G * s.D + g * s.D;
  float ak[kMaxPerLane] = {}, av[kMaxPerLane] = {};
  for (int64_t a = g * group; a < (g + 1) * group; ++a)
    for (int64_t i = j; i < s.S; ++i) {
      const int64_t row = (b * s.S + i) * s.A * s.D + a * s.D, h = (b * s.A + a) * s.S + i;
      const float p = expf(s.scale * warp_dot(q + row, k + krow, s.D, lane) - lse[h]);
      const float ds = p * (warp_dot(dout + row, v + krow, s.D, lane) - delta[h]);
#pragma unroll
      for (int c = 0; c < kMaxPerLane; ++c) {
        const int64_t d = lane + 32 * c;
        if (d < s.D) {
          av[c] += p * to_float(dout[row + d]);
          ak[c] += s.scale * ds * to_float(q[row + d]);
        }
      }
    }
#pragma unroll
  for (int c = 0; c < kMaxPerLane; ++c) {
    const int64_t d = lane + 32 * c;
    if (d < s.D) {
      dk[krow + d] = from_float<T>(ak[c]);
      dv[krow + d] = from_float<T>(av[c]);
    }
  }
}

Dims dims(const ops::AttnShape& a) {
  PB_REQUIRE(a.D <= 32 * kMaxPerLane, "attention (cuda): head dim ", a.D, " above ", 32 * kMaxPerLane);
  PB_REQUIRE(a.G > 0 && a.A % a.G == 0, "attention (cuda): heads ", a.A, " not divisible by kv heads ", a.G);
  return {a.B, a.S, a.A, a.G, a.D, 1.0f / sqrtf(float(a.D))};
}

unsigned blocks(int64_t warps) { return unsigned((warps + kWarpsPerBlock - 1) / kWarpsPerBlock); }

template <class T>
void forward_t(Tensor& o, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v, const Dims& s) {
  attn_fwd_kernel<T><<<blocks(s.B * s.A * s.S), 32 * kWarpsPerBlock>>>(ptr<T>(o), lse.f32(), ptr<T>(q), ptr<T>(k),
                                                                       ptr<T>(v), s);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void backward_t(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                const Tensor& v, const Tensor& o, const Tensor& lse, const Dims& s) {
  Tensor delta = Tensor::empty({s.B * s.A * s.S}, MemCategory::Workspace, DType::F32, Device::CUDA);
  attn_bwd_dq_kernel<T><<<blocks(s.B * s.A * s.S), 32 * kWarpsPerBlock>>>(
      ptr<T>(dq), delta.f32(), ptr<T>(dout), ptr<T>(q), ptr<T>(k), ptr<T>(v), ptr<T>(o), lse.f32(), s);
  CUDA_CHECK_LAUNCH();
  attn_bwd_dkv_kernel<T><<<blocks(s.B * s.G * s.S), 32 * kWarpsPerBlock>>>(
      ptr<T>(dk), ptr<T>(dv), ptr<T>(dout), ptr<T>(q), ptr<T>(k), ptr<T>(v), lse.f32(), delta.f32(), s);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void attention_forward(Tensor& o, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v, const ops::AttnShape& a) {
  const Dims s = dims(a);
  if (!s.B || !s.S) return;
  if (q.dtype() == DType::BF16)
    forward_t<bf16>(o, lse, q, k, v, s);
  else
    forward_t<float>(o, lse, q, k, v, s);
}

void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                        const Tensor& v, const Tensor& o, const Tensor& lse, const ops::AttnShape& a) {
  const Dims s = dims(a);
  if (!s.B || !s.S) return;
  if (q.dtype() == DType::BF16)
    backward_t<bf16>(dq, dk, dv, dout, q, k, v, o, lse, s);
  else
    backward_t<float>(dq, dk, dv, dout, q, k, v, o, lse, s);
}

}  // namespace pb::cuda
