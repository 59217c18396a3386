/* CUDA element-wise ops (grid-stride loops) and deterministic two-pass reductions:
 * per-block partial sums in double, then one block adds them in a fixed order. */
#include "optimized/kernels/cuda/common.cuh"
#include "optimized/kernels/cuda/cuda_kernels.h"
#include "reference/common/error.h"

namespace pb::cuda {

namespace {

__global__ void add_kernel(float* y, const float* a, const float* b, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = a[i] + b[i];
}

__global__ void scale_kernel(float* y, float s, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] *= s;
}

__global__ void sum_squares_kernel(double* parts, const float* x, int64_t n) {
  double acc = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    acc += double(x[i]) * double(x[i]);
  acc = block_sum(acc);
  if (threadIdx.x == 0) parts[blockIdx.x] = acc;
}

__global__ void sum_kernel(double* out, const double* parts, int n) {
  double acc = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) acc += parts[i];
  acc = block_sum(acc);
  if (threadIdx.x == 0) *out = acc;
}

}  // namespace

double sum_partials(const double* parts, int n) {
  DeviceScratch out(1);
  sum_kernel<<<1, kThreads>>>(out.get(), parts, n);
  CUDA_CHECK_LAUNCH();
  double host = 0;
  CUDA_CHECK(cudaMemcpy(&host, out.get(), sizeof(double), cudaMemcpyDeviceToHost));
  return host;
}

void copy(Tensor& dst, const Tensor& src) {
  PB_REQUIRE(dst.numel() == src.numel(), "copy: ", src.shape_str(), " into ", dst.shape_str());
  if (src.numel() && dst.raw() != src.raw()) CUDA_CHECK(cudaMemcpy(dst.raw(), src.raw(), src.bytes(), cudaMemcpyDefault));
}

void zero(Tensor& t) {
  if (t.numel()) CUDA_CHECK(cudaMemset(t.raw(), 0, t.bytes()));
}

void add(Tensor& y, const Tensor& a, const Tensor& b) {
  PB_REQUIRE(y.numel() == a.numel() && a.numel() == b.numel(), "add: ", a.shape_str(), " + ", b.shape_str());
  if (!y.numel()) return;
  add_kernel<<<blocks_for(y.numel()), kThreads>>>(y.f32(), a.f32(), b.f32(), y.numel());
  CUDA_CHECK_LAUNCH();
}

void add_(Tensor& y, const Tensor& x) { add(y, y, x); }

void scale_(Tensor& y, float s) {
  if (!y.numel()) return;
  scale_kernel<<<blocks_for(y.numel()), kThreads>>>(y.f32(), s, y.numel());
  CUDA_CHECK_LAUNCH();
}

double sum_squares(const Tensor& x) {
  if (!x.numel()) return 0;
  const int blocks = blocks_for(x.numel());
  DeviceScratch parts(static_cast<size_t>(blocks));
  sum_squares_kernel<<<blocks, kThreads>>>(parts.get(), x.f32(), x.numel());
  CUDA_CHECK_LAUNCH();
  return sum_partials(parts.get(), blocks);
}

}  // namespace pb::cuda
