/* CPU strided 2-D block copy between row-major matrices (Ulysses context parallelism: heads
 * packed for the all-to-all, sequence rows reordered, repeated kv-head gradients summed):
 *   dst[dr0 + i, dc0 + j] (+)= src[sr0 + i, sc0 + j],  i < rows, j < cols
 * src (R_s, C_s), dst (R_d, C_d), one dtype, fp32 or bf16 natively (no emulation: a copy
 * moves the bits, one memmove per row). accumulate adds: fp32 in fp32; bf16 read as fp32,
 * added in fp32 and rounded once to nearest even (float_to_bf16). Shapes, the block and the
 * dtypes are checked by the dispatch (kernels/dispatch.cc). */
#include <cstring>

#include "optimized/kernels/cpu/cpu_kernels.h"
#include "reference/common/error.h"

namespace pb::cpu {

void copy_block(Tensor& dst, const Tensor& src, int64_t rows, int64_t cols, int64_t sr0, int64_t sc0, int64_t dr0,
                int64_t dc0, bool accumulate, const Stream&) {
  const int64_t Cs = src.cols(), Cd = dst.cols();
  const bool bf16 = dst.dtype() == DType::BF16;
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t s = (sr0 + i) * Cs + sc0, d = (dr0 + i) * Cd + dc0;  // first element of row i, both sides
    if (!accumulate) {
      const size_t e = dtype_bytes(dst.dtype());
      std::memmove(static_cast<char*>(dst.raw()) + d * int64_t(e), static_cast<const char*>(src.raw()) + s * int64_t(e),
                   size_t(cols) * e);
    } else if (bf16) {
      uint16_t* y = dst.bf16_bits() + d;
      const uint16_t* x = src.bf16_bits() + s;
      for (int64_t j = 0; j < cols; ++j) y[j] = float_to_bf16(bf16_to_float(y[j]) + bf16_to_float(x[j]));
    } else {
      float* y = dst.f32() + d;
      const float* x = src.f32() + s;
      for (int64_t j = 0; j < cols; ++j) y[j] += x[j];
    }
  }
}

}  // namespace pb::cpu
