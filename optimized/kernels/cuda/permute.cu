/* CUDA MoE token permutation (Megatron-LM's moe_utils permute / unpermute; the dispatch and
 * combine of a top-K router, Fedus et al., "Switch Transformers", arXiv 2101.03961):
 *
 *   gather_rows  out (R, C)_i = in (T, C)_rows[i]                    (the permutation)
 *   sum_rows     out (T, C)_t = sum_{k < K, slots[t*K+k] >= 0} in (R, C)_slots[t*K+k]
 *                             (the unpermutation; 0 for a row without copies)
 *   scale_rows   y (R, C)_i   = x (R, C)_i * s_i                    (y may alias x)
 *   row_dot      out_i        = sum_c a_ic b_ic                     (fp32)
 *
 * Rows are fp32 or bf16 (one dtype per call): a gathered bf16 row is copied exactly; sums,
 * scales and dots are fp32, bf16 outputs rounded once to nearest even (what the dispatch's
 * promote-and-round emulation computes). sum_rows is one thread per output element looping
 * over k in order: deterministic, no atomics, and bit-equal to the CPU's sum. row_dot is
 * one warp per row (a tree sum: within rounding of the CPU's column-order sum). The indices
 * are uploaded asynchronously on the op's stream (an IndexTensor's own device copy when it
 * has one); the dispatch has checked them. */
#include "optimized/kernels/cuda/common.cuh"
#include "optimized/kernels/cuda/cuda_kernels.h"
#include "reference/common/error.h"

namespace pb::cuda {

namespace {

constexpr int kRowsPerBlock = kThreads / 32;  // row_dot: one warp per row

// The row width of a (rows, ...) tensor: the product of its trailing dims (also for 0 rows).
int64_t width(const Tensor& t) {
  int64_t c = 1;
  for (size_t i = 1; i < t.shape().size(); ++i) c *= t.shape()[i];
  return c;
}

template <class T>
__global__ void gather_rows_kernel(T* out, const T* in, const int64_t* rows, int64_t n, int64_t C) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = in[rows[i / C] * C + i % C];
}

template <class T>
__global__ void sum_rows_kernel(T* out, const T* in, const int64_t* slots, int64_t n, int64_t C, int64_t K) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / C, c = i % C;
    float acc = 0.0f;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t s = slots[t * K + k];
      if (s >= 0) acc += to_float(in[s * C + c]);
    }
    out[i] = from_float<T>(acc);
  }
}

// No __restrict__: y may be x.
template <class T>
__global__ void scale_rows_kernel(T* y, const T* x, const float* s, int64_t n, int64_t C) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = from_float<T>(to_float(x[i]) * s[i / C]);
}

template <class T>
__global__ void row_dot_kernel(float* out, const T* a, const T* b, int64_t R, int64_t C) {
  const int64_t r = blockIdx.x * int64_t(kRowsPerBlock) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= R) return;  // the whole warp: r is per warp
  float acc = 0.0f;
  for (int64_t c = lane; c < C; c += 32) acc += to_float(a[r * C + c]) * to_float(b[r * C + c]);
  acc = warp_sum(acc);
  if (lane == 0) out[r] = acc;
}

template <class T>
void gather_t(Tensor& out, const Tensor& in, const int64_t* rows, int64_t n, int64_t C, cudaStream_t s) {
  gather_rows_kernel<T><<<blocks_for(n), kThreads, 0, s>>>(ptr<T>(out), ptr<T>(in), rows, n, C);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void sum_t(Tensor& out, const Tensor& in, const int64_t* slots, int64_t n, int64_t C, int64_t K, cudaStream_t s) {
  sum_rows_kernel<T><<<blocks_for(n), kThreads, 0, s>>>(ptr<T>(out), ptr<T>(in), slots, n, C, K);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void scale_t(Tensor& y, const Tensor& x, const Tensor& sc, int64_t n, int64_t C, cudaStream_t s) {
  scale_rows_kernel<T><<<blocks_for(n), kThreads, 0, s>>>(ptr<T>(y), ptr<T>(x), ptr<float>(sc), n, C);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void dot_t(Tensor& out, const Tensor& a, const Tensor& b, int64_t R, int64_t C, cudaStream_t s) {
  row_dot_kernel<T><<<unsigned((R + kRowsPerBlock - 1) / kRowsPerBlock), kThreads, 0, s>>>(ptr<float>(out), ptr<T>(a),
                                                                                         ptr<T>(b), R, C);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void gather_rows(Tensor& out, const Tensor& in, const IndexTensor& rows, const Stream& stream) {
  const int64_t C = width(in), n = rows.size() * C;
  PB_REQUIRE(out.numel() == n, "gather_rows: out ", out.shape_str(), " for ", rows.size(), " rows of in ",
             in.shape_str());
  if (!n) return;
  const IndexTensor d = on_device(rows, stream);
  if (in.dtype() == DType::BF16)
    gather_t<bf16>(out, in, d.device_data(stream), n, C, cu(stream));
  else
    gather_t<float>(out, in, d.device_data(stream), n, C, cu(stream));
}

void sum_rows(Tensor& out, const Tensor& in, const IndexTensor& slots, int64_t K, const Stream& stream) {
  const int64_t C = width(out), n = out.numel();
  PB_REQUIRE(K >= 1 && slots.size() == out.rows() * K && width(in) == C, "sum_rows: out ", out.shape_str(), ", in ",
             in.shape_str(), ", ", slots.size(), " slots, K = ", K);
  if (!n) return;
  const IndexTensor d = on_device(slots, stream);
  if (out.dtype() == DType::BF16)
    sum_t<bf16>(out, in, d.device_data(stream), n, C, K, cu(stream));
  else
    sum_t<float>(out, in, d.device_data(stream), n, C, K, cu(stream));
}

void scale_rows(Tensor& y, const Tensor& x, const Tensor& s, const Stream& stream) {
  const int64_t C = width(x), n = x.numel();
  PB_REQUIRE(y.numel() == n && s.numel() == x.rows(), "scale_rows: y ", y.shape_str(), ", x ", x.shape_str(), ", s ",
             s.shape_str());
  if (!n) return;
  if (x.dtype() == DType::BF16)
    scale_t<bf16>(y, x, s, n, C, cu(stream));
  else
    scale_t<float>(y, x, s, n, C, cu(stream));
}

void row_dot(Tensor& out, const Tensor& a, const Tensor& b, const Stream& stream) {
  const int64_t R = a.rows(), C = width(a);
  PB_REQUIRE(out.numel() == R && b.numel() == a.numel(), "row_dot: out ", out.shape_str(), ", a ", a.shape_str(),
             ", b ", b.shape_str());
  if (!R) return;
  if (a.dtype() == DType::BF16)
    dot_t<bf16>(out, a, b, R, C, cu(stream));
  else
    dot_t<float>(out, a, b, R, C, cu(stream));
}

}  // namespace pb::cuda
