/* CUDA merge of two partial attention results by their log-sum-exp: the accumulation step
 * of ring attention (Liu et al., arXiv 2310.01889; the CPU kernel has the formula:
 * kernels/cpu/attention_merge.cc). Per sequence b, head a and query i, with l = lse,
 * l' = lse_blk:
 *   m = max(l, l');  w = e^(l - m), w' = e^(l' - m)
 *   o = (w o + w' o_blk) / (w + w');  lse = m + log(w + w')
 * a block with lse = -inf leaves o and lse as they are; an o with lse = -inf becomes the
 * block. One thread per (query row, head), over its D elements: threads are numbered
 * t = (b*n + i)*A + a, so the head's slice of o starts at t*D and neighbouring threads
 * read neighbouring slices. o and o_blk are fp32 or bf16 (one dtype per call; bf16 read as
 * fp32, the math in fp32, o rounded to bf16); lse and lse_blk are fp32.
 *   o, o_blk (B*n, A*D); lse, lse_blk (B*A, n) */
#include "optimized/kernels/cuda/common.cuh"
#include "optimized/kernels/cuda/cuda_kernels.h"
#include "reference/common/error.h"

namespace pb::cuda {

namespace {

template <class T>
__global__ void attn_merge_kernel(T* o, float* lse, const T* o_blk, const float* lse_blk, int64_t n, int64_t A,
                                  int64_t D, int64_t heads) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < heads; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t a = t % A, i = (t / A) % n, b = t / (A * n), h = (b * A + a) * n + i;
    const float l1 = lse[h], l2 = lse_blk[h];
    if (l2 == -INFINITY) continue;  // the block saw no key (or neither did): nothing changes
    T* oi = o + t * D;
    const T* bi = o_blk + t * D;
    if (l1 == -INFINITY) {  // nothing merged yet: the block itself
      for (int64_t d = 0; d < D; ++d) oi[d] = bi[d];
      lse[h] = l2;
      continue;
    }
    const float m = fmaxf(l1, l2), w1 = expf(l1 - m), w2 = expf(l2 - m), s = w1 + w2;
    for (int64_t d = 0; d < D; ++d) oi[d] = from_float<T>((w1 * to_float(oi[d]) + w2 * to_float(bi[d])) / s);
    lse[h] = m + logf(s);
  }
}

template <class T>
void merge_t(Tensor& o, Tensor& lse, const Tensor& o_blk, const Tensor& lse_blk, int64_t n, int64_t A, int64_t D,
             cudaStream_t st) {
  const int64_t heads = lse.numel();
  attn_merge_kernel<T><<<blocks_for(heads), kThreads, 0, st>>>(ptr<T>(o), lse.f32(), ptr<T>(o_blk), lse_blk.f32(), n,
                                                               A, D, heads);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void attention_merge(Tensor& o, Tensor& lse, const Tensor& o_blk, const Tensor& lse_blk, int64_t B, int64_t A,
                     int64_t D, const Stream& stream) {
  const int64_t n = B > 0 && A > 0 ? lse.numel() / (B * A) : 0;
  PB_REQUIRE(B > 0 && A > 0 && D > 0 && lse.numel() == B * A * n && lse_blk.numel() == lse.numel() &&
                 o.rows() == B * n && o.cols() == A * D && o_blk.shape() == o.shape(),
             "attention_merge (cuda): o ", o.shape_str(), ", lse ", lse.shape_str(), ", o_blk ", o_blk.shape_str(),
             ", lse_blk ", lse_blk.shape_str(), " for B ", B, " A ", A, " D ", D);
  if (!n) return;
  if (o.dtype() == DType::BF16)
    merge_t<bf16>(o, lse, o_blk, lse_blk, n, A, D, cu(stream));
  else
    merge_t<float>(o, lse, o_blk, lse_blk, n, A, D, cu(stream));
}

}  // namespace pb::cuda
