/* CUDA vocab-parallel cross-entropy pieces (see kernels/op_signatures.inc): one block per
 * row for the max, the sum of exponentials and the backward; the loss sum in double in a
 * fixed order. */
#include "optimized/kernels/cuda/common.cuh"
#include "optimized/kernels/cuda/cuda_kernels.h"

namespace pb::cuda {

namespace {

__global__ void row_max_kernel(float* mx, const float* z, int64_t V) {
  const int64_t t = blockIdx.x;
  float m = -INFINITY;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) m = fmaxf(m, z[t * V + v]);
  m = block_max(m);
  if (threadIdx.x == 0) mx[t] = m;
}

__global__ void sum_exp_kernel(float* se, const float* z, const float* mx, int64_t V) {
  const int64_t t = blockIdx.x;
  float s = 0;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) s += expf(z[t * V + v] - mx[t]);
  s = block_sum(s);
  if (threadIdx.x == 0) se[t] = s;
}

__global__ void target_kernel(float* tl, const float* z, const int64_t* labels, int64_t N, int64_t V,
                              int64_t vocab_start) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < N; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = labels[t] - vocab_start;
    tl[t] = (c >= 0 && c < V) ? z[t * V + c] : 0.0f;
  }
}

__global__ void row_loss_kernel(double* out, const float* mx, const float* se, const float* tl, int64_t N) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < N; t += int64_t(gridDim.x) * blockDim.x)
    out[t] = log(double(se[t])) + double(mx[t]) - double(tl[t]);
}

__global__ void ce_bwd_kernel(float* dz, const float* z, const float* mx, const float* se, const int64_t* labels,
                              int64_t V, int64_t vocab_start, float scale) {
  const int64_t t = blockIdx.x, c = labels[t] - vocab_start;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x)
    dz[t * V + v] = expf(z[t * V + v] - mx[t]) / se[t] * scale - (v == c ? scale : 0.0f);
}

}  // namespace

void ce_row_max(Tensor& mx, const Tensor& logits) {
  if (!logits.rows()) return;
  row_max_kernel<<<unsigned(logits.rows()), kThreads>>>(mx.f32(), logits.f32(), logits.cols());
  CUDA_CHECK_LAUNCH();
}

void ce_sum_exp(Tensor& se, const Tensor& logits, const Tensor& mx) {
  if (!logits.rows()) return;
  sum_exp_kernel<<<unsigned(logits.rows()), kThreads>>>(se.f32(), logits.f32(), mx.f32(), logits.cols());
  CUDA_CHECK_LAUNCH();
}

void ce_target_logit(Tensor& tl, const Tensor& logits, const std::vector<int64_t>& labels, int64_t vocab_start) {
  if (!logits.rows()) return;
  DeviceIndex l(labels);
  target_kernel<<<blocks_for(logits.rows()), kThreads>>>(tl.f32(), logits.f32(), l.get(), logits.rows(), logits.cols(),
                                                         vocab_start);
  CUDA_CHECK_LAUNCH();
}

double ce_loss_sum(const Tensor& mx, const Tensor& se, const Tensor& tl) {
  const int64_t N = mx.numel();
  if (!N) return 0;
  DeviceScratch rows(static_cast<size_t>(N));
  row_loss_kernel<<<blocks_for(N), kThreads>>>(rows.get(), mx.f32(), se.f32(), tl.f32(), N);
  CUDA_CHECK_LAUNCH();
  return sum_partials(rows.get(), int(N));
}

void ce_backward(Tensor& dlogits, const Tensor& logits, const Tensor& mx, const Tensor& se,
                 const std::vector<int64_t>& labels, int64_t vocab_start, float scale) {
  if (!logits.rows()) return;
  DeviceIndex l(labels);
  ce_bwd_kernel<<<unsigned(logits.rows()), kThreads>>>(dlogits.f32(), logits.f32(), mx.f32(), se.f32(), l.get(),
                                                       logits.cols(), vocab_start, scale);
  CUDA_CHECK_LAUNCH();
}

}  // namespace pb::cuda
