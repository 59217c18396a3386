/* The gradient-sink seam (DESIGN.md, "The decoder as blocks"): where a weight gradient
 * goes when a linear's backward has it.
 *
 *   linear_weight_grad(dW, dy, x):  dW (out, in) += dy^T x      dy (N, out), x (N, in)
 * Strategies: accumulate (this file, the default: the product accumulated straight into the
 * fp32 main grad in one kernel -- with bf16 dy and x the matmul-add of gradient-accumulation
 * fusion, the product kept in fp32); the separate add (grad_separate_add.h, Megatron's
 * --no-gradient-accumulation-fusion: the product in the activations' dtype, then added).
 * Either counts each weight gradient once per micro-batch.
 */
#pragma once

#include "optimized/core/tensor.h"

namespace pb {

class GradSink {
 public:
  virtual ~GradSink() = default;
  virtual void linear_weight_grad(Tensor& dw, const Tensor& dy, const Tensor& x) = 0;
};

// The matmul-add: dW += dy^T x in one kernel (ops::linear_backward_weight).
class AccumulateGrads final : public GradSink {
 public:
  void linear_weight_grad(Tensor& dw, const Tensor& dy, const Tensor& x) override;
};

}  // namespace pb
