/* SUMMA on a q x q grid (van de Geijn & Watts, 1997), the linear of 2D tensor parallelism
 * (Optimus, Xu et al., arXiv 2104.05343; Colossal-AI's legacy parallel_2d Matmul_AB_2D), for
 * y = x W^T with W in the reference's [out, in] layout. Rank (i, j) (tp_grid.h) holds
 *   x_ij  (N/q, in/q)    rows block i, input columns block j
 *   W_ji  (out/q, in/q)  output rows block j, input columns block i
 *   y_ij  (N/q, out/q)   rows block i, output columns block j: the layout of x, so linears chain
 * The row group varies j (place j), the column group varies i (place i).
 *   forward   for t < q: x_it broadcast along row i (from (i, t)), W_jt down column j (from
 *             (t, j));  y_ij += x_it W_jt^T
 *   backward  dx_it = sum_j dy_ij W_jt: for t < q: W_jt down column j again, P_t = dy_ij W_jt;
 *             one reduce-scatter of [P_0; ..; P_{q-1}] along row i leaves dx_ij on (i, j)
 *             dW_jt = sum_i dy_ij^T x_it: for t < q: x_it along row i again, Q_t = dy_ij^T x_it;
 *             one reduce-scatter of [Q_0; ..; Q_{q-1}] down column j leaves dW_ji on (i, j)
 * 2.5D (Tesseract, Wang et al., arXiv 2105.14500) is this within each of its d layers of q x q
 * ranks, every layer on its share of the batch with the weights replicated over the layers; the
 * weight gradients are summed over the depth group where gradients are reduced (as over DP).
 * Per call (e bytes per element; the weight gradient fp32): forward q broadcasts of e N in/q^2
 * along the row and q of e out in/q^2 down the column; backward the same again plus one
 * reduce-scatter of e N in/q along the row and one of 4 out in/q down the column.
 */
#pragma once

#include <vector>

#include "optimized/comm/communicator.h"
#include "optimized/parallel/terms.h"

namespace pb {

// y (N/q, out/q) = the (i, j) block of x W^T.
void summa_forward(Tensor& y, const Tensor& x, const Tensor& w, Communicator& row, Communicator& col);
// dx (N/q, in/q) = the (i, j) block of dy W; dw (out/q, in/q, fp32) += W's block's gradient.
void summa_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w, Communicator& row,
                    Communicator& col);
// Several weights on one input (q, k, v; gate, up): x's blocks broadcast once per step for
// all of them, each weight's own; the backward's dx sums every weight's P_t before the one
// reduce-scatter, each weight's Q its own.
//   transients: forward one broadcast x_it and one W_jt (CommBuffers) and one product
//   (N/q, out/q) (Workspace) at a time; backward P (N, in/q) and every weight's Q
//   (out, in/q, fp32) through the loop (with a second product (N/q, in/q) from the second
//   weight on), then one weight's reduce-scatter result (out/q, in/q, fp32) at a time.
void summa_forward(const std::vector<Tensor*>& ys, const Tensor& x, const std::vector<const Tensor*>& ws,
                   Communicator& row, Communicator& col);
void summa_backward(Tensor& dx, const std::vector<Tensor*>& dws, const std::vector<const Tensor*>& dys,
                    const Tensor& x, const std::vector<const Tensor*>& ws, Communicator& row, Communicator& col);

// calls fused linears (x (N, in) through the weights (out_w, in) on the grid), forward and
// backward, on the groups named row and col, each of q ranks; e bytes per activation and
// weight element.
void summa_terms(const char* row, const char* col, int64_t q, int64_t calls, int64_t N, int64_t in,
                 const std::vector<int64_t>& outs, int64_t e, Terms& t);

}  // namespace pb
