/* The linear of 3D tensor parallelism on a q x q x q grid (Bian et al., arXiv 2105.14450;
 * Colossal-AI's legacy parallel_3d _Linear3D), y = x W with the three groups of tp_grid.h:
 * INPUT varies j, WEIGHT varies i, OUTPUT varies k (a rank's place in each is that
 * coordinate). Rank (i, j, k) holds
 *   x   (B/q^2, in/q)     batch sub-block (i, j) of batch block i, input block k
 *   Wt  (in/q^2, out/q)   W^T's rows: input block k, its sub-block i; output block j
 *   y   (B/q^2, out/q)    batch sub-block (i, k) of batch block i, output block j
 * so the next layer takes y with INPUT and OUTPUT swapped (its input block is j).
 *   forward   X = all-gather of x over INPUT (B/q, in/q: batch block i); Wk = all-gather of
 *             Wt over WEIGHT (in/q, out/q); y = reduce-scatter over OUTPUT of X Wk (the sum
 *             over the input blocks k, the batch block split by k)
 *   backward  dY = all-gather of dy over OUTPUT; dx = reduce-scatter over INPUT of dY Wk^T;
 *             dWt += reduce-scatter over WEIGHT of X^T dY (fp32)
 * (X and Wk gathered again in backward rather than kept.) Per call, e bytes per element:
 * forward all-gathers of e B in/q^2 (INPUT) and e in out/q^2 (WEIGHT) and a reduce-scatter
 * of e B out/q^2 (OUTPUT); backward the gathers of X and Wk again, an all-gather of e B out/q^2
 * (OUTPUT), a reduce-scatter of e B in/q^2 (INPUT) and one of 4 in out/q^2 (WEIGHT).
 */
#pragma once

#include "optimized/comm/communicator.h"
#include "optimized/parallel/terms.h"

namespace pb {

void linear3d_forward(Tensor& y, const Tensor& x, const Tensor& wt, Communicator& input, Communicator& weight,
                      Communicator& output);
void linear3d_backward(Tensor& dx, Tensor& dwt, const Tensor& dy, const Tensor& x, const Tensor& wt,
                       Communicator& input, Communicator& weight, Communicator& output);

// calls linears of x (B, in) through W (in -> out) on a q^3 grid, forward and backward, on the
// groups named input, weight and output; e bytes per activation and weight element.
void linear3d_terms(const char* input, const char* weight, const char* output, int64_t q, int64_t calls, int64_t B,
                    int64_t in, int64_t out, int64_t e, Terms& t);

}  // namespace pb
