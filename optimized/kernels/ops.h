/* The op set of the optimized path, one dispatch keyed by the tensors' device
 * (DESIGN.md: technique code calls these and never loops over tensor data itself).
 * Implementations: kernels/cpu/<op>.cc (CPU, fp32), kernels/cuda/<op>.cu (CUDA)
 * with the same names and signatures: outputs, inputs, sizes.
 *
 * Shapes: token rows N (= B*S, or a shard of them), H hidden, heads and head dim of the
 * local shard. Weight gradients accumulate (+=); everything else overwrites.
 */
#pragma once

#include <cstdint>
#include <vector>

#include "optimized/core/tensor.h"

namespace pb::ops {

struct AttnShape {
  int64_t B, S, A, G, D;  // local query heads A and kv heads G
};

struct AdamHyper {
  float lr, beta1, beta2, eps, weight_decay;  // weight_decay 0 for norm weights
  float bias_corr1, bias_corr2;               // 1 - beta^t
  float grad_scale;                           // clip coefficient (<= 1)
};

#include "optimized/kernels/op_signatures.inc"

}  // namespace pb::ops
