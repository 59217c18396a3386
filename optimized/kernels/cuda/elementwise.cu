/* CUDA element-wise ops (grid-stride loops) and deterministic two-pass reductions:
 * per-block partial sums in double, then one block adds them in a fixed order. The
 * gradient norm over a buffer's segments (sum_squares_segments) is the same two launches
 * for all tensors at once, with one host synchronization instead of one per tensor.
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

__global__ void swap_kernel(uint16_t* a, uint16_t* b, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const uint16_t t = a[i];
    a[i] = b[i];
    b[i] = t;
  }
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

// Gradient-norm segments: block b of the partial kernel covers chunk b of the buffer;
// chunks never straddle a segment (each segment is cut into its own chunks), and
// first[k] is the first chunk of segment k (first[segments] = the chunk count).
template <class T>
__global__ void segment_partials_kernel(double* parts, const T* x, const int64_t* ends, const int64_t* first,
                                        int64_t segments, int64_t chunk) {
  const int64_t b = blockIdx.x;
  int64_t lo = 0, hi = segments - 1;  // the segment k with first[k] <= b < first[k + 1]
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (first[mid] <= b) lo = mid;
    else hi = mid - 1;
  }
  const int64_t seg_start = lo ? ends[lo - 1] : 0, seg_end = ends[lo];
  const int64_t i0 = seg_start + (b - first[lo]) * chunk, i1 = min(seg_end, i0 + chunk);
  double acc = 0;
  for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
    const double v = to_float(x[i]);
    acc += v * v;
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) parts[b] = acc;
}

// One block: for each segment in order, the sum of its partials; the segment sums added in
// segment order (the order of the per-tensor loop).
__global__ void segment_sum_kernel(double* out, const double* parts, const int64_t* first, int64_t segments) {
  double total = 0;
  for (int64_t k = 0; k < segments; ++k) {
    double acc = 0;
    for (int64_t i = first[k] + threadIdx.x; i < first[k + 1]; i += blockDim.x) acc += parts[i];
    acc = block_sum(acc);
    total += acc;  // every thread holds the same value
  }
  if (threadIdx.x == 0) *out = total;
}

template <class T>
void add_t(Tensor& y, const Tensor& a, const Tensor& b, cudaStream_t s) {
  add_kernel<T><<<blocks_for(y.numel()), kThreads, 0, s>>>(ptr<T>(y), ptr<T>(a), ptr<T>(b), y.numel());
  CUDA_CHECK_LAUNCH();
}

template <class T>
void scale_t(Tensor& y, float f, cudaStream_t s) {
  scale_kernel<T><<<blocks_for(y.numel()), kThreads, 0, s>>>(ptr<T>(y), f, y.numel());
  CUDA_CHECK_LAUNCH();
}

template <class T>
double sum_squares_t(const Tensor& x, const Stream& stream) {
  const int blocks = blocks_for(x.numel());
  DeviceScratch parts(static_cast<size_t>(blocks), stream);
  sum_squares_kernel<T><<<blocks, kThreads, 0, cu(stream)>>>(parts.get(), ptr<T>(x), x.numel());
  CUDA_CHECK_LAUNCH();
  return sum_partials(parts.get(), blocks, stream);
}

constexpr int64_t kSegmentChunk = 8 * kThreads;  // elements per block of the norm's partial sums

template <class T>
double sum_squares_segments_t(const Tensor& buf, const std::vector<int64_t>& ends, const Stream& stream) {
  const int64_t segments = int64_t(ends.size());
  std::vector<int64_t> index(ends);  // [ends (segments) | first chunk of each segment (segments + 1)]
  int64_t start = 0, chunks = 0;
  for (int64_t e : ends) {
    index.push_back(chunks);
    chunks += (e - start + kSegmentChunk - 1) / kSegmentChunk;
    start = e;
  }
  index.push_back(chunks);
  if (!chunks) return 0;
  const IndexTensor idx = on_device(index, stream);
  const int64_t* d = idx.device_data(stream);
  DeviceScratch parts(static_cast<size_t>(chunks), stream), out(1, stream);
  const cudaStream_t s = cu(stream);
  segment_partials_kernel<T><<<unsigned(chunks), kThreads, 0, s>>>(parts.get(), ptr<T>(buf), d, d + segments, segments,
                                                                   kSegmentChunk);
  CUDA_CHECK_LAUNCH();
  segment_sum_kernel<<<1, kThreads, 0, s>>>(out.get(), parts.get(), d + segments, segments);
  CUDA_CHECK_LAUNCH();
  double host = 0;
  CUDA_CHECK(cudaMemcpyAsync(&host, out.get(), sizeof(double), cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  return host;
}

}  // namespace

double sum_partials(const double* parts, int n, const Stream& stream) {
  DeviceScratch out(1, stream);
  const cudaStream_t s = cu(stream);
  sum_kernel<<<1, kThreads, 0, s>>>(out.get(), parts, n);
  CUDA_CHECK_LAUNCH();
  double host = 0;
  CUDA_CHECK(cudaMemcpyAsync(&host, out.get(), sizeof(double), cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  return host;
}

void copy(Tensor& dst, const Tensor& src, const Stream& stream) {
  PB_REQUIRE(dst.numel() == src.numel(), "copy: ", src.shape_str(), " into ", dst.shape_str());
  if (src.numel() && dst.raw() != src.raw())
    CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), src.bytes(), cudaMemcpyDefault, cu(stream)));
}

void swap(Tensor& a, Tensor& b, const Stream& stream) {
  PB_REQUIRE(a.bytes() == b.bytes() && a.bytes() % 2 == 0, "swap: ", a.shape_str(), " and ", b.shape_str());
  const int64_t n = int64_t(a.bytes() / 2);  // fp32 and bf16 alike, as 16-bit words
  if (!n) return;
  swap_kernel<<<blocks_for(n), kThreads, 0, cu(stream)>>>(static_cast<uint16_t*>(a.raw()),
                                                            static_cast<uint16_t*>(b.raw()), n);
  CUDA_CHECK_LAUNCH();
}

void zero(Tensor& t, const Stream& stream) {
  if (t.numel()) CUDA_CHECK(cudaMemsetAsync(t.raw(), 0, t.bytes(), cu(stream)));
}

void add(Tensor& y, const Tensor& a, const Tensor& b, const Stream& stream) {
  PB_REQUIRE(y.numel() == a.numel() && a.numel() == b.numel(), "add: ", a.shape_str(), " + ", b.shape_str());
  if (!y.numel()) return;
  if (y.dtype() == DType::BF16)
    add_t<bf16>(y, a, b, cu(stream));
  else
    add_t<float>(y, a, b, cu(stream));
}

void add_(Tensor& y, const Tensor& x, const Stream& stream) { add(y, y, x, stream); }

void scale_(Tensor& y, float f, const Stream& stream) {
  if (!y.numel()) return;
  if (y.dtype() == DType::BF16)
    scale_t<bf16>(y, f, cu(stream));
  else
    scale_t<float>(y, f, cu(stream));
}

double sum_squares(const Tensor& x, const Stream& stream) {
  if (!x.numel()) return 0;
  return x.dtype() == DType::BF16 ? sum_squares_t<bf16>(x, stream) : sum_squares_t<float>(x, stream);
}

double sum_squares_segments(const Tensor& buf, const std::vector<int64_t>& seg_ends, const Stream& stream) {
  if (seg_ends.empty()) return 0;
  return buf.dtype() == DType::BF16 ? sum_squares_segments_t<bf16>(buf, seg_ends, stream)
                                    : sum_squares_segments_t<float>(buf, seg_ends, stream);
}

}  // namespace pb::cuda
