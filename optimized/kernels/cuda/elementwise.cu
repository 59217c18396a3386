/* CUDA element-wise ops (grid-stride loops) and deterministic two-pass reductions:
 * per-block partial sums in double, then one block adds them in a fixed order.
 * fp32 or bf16 elements (all operands of one call share the dtype): bf16 is widened to
 * fp32, added or scaled in fp32 and rounded back to nearest even. */
#include "optimized/kernels/cuda/common.cuh"
#include "optimized/kernels/cuda/cuda_kernels.h"
#include "reference/common/error.h"

namespace pb::cuda {

namespace {

template <class T>
__global__ void add_kernel(T* y, const T* a, const T* b, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = from_float<T>(to_float(a[i]) + to_float(b[i]));
}

template <class T>
__global__ void scale_kernel(T* y, float s, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = from_float<T>(to_float(y[i]) * s);
}

template <class T>
__global__ void sum_squares_kernel(double* parts, const T* x, int64_t n) {
  double acc = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const double v = to_float(x[i]);
    acc += v * v;
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) parts[blockIdx.x] = acc;
}

__global__ void sum_kernel(double* out, const double* parts, int n) {
  double acc = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) acc += parts[i];
  acc = block_sum(acc);
  if (threadIdx.x == 0) *out = acc;
}

template <class T>
void add_t(Tensor& y, const Tensor& a, const Tensor& b) {
  add_kernel<T><<<blocks_for(y.numel()), kThreads>>>(ptr<T>(y), ptr<T>(a), ptr<T>(b), y.numel());
  CUDA_CHECK_LAUNCH();
}

template <class T>
void scale_t(Tensor& y, float s) {
  scale_kernel<T><<<blocks_for(y.numel()), kThreads>>>(ptr<T>(y), s, y.numel());
  CUDA_CHECK_LAUNCH();
}

template <class T>
double sum_squares_t(const Tensor& x) {
  const int blocks = blocks_for(x.numel());
  DeviceScratch parts(static_cast<size_t>(blocks));
  sum_squares_kernel<T><<<blocks, kThreads>>>(parts.get(), ptr<T>(x), x.numel());
  CUDA_CHECK_LAUNCH();
  return sum_partials(parts.get(), blocks);
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
  if (y.dtype() == DType::BF16)
    add_t<bf16>(y, a, b);
  else
    add_t<float>(y, a, b);
}

void add_(Tensor& y, const Tensor& x) { add(y, y, x); }

void scale_(Tensor& y, float s) {
  if (!y.numel()) return;
  if (y.dtype() == DType::BF16)
    scale_t<bf16>(y, s);
  else
    scale_t<float>(y, s);
}

double sum_squares(const Tensor& x) {
  if (!x.numel()) return 0;
  return x.dtype() == DType::BF16 ? sum_squares_t<bf16>(x) : sum_squares_t<float>(x);
}

}  // namespace pb::cuda
