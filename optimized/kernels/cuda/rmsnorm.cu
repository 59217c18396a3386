/* CUDA RMSNorm (Zhang & Sennrich, NeurIPS 2019; formulas in reference/ops/rmsnorm.h).
 * Forward: one block per row: r = rsqrt(mean(x^2) + eps), y = x r g.
 * Backward: one block per row for dx = r (g dy - x r^2 mean(x g dy)); dg in two passes
 * without atomics: each block of the partial kernel owns a chunk of rows and writes its
 * column sums of dy x r to partial[block, :]; a second kernel adds the partials per column
 * in block order (deterministic).
 * The split-statistics ops (2D / 3D tensor parallelism: a row's hidden columns over ranks):
 * row_dot, one block per row; the forward and the dx kernel with the whole row's sum given.
 * x, g, y, dy, dx are fp32 or bf16 (one dtype per call; bf16 read as fp32, the math in
 * fp32, y and dx rounded to bf16); rstd and the accumulated dg stay fp32. */
#include "optimized/kernels/cuda/common.cuh"
#include "optimized/kernels/cuda/cuda_kernels.h"
#include "reference/common/error.h"

namespace pb::cuda {

namespace {

template <class T>
__global__ void rmsnorm_fwd_kernel(T* y, float* rstd, const T* x, const T* g, int64_t H, float eps) {
  const int64_t t = blockIdx.x;
  const T* xr = x + t * H;
  float ss = 0;
  for (int64_t j = threadIdx.x; j < H; j += blockDim.x) {
    const float v = to_float(xr[j]);
    ss += v * v;
  }
  ss = block_sum(ss);
  const float r = rsqrtf(ss / float(H) + eps);
  if (threadIdx.x == 0) rstd[t] = r;
  for (int64_t j = threadIdx.x; j < H; j += blockDim.x) y[t * H + j] = from_float<T>(to_float(xr[j]) * r * to_float(g[j]));
}

template <class T>
__global__ void rmsnorm_bwd_dx_kernel(T* dx, const T* dy, const T* x, const float* rstd, const T* g, int64_t H) {
  const int64_t t = blockIdx.x;
  const float r = rstd[t];
  float c = 0;
  for (int64_t j = threadIdx.x; j < H; j += blockDim.x) c += to_float(x[t * H + j]) * to_float(g[j]) * to_float(dy[t * H + j]);
  c = block_sum(c) / float(H);
  for (int64_t j = threadIdx.x; j < H; j += blockDim.x)
    dx[t * H + j] = from_float<T>(r * (to_float(g[j]) * to_float(dy[t * H + j]) - to_float(x[t * H + j]) * r * r * c));
}

template <class T>
__global__ void rmsnorm_dg_partial_kernel(float* partial, const T* dy, const T* x, const float* rstd, int64_t N,
                                          int64_t H, int64_t rows_per_block) {
  const int64_t r0 = blockIdx.x * rows_per_block, r1 = min(N, r0 + rows_per_block);
  for (int64_t j = threadIdx.x; j < H; j += blockDim.x) {
    float acc = 0;
    for (int64_t t = r0; t < r1; ++t) acc += to_float(dy[t * H + j]) * to_float(x[t * H + j]) * rstd[t];
    partial[blockIdx.x * H + j] = acc;
  }
}

__global__ void rmsnorm_dg_reduce_kernel(float* dg, const float* partial, int64_t blocks, int64_t H) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < H; j += int64_t(gridDim.x) * blockDim.x) {
    float acc = 0;
    for (int64_t b = 0; b < blocks; ++b) acc += partial[b * H + j];
    dg[j] += acc;
  }
}

template <class T>
__global__ void row_dot_kernel(float* out, const T* a, const T* b, const T* g, int64_t H) {
  const int64_t t = blockIdx.x;
  float c = 0;
  for (int64_t j = threadIdx.x; j < H; j += blockDim.x)
    c += to_float(a[t * H + j]) * to_float(b[t * H + j]) * (g ? to_float(g[j]) : 1.0f);
  c = block_sum(c);
  if (threadIdx.x == 0) out[t] = c;
}

template <class T>
__global__ void rmsnorm_fwd_stats_kernel(T* y, float* rstd, const T* x, const T* g, const float* ss, int64_t h,
                                         float H, float eps) {
  const int64_t t = blockIdx.x;
  const float r = rsqrtf(ss[t] / H + eps);
  if (threadIdx.x == 0) rstd[t] = r;
  for (int64_t j = threadIdx.x; j < h; j += blockDim.x) y[t * h + j] = from_float<T>(to_float(x[t * h + j]) * r * to_float(g[j]));
}

template <class T>
__global__ void rmsnorm_bwd_stats_dx_kernel(T* dx, const T* dy, const T* x, const float* rstd, const T* g,
                                            const float* dot, int64_t h, float H) {
  const int64_t t = blockIdx.x;
  const float r = rstd[t], c = dot[t] / H;
  for (int64_t j = threadIdx.x; j < h; j += blockDim.x)
    dx[t * h + j] = from_float<T>(r * (to_float(g[j]) * to_float(dy[t * h + j]) - to_float(x[t * h + j]) * r * r * c));
}

// dg += sum_t dy x rstd, in two passes (the partials, then their sum in block order).
template <class T>
void dg_t(Tensor& dg, const Tensor& dy, const Tensor& x, const Tensor& rstd, cudaStream_t s) {
  const int64_t N = x.rows(), H = x.cols();
  const int64_t rows_per_block = 32, blocks = (N + rows_per_block - 1) / rows_per_block;
  Tensor partial = Tensor::empty({blocks, H}, MemCategory::Workspace, DType::F32, Device::CUDA);
  rmsnorm_dg_partial_kernel<T><<<unsigned(blocks), kThreads, 0, s>>>(partial.f32(), ptr<T>(dy), ptr<T>(x), rstd.f32(), N, H,
                                                               rows_per_block);
  CUDA_CHECK_LAUNCH();
  rmsnorm_dg_reduce_kernel<<<blocks_for(H), kThreads, 0, s>>>(dg.f32(), partial.f32(), blocks, H);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void forward_t(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& g, float eps, cudaStream_t s) {
  const int64_t N = x.rows(), H = x.cols();
  rmsnorm_fwd_kernel<T><<<unsigned(N), kThreads, 0, s>>>(ptr<T>(y), rstd.f32(), ptr<T>(x), ptr<T>(g), H, eps);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void backward_t(Tensor& dx, Tensor& dg, const Tensor& dy, const Tensor& x, const Tensor& rstd, const Tensor& g,
                cudaStream_t s) {
  const int64_t N = x.rows(), H = x.cols();
  rmsnorm_bwd_dx_kernel<T><<<unsigned(N), kThreads, 0, s>>>(ptr<T>(dx), ptr<T>(dy), ptr<T>(x), rstd.f32(), ptr<T>(g), H);
  CUDA_CHECK_LAUNCH();
  dg_t<T>(dg, dy, x, rstd, s);
}

}  // namespace

void row_dot(Tensor& out, const Tensor& a, const Tensor& b, const Tensor& g, const Stream& stream) {
  const int64_t N = a.rows(), H = a.cols();
  PB_REQUIRE(b.numel() == a.numel() && out.numel() == N && (!g.defined() || g.numel() == H), "row_dot: ",
             a.shape_str(), " . ", b.shape_str());
  if (!N) return;
  if (a.dtype() == DType::BF16)
    row_dot_kernel<bf16><<<unsigned(N), kThreads, 0, cu(stream)>>>(out.f32(), ptr<bf16>(a), ptr<bf16>(b),
                                                                    g.defined() ? ptr<bf16>(g) : nullptr, H);
  else
    row_dot_kernel<float><<<unsigned(N), kThreads, 0, cu(stream)>>>(out.f32(), ptr<float>(a), ptr<float>(b),
                                                                     g.defined() ? ptr<float>(g) : nullptr, H);
  CUDA_CHECK_LAUNCH();
}

void rmsnorm_forward_stats(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& g, const Tensor& ss, int64_t H,
                           float eps, const Stream& stream) {
  const int64_t N = x.rows(), h = x.cols();
  PB_REQUIRE(g.numel() == h && y.numel() == x.numel() && rstd.numel() == N && ss.numel() == N && H >= h,
             "rmsnorm_forward_stats: x ", x.shape_str(), " of H ", H);
  if (!N) return;
  if (x.dtype() == DType::BF16)
    rmsnorm_fwd_stats_kernel<bf16><<<unsigned(N), kThreads, 0, cu(stream)>>>(ptr<bf16>(y), rstd.f32(), ptr<bf16>(x),
                                                                              ptr<bf16>(g), ss.f32(), h, float(H), eps);
  else
    rmsnorm_fwd_stats_kernel<float><<<unsigned(N), kThreads, 0, cu(stream)>>>(ptr<float>(y), rstd.f32(), ptr<float>(x),
                                                                               ptr<float>(g), ss.f32(), h, float(H), eps);
  CUDA_CHECK_LAUNCH();
}

void rmsnorm_backward_stats(Tensor& dx, Tensor& dg, const Tensor& dy, const Tensor& x, const Tensor& rstd,
                            const Tensor& g, const Tensor& dot, int64_t H, const Stream& stream) {
  const int64_t N = x.rows(), h = x.cols();
  PB_REQUIRE(g.numel() == h && dg.numel() == h && dy.numel() == x.numel() && dx.numel() == x.numel() &&
                 rstd.numel() == N && dot.numel() == N,
             "rmsnorm_backward_stats: x ", x.shape_str());
  if (!N) return;
  const StreamScope on(stream, Device::CUDA);  // the dg partials belong to the op's stream
  if (x.dtype() == DType::BF16) {
    rmsnorm_bwd_stats_dx_kernel<bf16><<<unsigned(N), kThreads, 0, cu(stream)>>>(
        ptr<bf16>(dx), ptr<bf16>(dy), ptr<bf16>(x), rstd.f32(), ptr<bf16>(g), dot.f32(), h, float(H));
    CUDA_CHECK_LAUNCH();
    dg_t<bf16>(dg, dy, x, rstd, cu(stream));
  } else {
    rmsnorm_bwd_stats_dx_kernel<float><<<unsigned(N), kThreads, 0, cu(stream)>>>(
        ptr<float>(dx), ptr<float>(dy), ptr<float>(x), rstd.f32(), ptr<float>(g), dot.f32(), h, float(H));
    CUDA_CHECK_LAUNCH();
    dg_t<float>(dg, dy, x, rstd, cu(stream));
  }
}

void rmsnorm_forward(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& g, float eps, const Stream& stream) {
  const int64_t N = x.rows(), H = x.cols();
  PB_REQUIRE(g.numel() == H && y.numel() == x.numel() && rstd.numel() == N, "rmsnorm_forward: x ", x.shape_str());
  if (!N) return;
  if (x.dtype() == DType::BF16)
    forward_t<bf16>(y, rstd, x, g, eps, cu(stream));
  else
    forward_t<float>(y, rstd, x, g, eps, cu(stream));
}

void rmsnorm_backward(Tensor& dx, Tensor& dg, const Tensor& dy, const Tensor& x, const Tensor& rstd, const Tensor& g, const Stream& stream) {
  const int64_t N = x.rows(), H = x.cols();
  PB_REQUIRE(g.numel() == H && dg.numel() == H && dy.numel() == x.numel() && dx.numel() == x.numel() &&
                 rstd.numel() == N,
             "rmsnorm_backward: x ", x.shape_str());
  if (!N) return;
  const StreamScope on(stream, Device::CUDA);  // the dg partials belong to the op's stream
  if (x.dtype() == DType::BF16)
    backward_t<bf16>(dx, dg, dy, x, rstd, g, cu(stream));
  else
    backward_t<float>(dx, dg, dy, x, rstd, g, cu(stream));
}

}  // namespace pb::cuda
