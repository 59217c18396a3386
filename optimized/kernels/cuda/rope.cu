/* CUDA RoPE (Su et al., RoFormer, arXiv 2104.09864), rotate_half convention (formulas in
 * reference/ops/rope.h): one thread per (row, head, pair i); inv_freq_i = theta^(-2i/D)
 * computed in double as the reference does, then the rotation in fp32. sign -1 applies
 * R^T for the backward. x and y are fp32 or bf16 (one dtype per call; bf16 read as fp32,
 * the rotation in fp32, y rounded to bf16). Positions given as an IndexTensor are uploaded
 * once for every op that reads them (the model's four RoPE calls per layer). */
#include "optimized/kernels/cuda/common.cuh"
#include "optimized/kernels/cuda/cuda_kernels.h"
#include "optimized/kernels/shape_checks.h"
#include "reference/common/error.h"

namespace pb::cuda {

namespace {

template <class T>
__global__ void rope_kernel(T* y, const T* x, const int64_t* pos, int64_t N, int64_t heads, int64_t D, double theta,
                            float sign) {
  const int64_t half = D / 2, total = N * heads * half;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e % half, h = (e / half) % heads, t = e / (half * heads);
    const float inv_freq = float(pow(theta, -2.0 * double(i) / double(D)));
    const float phi = float(pos[t]) * inv_freq;
    const float c = cosf(phi), s = sign * sinf(phi);
    const int64_t base = t * heads * D + h * D;
    const float x1 = to_float(x[base + i]), x2 = to_float(x[base + half + i]);
    y[base + i] = from_float<T>(x1 * c - x2 * s);
    y[base + half + i] = from_float<T>(x2 * c + x1 * s);
  }
}

template <class T>
void rope_t(Tensor& y, const Tensor& x, const int64_t* pos, int64_t N, int64_t heads, int64_t D, double theta,
            float sign, cudaStream_t s) {
  rope_kernel<T><<<blocks_for(N * heads * (D / 2)), kThreads, 0, s>>>(ptr<T>(y), ptr<T>(x), pos, N, heads, D, theta,
                                                                      sign);
  CUDA_CHECK_LAUNCH();
}

template <class Index>
void rope(Tensor& y, const Tensor& x, const Index& pos, int64_t D, double theta, float sign, const Stream& stream) {
  checks::rope_operands("rope (cuda)", y, x, int64_t(pos.size()), D);
  const int64_t N = x.rows(), heads = x.cols() / D;
  if (!N) return;
  const IndexTensor p = on_device(pos, stream);
  if (x.dtype() == DType::BF16)
    rope_t<bf16>(y, x, p.device_data(stream), N, heads, D, theta, sign, cu(stream));
  else
    rope_t<float>(y, x, p.device_data(stream), N, heads, D, theta, sign, cu(stream));
}

}  // namespace

void rope_forward(Tensor& y, const Tensor& x, const std::vector<int64_t>& pos, int64_t head_dim, double theta,
                  const Stream& stream) {
  rope(y, x, pos, head_dim, theta, 1.0f, stream);
}

void rope_forward(Tensor& y, const Tensor& x, const IndexTensor& pos, int64_t head_dim, double theta,
                  const Stream& stream) {
  rope(y, x, pos, head_dim, theta, 1.0f, stream);
}

void rope_backward(Tensor& dx, const Tensor& dy, const std::vector<int64_t>& pos, int64_t head_dim, double theta,
                   const Stream& stream) {
  rope(dx, dy, pos, head_dim, theta, -1.0f, stream);
}

void rope_backward(Tensor& dx, const Tensor& dy, const IndexTensor& pos, int64_t head_dim, double theta,
                   const Stream& stream) {
  rope(dx, dy, pos, head_dim, theta, -1.0f, stream);
}

}  // namespace pb::cuda
