/* The gradient-sink seam (DESIGN.md, "The decoder as blocks"): where a weight gradient
 * goes when a linear's backward has it.
 *
 *   linear_weight_grad(dW, dy, x):  dW (out, in) += dy^T x      dy (N, out), x (N, in)
 * Strategies: accumulate (this file: the product added into the gradient buffer, fp32
 * main grads; with bf16 dy and x the kernel is the matmul-add of gradient-accumulation
 * fusion); later a bucketed asynchronous reduce (DP / ZeRO-2: a bucket's collective starts
 * when its last gradient is ready) behind the same call.
 */
#pragma once

#include "optimized/core/tensor.h"

namespace pb {

class GradSink {
 public:
  virtual ~GradSink() = default;
  virtual void linear_weight_grad(Tensor& dw, const Tensor& dy, const Tensor& x) = 0;
};

// Plain accumulation into the gradient buffer.
class AccumulateGrads final : public GradSink {
 public:
  void linear_weight_grad(Tensor& dw, const Tensor& dy, const Tensor& x) override;
};

}  // namespace pb
