/* CUDA GQA attention, causal by position, FlashAttention's recurrences without the tiling
 * (Dao et al., arXiv 2205.14135 / 2307.08691; formulas in reference/ops/attention.h).
 * S query rows and Sk key rows per sequence with positions qpos (S) and kpos (Sk): key j
 * is visible to query i iff kpos_j <= qpos_i. The defaults (Sk = S, positions 0..S-1) are
 * causal self-attention; explicit positions and Sk != S are the partial steps of ring
 * attention (Liu et al., arXiv 2310.01889), whose chunks need not be contiguous. A query
 * row that sees no key gets o = 0 and lse = -inf and no gradient, so partial results
 * merge by their LSE.
 * A correctness-first version: one warp per query row (forward, dQ) or per key row (dK,
 * dV), the D elements of a row spread over the 32 lanes; O(S) memory per head, online
 * softmax, and no atomics, so results are deterministic. The tensor-core kernels of the
 * performance targets replace it later behind the same signature.
 * Opt-in flash path (flash_attention.cu, UNVERIFIED: never run on a GPU): with
 * PB_CUDA_FLASH=1 in the environment (read once) or cuda::set_flash_attention(true), bf16
 * operands with head dim 64 or 128 go to the tensor-core FlashAttention-2 kernels instead
 * (flash_attention_applies); everything else, and everything by default, runs the kernels
 * below, which stay the oracle.
 *   forward : m, l online over the visible j; o = sum_j e^(s_ij - m) v_j / l; lse = m + log l
 *             (no visible j: o = 0, lse = -inf)
 *   backward: D_i = dO_i . o_i; p = e^(s_ij - lse_i); ds = p (dO_i . v_j - D_i)
 *             dQ_i = scale sum_{visible j} ds k_j                        (warp per query)
 *             dV_j = sum_{a in g, visible i} p dO_i; dK_j = scale sum ds q_i   (warp per key)
 *             rows with lse = -inf (nothing visible) contribute nothing
 * q, k, v, o, dO, dQ, dK, dV are fp32 or bf16 (one dtype per call): bf16 elements are read
 * as fp32, every score, exponential and accumulator is fp32, and the outputs o, dQ, dK, dV
 * are rounded to bf16 once at the end; lse and the row statistic D_i stay fp32. Head dims
 * up to 256 (64 and 128 in the model).
 *   q, o, dO, dQ (B*S, A*D); k, v, dK, dV (B*Sk, G*D); lse (B*A, S)
 */
#include "optimized/kernels/cuda/common.cuh"
#include "optimized/kernels/cuda/cuda_kernels.h"
#include "optimized/kernels/cuda/flash_attention.h"
#include "optimized/kernels/shape_checks.h"
#include "reference/common/error.h"

namespace pb::cuda {

namespace {

constexpr int kMaxPerLane = 8;  // D <= 256
constexpr int kWarpsPerBlock = 4;

struct Dims {
  int64_t B, S, Sk, A, G, D;
  float scale;
  const int64_t* qpos;  // S query positions on the device, or null: 0..S-1
  const int64_t* kpos;  // Sk key positions on the device, or null: 0..Sk-1
};

__device__ inline int64_t qpos_of(const Dims& s, int64_t i) { return s.qpos ? s.qpos[i] : i; }
__device__ inline int64_t kpos_of(const Dims& s, int64_t j) { return s.kpos ? s.kpos[j] : j; }
// With default positions on both sides only keys j <= i are visible to query i: the loops
// stop (forward, dQ) or start (dK, dV) there. The mask is still tested inside.
__device__ inline int64_t key_end(const Dims& s, int64_t i) {
  return (s.qpos || s.kpos) ? s.Sk : (i + 1 < s.Sk ? i + 1 : s.Sk);
}
__device__ inline int64_t query_begin(const Dims& s, int64_t j) { return (s.qpos || s.kpos) ? 0 : j; }

// Lane-strided dot product of two D-vectors, in fp32, summed over the warp.
template <class T>
__device__ inline float warp_dot(const T* x, const T* y, int64_t D, int lane) {
  float s = 0;
  for (int64_t d = lane; d < D; d += 32) s += to_float(x[d]) * to_float(y[d]);
  return warp_sum(s);
}

// Every branch on the mask or on lse below depends only on (i, j, head), never on the lane,
// so the whole warp takes it together and the shuffles of warp_dot stay converged.

template <class T>
__global__ void attn_fwd_kernel(T* o, float* lse, const T* q, const T* k, const T* v, Dims s) {
  const int64_t warp = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= s.B * s.A * s.S) return;
  const int64_t i = warp % s.S, a = (warp / s.S) % s.A, b = warp / (s.S * s.A), g = a / (s.A / s.G);
  const T* qi = q + (b * s.S + i) * s.A * s.D + a * s.D;
  const int64_t qp = qpos_of(s, i), jend = key_end(s, i);
  float acc[kMaxPerLane] = {};
  float m = -INFINITY, l = 0;
  for (int64_t j = 0; j < jend; ++j) {
    if (kpos_of(s, j) > qp) continue;  // masked
    const T* kj = k + (b * s.Sk + j) * s.G * s.D + g * s.D;
    const T* vj = v + (b * s.Sk + j) * s.G * s.D + g * s.D;
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
  const bool none = (m == -INFINITY);  // no visible key: o = 0, lse = -inf
  T* oi = o + (b * s.S + i) * s.A * s.D + a * s.D;
#pragma unroll
  for (int c = 0; c < kMaxPerLane; ++c) {
    const int64_t d = lane + 32 * c;
    if (d < s.D) oi[d] = from_float<T>(none ? 0.0f : acc[c] / l);
  }
  if (lane == 0) lse[(b * s.A + a) * s.S + i] = none ? -INFINITY : m + logf(l);
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
  const int64_t qp = qpos_of(s, i), jend = isinf(L) ? 0 : key_end(s, i);  // lse = -inf: no gradient
  float acc[kMaxPerLane] = {};
  for (int64_t j = 0; j < jend; ++j) {
    if (kpos_of(s, j) > qp) continue;  // masked
    const T* kj = k + (b * s.Sk + j) * s.G * s.D + g * s.D;
    const T* vj = v + (b * s.Sk + j) * s.G * s.D + g * s.D;
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
  if (warp >= s.B * s.G * s.Sk) return;
  const int64_t j = warp % s.Sk, g = (warp / s.Sk) % s.G, b = warp / (s.Sk * s.G), group = s.A / s.G;
  const int64_t krow = (b * s.Sk + j) * s.G * s.D + g * s.D;
  const int64_t kp = kpos_of(s, j), ibegin = query_begin(s, j);
  float ak[kMaxPerLane] = {}, av[kMaxPerLane] = {};
  for (int64_t a = g * group; a < (g + 1) * group; ++a)  // every query head of kv head g
    for (int64_t i = ibegin; i < s.S; ++i) {
      if (kp > qpos_of(s, i)) continue;  // masked
      const int64_t row = (b * s.S + i) * s.A * s.D + a * s.D, h = (b * s.A + a) * s.S + i;
      const float L = lse[h];
      if (isinf(L)) continue;  // a row that sees nothing has no gradient
      const float p = expf(s.scale * warp_dot(q + row, k + krow, s.D, lane) - L);
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

// The shape checked against the tensors, with the positions uploaded on the op's stream
// where given (they live in `qp` and `kp` until the caller's launches are queued; the
// allocator orders any reuse of their memory after them).
Dims dims(const ops::AttnShape& a, const Tensor& q, const Tensor& k, const Tensor& v, IndexTensor& qp,
          IndexTensor& kp, const Stream& stream) {
  const int64_t Sk = a.keys();
  checks::attention_inputs("attention (cuda)", a, q, k, v);
  PB_REQUIRE(a.D <= 32 * kMaxPerLane, "attention (cuda): head dim ", a.D, " not in 1..", 32 * kMaxPerLane);
  if (!a.qpos.empty()) qp = on_device(a.qpos, stream);
  if (!a.kpos.empty()) kp = on_device(a.kpos, stream);
  return {a.B,
          a.S,
          Sk,
          a.A,
          a.G,
          a.D,
          1.0f / sqrtf(float(a.D)),
          qp.defined() ? qp.device_data(stream) : nullptr,
          kp.defined() ? kp.device_data(stream) : nullptr};
}

unsigned blocks(int64_t warps) { return unsigned((warps + kWarpsPerBlock - 1) / kWarpsPerBlock); }

template <class T>
void forward_t(Tensor& o, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v, const Dims& s,
               cudaStream_t st) {
  attn_fwd_kernel<T><<<blocks(s.B * s.A * s.S), 32 * kWarpsPerBlock, 0, st>>>(ptr<T>(o), lse.f32(), ptr<T>(q), ptr<T>(k),
                                                                       ptr<T>(v), s);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void backward_t(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                const Tensor& v, const Tensor& o, const Tensor& lse, const Dims& s, cudaStream_t st) {
  const int64_t rows = s.B * s.A * s.S, keys = s.B * s.G * s.Sk;
  Tensor delta = Tensor::empty({std::max<int64_t>(rows, 1)}, MemCategory::Workspace, DType::F32, Device::CUDA);
  if (rows > 0) {  // dQ and D_i; the dK/dV kernel reads D_i
    attn_bwd_dq_kernel<T><<<blocks(rows), 32 * kWarpsPerBlock, 0, st>>>(ptr<T>(dq), delta.f32(), ptr<T>(dout), ptr<T>(q),
                                                                 ptr<T>(k), ptr<T>(v), ptr<T>(o), lse.f32(), s);
    CUDA_CHECK_LAUNCH();
  }
  if (keys > 0) {  // with no query rows this writes dK = dV = 0
    attn_bwd_dkv_kernel<T><<<blocks(keys), 32 * kWarpsPerBlock, 0, st>>>(ptr<T>(dk), ptr<T>(dv), ptr<T>(dout), ptr<T>(q),
                                                                  ptr<T>(k), ptr<T>(v), lse.f32(), delta.f32(), s);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace

void attention_forward(Tensor& o, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v, const ops::AttnShape& a, const Stream& stream) {
  if (flash_attention_applies(a, {&o, &q, &k, &v})) return flash_attention_forward(o, lse, q, k, v, a, stream);
  IndexTensor qp, kp;
  const Dims s = dims(a, q, k, v, qp, kp, stream);
  checks::attention_forward_outputs("attention forward (cuda)", a, o, lse, q);
  if (!s.B || !s.S || !s.A) return;  // no query rows (Sk = 0 is fine: every row sees nothing)
  if (q.dtype() == DType::BF16)
    forward_t<bf16>(o, lse, q, k, v, s, cu(stream));
  else
    forward_t<float>(o, lse, q, k, v, s, cu(stream));
}

void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                        const Tensor& v, const Tensor& o, const Tensor& lse, const ops::AttnShape& a, const Stream& stream) {
  if (flash_attention_applies(a, {&dq, &dk, &dv, &dout, &q, &k, &v, &o}))
    return flash_attention_backward(dq, dk, dv, dout, q, k, v, o, lse, a, stream);
  IndexTensor qp, kp;
  const Dims s = dims(a, q, k, v, qp, kp, stream);
  checks::attention_backward_operands("attention backward (cuda)", a, dq, dk, dv, dout, q, k, o, lse);
  if (!s.B) return;
  const StreamScope on(stream, Device::CUDA);  // the workspace belongs to the op's stream
  if (q.dtype() == DType::BF16)
    backward_t<bf16>(dq, dk, dv, dout, q, k, v, o, lse, s, cu(stream));
  else
    backward_t<float>(dq, dk, dv, dout, q, k, v, o, lse, s, cu(stream));
}

}  // namespace pb::cuda
