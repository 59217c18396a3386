/* The accumulate gradient sink (see grad_sink.h). */
#include "optimized/parallel/grad_sink.h"

#include "optimized/kernels/ops.h"

namespace pb {

void AccumulateGrads::linear_weight_grad(Tensor& dw, const Tensor& dy, const Tensor& x) {
  ops::linear_backward_weight(dw, dy, x);
}

}  // namespace pb
