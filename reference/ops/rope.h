/* Rotary position embedding (Su et al., "RoFormer", arXiv 2104.09864), in the
 * Hugging Face Llama "rotate_half" convention: the two halves of each head are the
 * pairs, not interleaved neighbours.
 *
 *   inv_freq_i = theta^(-2i/D),   phi_{t,i} = pos_t * inv_freq_i,   i = 0 .. D/2-1
 *   per head, with x = [x1, x2] (halves of D):
 *   forward : y1 = x1 cos(phi) - x2 sin(phi)          i.e. y = x*cos + rotate_half(x)*sin,
 *             y2 = x2 cos(phi) + x1 sin(phi)               rotate_half(x) = [-x2, x1]
 *   backward: the rotation is orthogonal, so dx = R^T dy:
 *             dx1 =  dy1 cos(phi) + dy2 sin(phi)
 *             dx2 = -dy1 sin(phi) + dy2 cos(phi)
 *
 * x, y: (N, nheads*D); pos (N): the position of each token row. Under context
 * parallelism a rank passes its own (zigzag) positions.
 */
#pragma once

#include <cmath>
#include <vector>

#include "reference/common/tensor.h"

namespace pb::ref {

// Sign +1 applies R (forward), -1 applies R^T (backward); the same loop serves both.
template <class T>
void rope_rotate(Mat<T>& y, const Mat<T>& x, const std::vector<int64_t>& pos, Index head_dim, double theta,
                 int sign) {
  const Index n = x.rows(), half = head_dim / 2, heads = x.cols() / head_dim;
  y.resize(n, x.cols());  // (N, nheads*D)
  for (Index t = 0; t < n; ++t)
    for (Index i = 0; i < half; ++i) {
      const T inv_freq = T(std::pow(theta, -2.0 * double(i) / double(head_dim)));
      const T phi = T(pos[size_t(t)]) * inv_freq;
      const T c = std::cos(phi), s = T(sign) * std::sin(phi);
      for (Index h = 0; h < heads; ++h) {
        const T x1 = x(t, h * head_dim + i), x2 = x(t, h * head_dim + half + i);
        y(t, h * head_dim + i) = x1 * c - x2 * s;
        y(t, h * head_dim + half + i) = x2 * c + x1 * s;
      }
    }
}

template <class T>
void rope_forward(Mat<T>& y, const Mat<T>& x, const std::vector<int64_t>& pos, Index head_dim, double theta) {
  rope_rotate(y, x, pos, head_dim, theta, +1);
}

template <class T>
void rope_backward(Mat<T>& dx, const Mat<T>& dy, const std::vector<int64_t>& pos, Index head_dim, double theta) {
  rope_rotate(dx, dy, pos, head_dim, theta, -1);
}

}  // namespace pb::ref
