/* Linear layer without bias (every projection of the Llama decoder).
 *
 *   forward : Y = X W^T                      X (N, in), W (out, in), Y (N, out)
 *   backward: dX = dY W                      dX (N, in)
 *             dW = dY^T X                    dW (out, in)   (accumulated: +=)
 *
 * W keeps nn.Linear's [out, in] layout, so tensors load into Hugging Face models as is.
 * Weight gradients accumulate (+=) so that gradient accumulation over micro-batches and
 * weights used more than once are just repeated calls.
 */
#pragma once

#include "reference/common/tensor.h"

namespace pb::ref {

template <class T>
void linear_forward(Mat<T>& y, const Mat<T>& x, const Mat<T>& w) {
  y.noalias() = x * w.transpose();  // (N, out) = (N, in) (in, out)
}

template <class T>
void linear_backward(Mat<T>& dx, Mat<T>& dw, const Mat<T>& dy, const Mat<T>& x, const Mat<T>& w) {
  dx.noalias() = dy * w;               // (N, in)  = (N, out) (out, in)
  dw.noalias() += dy.transpose() * x;  // (out, in) += (out, N) (N, in)
}

}  // namespace pb::ref
