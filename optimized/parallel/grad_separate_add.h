/* The weight gradients without gradient-accumulation fusion (Megatron-LM's
 * --no-gradient-accumulation-fusion), the baseline of the matmul-add (grad_sink.h): a
 * gradient-sink strategy.
 *
 *   P  = dy^T x        (out, in) in the activations' dtype: bf16 rounds the fp32 product
 *   dW += P            the separate add into the fp32 main grad
 * against the default sink's dW += dy^T x in one kernel, the product kept in fp32 (FEATURES:
 * Matmul-add). P is a workspace of its own, (out, in) x e bytes, allocated for each weight
 * gradient and freed after its add: the analytic model adds the largest block's P at its
 * backward's peak (the column linears' weight gradients), or at W under a split backward.
 * Each weight gradient is still counted once per micro-batch.
 */
#pragma once

#include "optimized/parallel/grad_sink.h"
#include "optimized/parallel/terms.h"

namespace pb {

class SeparateAddGrads final : public GradSink {
 public:
  void linear_weight_grad(Tensor& dw, const Tensor& dy, const Tensor& x) override;
};

}  // namespace pb
