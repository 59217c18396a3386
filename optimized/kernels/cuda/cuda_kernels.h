/* CUDA kernels behind ops.h: the same names and signatures as kernels/cpu, on device
 * tensors. One file per op in kernels/cuda/; common.cuh has the shared helpers. fp32, and
 * native bf16 (fp32 math, bf16 outputs rounded to nearest even, statistics and main grads
 * in fp32) for linear, add/add_/scale_/sum_squares, embedding, rmsnorm, rope, attention
 * and its LSE merge, swiglu and the cross-entropy pieces; adamw, the reuse-fp32-param
 * conversions and the grouped GEMM are fp32 only, cast converts. Launches go to the op's
 * stream (the last argument) and are checked with cudaGetLastError. */
#pragma once

#include "optimized/kernels/ops.h"

namespace pb::cuda {

#include "optimized/kernels/op_signatures.inc"

}  // namespace pb::cuda
