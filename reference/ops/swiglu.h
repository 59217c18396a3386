/* SwiGLU activation (Shazeer, "GLU Variants Improve Transformer", arXiv 2002.05202).
 *
 *   forward : y = silu(a) * u,  silu(a) = a * sigma(a)       a (gate), u (up), y: (N, F)
 *   backward: da = dy * u * sigma(a) * (1 + a * (1 - sigma(a)))
 *             du = dy * silu(a)
 *
 * The Llama MLP is down(swiglu(gate(x), up(x))). Only the inputs are saved.
 */
#pragma once

#include <cmath>

#include "reference/common/tensor.h"

namespace pb::ref {

template <class T>
T sigmoid(T a) {
  return T(1) / (T(1) + std::exp(-a));
}

template <class T>
void swiglu_forward(Mat<T>& y, const Mat<T>& gate, const Mat<T>& up) {
  y.resize(gate.rows(), gate.cols());  // (N, F)
  for (Index i = 0; i < gate.rows(); ++i)
    for (Index j = 0; j < gate.cols(); ++j) {
      const T a = gate(i, j);
      y(i, j) = a * sigmoid(a) * up(i, j);
    }
}

template <class T>
void swiglu_backward(Mat<T>& dgate, Mat<T>& dup, const Mat<T>& dy, const Mat<T>& gate, const Mat<T>& up) {
  dgate.resize(gate.rows(), gate.cols());  // (N, F)
  dup.resize(gate.rows(), gate.cols());    // (N, F)
  for (Index i = 0; i < gate.rows(); ++i)
    for (Index j = 0; j < gate.cols(); ++j) {
      const T a = gate(i, j), s = sigmoid(a);
      dgate(i, j) = dy(i, j) * up(i, j) * s * (T(1) + a * (T(1) - s));
      dup(i, j) = dy(i, j) * a * s;
    }
}

}  // namespace pb::ref
