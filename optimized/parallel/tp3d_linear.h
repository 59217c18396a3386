/* The linear of 3D tensor parallelism on a q x q x q grid (Bian et al., arXiv 2105.14450;
 * Colossal-AI's legacy parallel_3d), y = x W^T with W in the reference's [out, in] layout and
 * three groups of the grid (tp_grid.h): INPUT, WEIGHT and OUTPUT, a rank's place in each its
 * coordinate there. For a column linear (the first of a block) INPUT varies j, WEIGHT i and
 * OUTPUT k; the block's second linear takes the first one's output, so its INPUT and OUTPUT
 * are swapped (k and j). Rank (i, j, k) of the column orientation holds
 *   x   (B/q^2, in/q)     rows: block i of B/q, its sub-block j;   columns: input block k
 *   W   (out/q^2, in/q)   rows: output block j, its sub-block i;   columns: input block k
 *   y   (B/q^2, out/q)    rows: block i, its sub-block k;          columns: output block j
 *   forward   X = all-gather of x over INPUT (B/q, in/q: rows block i); Wb = all-gather of W
 *             over WEIGHT (out/q, in/q: block (j, k)); y = reduce-scatter over OUTPUT of X Wb^T
 *             (summed over the input blocks k, rows split by k)
 *   backward  dY = all-gather of dy over OUTPUT; dx = reduce-scatter over INPUT of dY Wb;
 *             dW += reduce-scatter over WEIGHT of dY^T X (fp32: the sum over the row blocks i)
 * (X and Wb gathered again in backward rather than kept.) Several weights on one input
 * (q, k, v; gate, up) share X's gathers and the backward's dX reduce-scatter.
 * Per call, e bytes per element, the gathers' outputs and the reduce-scatters' inputs:
 * forward all-gathers of e B in/q^2 (INPUT) and per weight e out in/q^2 (WEIGHT) and per
 * weight a reduce-scatter of e B out/q^2 (OUTPUT); backward the gathers of X and every Wb
 * again, per weight an all-gather of e B out/q^2 (OUTPUT) and a reduce-scatter of
 * 4 out in/q^2 (WEIGHT), and one reduce-scatter of e B in/q^2 (INPUT).
 * Transients: forward X and one Wb (CommBuffers) with one product (B/q, out/q) (Workspace);
 * backward X, then per weight its Wb and dY (CommBuffers) beside dX (B/q, in/q) (with a
 * second product of that size from the second weight on), its dW (out/q, in/q, fp32) and
 * then its reduce-scatter result (out/q^2, in/q, fp32).
 */
#pragma once

#include <vector>

#include "optimized/comm/communicator.h"
#include "optimized/parallel/terms.h"

namespace pb {

void linear3d_forward(const std::vector<Tensor*>& ys, const Tensor& x, const std::vector<const Tensor*>& ws,
                      Communicator& input, Communicator& weight, Communicator& output);
void linear3d_backward(Tensor& dx, const std::vector<Tensor*>& dws, const std::vector<const Tensor*>& dys,
                       const Tensor& x, const std::vector<const Tensor*>& ws, Communicator& input,
                       Communicator& weight, Communicator& output);

// calls fused linears of x (B, in) through the weights (out_w, in) on a q^3 grid, forward and
// backward, on the groups named input, weight and output; e bytes per activation and weight
// element.
void linear3d_terms(const char* input, const char* weight, const char* output, int64_t q, int64_t calls, int64_t B,
                    int64_t in, const std::vector<int64_t>& outs, int64_t e, Terms& t);

}  // namespace pb
