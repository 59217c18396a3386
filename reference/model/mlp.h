/* Llama MLP: down(silu(gate(x)) * up(x)), composed from linear and swiglu.
 *
 *   x (N, H) -> g = x Wg^T, u = x Wu^T (N, F) -> h = silu(g) * u (N, F) -> y = h Wd^T (N, H)
 */
#pragma once

#include "reference/ops/linear.h"
#include "reference/ops/swiglu.h"

namespace pb::ref {

template <class T>
struct MlpCache {
  Mat<T> x, g, u, h;  // (N, H), (N, F), (N, F), (N, F)
};

template <class T>
void mlp_forward(Mat<T>& y, MlpCache<T>& c, const Mat<T>& x, const Mat<T>& wg, const Mat<T>& wu, const Mat<T>& wd) {
  c.x = x;
  linear_forward(c.g, x, wg);
  linear_forward(c.u, x, wu);
  swiglu_forward(c.h, c.g, c.u);
  linear_forward(y, c.h, wd);
}

// dx is overwritten; dwg, dwu, dwd accumulate.
template <class T>
void mlp_backward(Mat<T>& dx, Mat<T>& dwg, Mat<T>& dwu, Mat<T>& dwd, const Mat<T>& dy, const MlpCache<T>& c,
                  const Mat<T>& wg, const Mat<T>& wu, const Mat<T>& wd) {
  Mat<T> dh, dg, du, dx_u;
  linear_backward(dh, dwd, dy, c.h, wd);
  swiglu_backward(dg, du, dh, c.g, c.u);
  linear_backward(dx, dwg, dg, c.x, wg);
  linear_backward(dx_u, dwu, du, c.x, wu);
  dx += dx_u;
}

}  // namespace pb::ref
