/* CUDA strided 2-D block copy between row-major matrices (Ulysses context parallelism; the
 * CPU kernel is kernels/cpu/copy_block.cc):
 *   dst[dr0 + i, dc0 + j] (+)= src[sr0 + i, sc0 + j],  i < rows, j < cols
 * One thread per element of the block, grid-stride over t = i*cols + j, so neighbouring
 * threads touch neighbouring columns of a row. fp32 or bf16 (one dtype per call): a copy
 * moves the element as it is; accumulate reads both sides as fp32, adds in fp32 and rounds
 * to bf16 once. The blocks of src and dst must not overlap in memory. Shapes, the block and
 * the dtypes are checked by the dispatch (kernels/dispatch.cc). */
#include "optimized/kernels/cuda/common.cuh"
#include "optimized/kernels/cuda/cuda_kernels.h"
#include "reference/common/error.h"

namespace pb::cuda {

namespace {

template <class T>
__global__ void copy_block_kernel(T* dst, const T* src, int64_t rows, int64_t cols, int64_t src_ld, int64_t dst_ld,
                                  bool accumulate) {
  const int64_t n = rows * cols;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < n; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = t / cols, j = t % cols;
    T& y = dst[i * dst_ld + j];
    const T x = src[i * src_ld + j];
    y = accumulate ? from_float<T>(to_float(y) + to_float(x)) : x;
  }
}

template <class T>
void copy_block_t(Tensor& dst, const Tensor& src, int64_t rows, int64_t cols, int64_t sr0, int64_t sc0, int64_t dr0,
                  int64_t dc0, bool accumulate, cudaStream_t s) {
  const int64_t Cs = src.cols(), Cd = dst.cols();
  copy_block_kernel<T><<<blocks_for(rows * cols), kThreads, 0, s>>>(
      ptr<T>(dst) + dr0 * Cd + dc0, ptr<T>(src) + sr0 * Cs + sc0, rows, cols, Cs, Cd, accumulate);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void copy_block(Tensor& dst, const Tensor& src, int64_t rows, int64_t cols, int64_t sr0, int64_t sc0, int64_t dr0,
                int64_t dc0, bool accumulate, const Stream& stream) {
  if (!rows || !cols) return;
  if (dst.dtype() == DType::BF16)
    copy_block_t<bf16>(dst, src, rows, cols, sr0, sc0, dr0, dc0, accumulate, cu(stream));
  else
    copy_block_t<float>(dst, src, rows, cols, sr0, sc0, dr0, dc0, accumulate, cu(stream));
}

}  // namespace pb::cuda
