/* The unfused weight gradients (see grad_separate_add.h). */
#include "optimized/parallel/grad_separate_add.h"

#include "optimized/kernels/ops.h"

namespace pb {

void SeparateAddGrads::linear_weight_grad(Tensor& dw, const Tensor& dy, const Tensor& x) {
  Tensor p = Tensor::empty(dw.shape(), MemCategory::Workspace, dy.dtype());  // (out, in)
  ops::linear_weight_product(p, dy, x);
  ops::add_(dw, p);
}

}  // namespace pb
