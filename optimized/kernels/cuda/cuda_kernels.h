/* CUDA (fp32) kernels behind ops.h: the same names and signatures as kernels/cpu, on
 * device tensors. One file per op in kernels/cuda/; common.cuh has the shared helpers.
 * Launches go to the default stream and are checked with cudaGetLastError. */
#pragma once

#include "optimized/kernels/ops.h"

namespace pb::cuda {

#include "optimized/kernels/op_signatures.inc"

}  // namespace pb::cuda
