/* CUDA vocab-parallel cross-entropy pieces (see kernels/op_signatures.inc; Megatron-LM's
 * vocab-parallel cross-entropy, Shoeybi et al., arXiv 1909.08053): one block per row for
 * the max, the sum of exponentials and the backward; the loss sum in double in a fixed
 * order. The logits and dlogits are fp32 or bf16 (one dtype per call; bf16 logits read
 * as fp32, dlogits = scale (exp(z - mx) / se - onehot) computed in fp32 and rounded to
 * bf16); the statistics mx, se and the target logit stay fp32. */
#include "optimized/kernels/cuda/common.cuh"
#include "optimized/kernels/cuda/cuda_kernels.h"
#include "optimized/kernels/shape_checks.h"
#include "reference/common/error.h"

namespace pb::cuda {

namespace {

template <class T>
__global__ void row_max_kernel(float* mx, const T* z, int64_t V) {
  const int64_t t = blockIdx.x;
  float m = -INFINITY;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) m = fmaxf(m, to_float(z[t * V + v]));
  m = block_max(m);
  if (threadIdx.x == 0) mx[t] = m;
}

template <class T>
__global__ void sum_exp_kernel(float* se, const T* z, const float* mx, int64_t V) {
  const int64_t t = blockIdx.x;
  float s = 0;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) s += expf(to_float(z[t * V + v]) - mx[t]);
  s = block_sum(s);
  if (threadIdx.x == 0) se[t] = s;
}

template <class T>
__global__ void target_kernel(float* tl, const T* z, const int64_t* labels, int64_t N, int64_t V,
                              int64_t vocab_start) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < N; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = labels[t] - vocab_start;
    tl[t] = (c >= 0 && c < V) ? to_float(z[t * V + c]) : 0.0f;
  }
}

__global__ void row_loss_kernel(double* out, const float* mx, const float* se, const float* tl, int64_t N) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < N; t += int64_t(gridDim.x) * blockDim.x)
    out[t] = log(double(se[t])) + double(mx[t]) - double(tl[t]);
}

template <class T>
__global__ void ce_bwd_kernel(T* dz, const T* z, const float* mx, const float* se, const int64_t* labels, int64_t V,
                              int64_t vocab_start, float scale) {
  const int64_t t = blockIdx.x, c = labels[t] - vocab_start;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x)
    dz[t * V + v] = from_float<T>(expf(to_float(z[t * V + v]) - mx[t]) / se[t] * scale - (v == c ? scale : 0.0f));
}

template <class T>
void row_max_t(Tensor& mx, const Tensor& logits, cudaStream_t s) {
  row_max_kernel<T><<<unsigned(logits.rows()), kThreads, 0, s>>>(mx.f32(), ptr<T>(logits), logits.cols());
  CUDA_CHECK_LAUNCH();
}

template <class T>
void sum_exp_t(Tensor& se, const Tensor& logits, const Tensor& mx, cudaStream_t s) {
  sum_exp_kernel<T><<<unsigned(logits.rows()), kThreads, 0, s>>>(se.f32(), ptr<T>(logits), mx.f32(), logits.cols());
  CUDA_CHECK_LAUNCH();
}

template <class T>
void target_t(Tensor& tl, const Tensor& logits, const int64_t* labels, int64_t vocab_start, cudaStream_t s) {
  target_kernel<T><<<blocks_for(logits.rows()), kThreads, 0, s>>>(tl.f32(), ptr<T>(logits), labels, logits.rows(),
                                                                  logits.cols(), vocab_start);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void backward_t(Tensor& dlogits, const Tensor& logits, const Tensor& mx, const Tensor& se, const int64_t* labels,
                int64_t vocab_start, float scale, cudaStream_t s) {
  ce_bwd_kernel<T><<<unsigned(logits.rows()), kThreads, 0, s>>>(ptr<T>(dlogits), ptr<T>(logits), mx.f32(), se.f32(),
                                                                labels, logits.cols(), vocab_start, scale);
  CUDA_CHECK_LAUNCH();
}

template <class Index>
void target_logit(Tensor& tl, const Tensor& logits, const Index& labels, int64_t vocab_start, const Stream& stream) {
  checks::ce_row_stats("ce_target_logit (cuda)", logits, {&tl});
  checks::ce_labels("ce_target_logit (cuda)", logits, int64_t(labels.size()));
  if (!logits.rows()) return;
  const IndexTensor l = on_device(labels, stream);
  if (logits.dtype() == DType::BF16)
    target_t<bf16>(tl, logits, l.device_data(stream), vocab_start, cu(stream));
  else
    target_t<float>(tl, logits, l.device_data(stream), vocab_start, cu(stream));
}

template <class Index>
void ce_bwd(Tensor& dlogits, const Tensor& logits, const Tensor& mx, const Tensor& se, const Index& labels,
            int64_t vocab_start, float scale, const Stream& stream) {
  checks::ce_backward_operands("ce_backward (cuda)", dlogits, logits, mx, se, int64_t(labels.size()));
  if (!logits.rows()) return;
  const IndexTensor l = on_device(labels, stream);
  if (logits.dtype() == DType::BF16)
    backward_t<bf16>(dlogits, logits, mx, se, l.device_data(stream), vocab_start, scale, cu(stream));
  else
    backward_t<float>(dlogits, logits, mx, se, l.device_data(stream), vocab_start, scale, cu(stream));
}

}  // namespace

void ce_row_max(Tensor& mx, const Tensor& logits, const Stream& stream) {
  checks::ce_row_stats("ce_row_max (cuda)", logits, {&mx});
  if (!logits.rows()) return;
  if (logits.dtype() == DType::BF16)
    row_max_t<bf16>(mx, logits, cu(stream));
  else
    row_max_t<float>(mx, logits, cu(stream));
}

void ce_sum_exp(Tensor& se, const Tensor& logits, const Tensor& mx, const Stream& stream) {
  checks::ce_row_stats("ce_sum_exp (cuda)", logits, {&se, &mx});
  if (!logits.rows()) return;
  if (logits.dtype() == DType::BF16)
    sum_exp_t<bf16>(se, logits, mx, cu(stream));
  else
    sum_exp_t<float>(se, logits, mx, cu(stream));
}

void ce_target_logit(Tensor& tl, const Tensor& logits, const std::vector<int64_t>& labels, int64_t vocab_start,
                     const Stream& stream) {
  target_logit(tl, logits, labels, vocab_start, stream);
}

void ce_target_logit(Tensor& tl, const Tensor& logits, const IndexTensor& labels, int64_t vocab_start,
                     const Stream& stream) {
  target_logit(tl, logits, labels, vocab_start, stream);
}

double ce_loss_sum(const Tensor& mx, const Tensor& se, const Tensor& tl, const Stream& stream) {
  checks::ce_loss_operands("ce_loss_sum (cuda)", mx, se, tl);
  const int64_t N = mx.numel();
  if (!N) return 0;
  DeviceScratch rows(static_cast<size_t>(N), stream);
  row_loss_kernel<<<blocks_for(N), kThreads, 0, cu(stream)>>>(rows.get(), mx.f32(), se.f32(), tl.f32(), N);
  CUDA_CHECK_LAUNCH();
  return sum_partials(rows.get(), int(N), stream);
}

void ce_backward(Tensor& dlogits, const Tensor& logits, const Tensor& mx, const Tensor& se,
                 const std::vector<int64_t>& labels, int64_t vocab_start, float scale, const Stream& stream) {
  ce_bwd(dlogits, logits, mx, se, labels, vocab_start, scale, stream);
}

void ce_backward(Tensor& dlogits, const Tensor& logits, const Tensor& mx, const Tensor& se, const IndexTensor& labels,
                 int64_t vocab_start, float scale, const Stream& stream) {
  ce_bwd(dlogits, logits, mx, se, labels, vocab_start, scale, stream);
}

}  // namespace pb::cuda
