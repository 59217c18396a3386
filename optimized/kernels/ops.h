/* The op set of the optimized path, one dispatch keyed by the tensors' device
 * (DESIGN.md: technique code calls these and never loops over tensor data itself).
 * Implementations: kernels/cpu/<op>.cc (CPU, fp32), kernels/cuda/<op>.cu (CUDA)
 * with the same names and signatures: outputs, inputs, sizes, then the stream (the
 * default: the current stream of the tensors' device, core/stream.h).
 *
 * Shapes: token rows N (= B*S, or a shard of them), H hidden, heads and head dim of the
 * local shard. Weight gradients accumulate (+=); everything else overwrites.
 */
#pragma once

#include <cstdint>
#include <vector>

#include "optimized/core/index_tensor.h"
#include "optimized/core/stream.h"
#include "optimized/core/tensor.h"

namespace pb::ops {

// Attention over B sequences: S query rows and Sk key/value rows per sequence, local
// query heads A and kv heads G, head dim D. q, o (B*S, A*D); k, v (B*Sk, G*D); lse (B*A, S).
// Key j is visible to query i iff kpos[j] <= qpos[i] (causal by position). The defaults
// (Sk = 0, empty position lists) are causal self-attention over positions 0..S-1, so
// AttnShape{B, S, A, G, D} keeps its meaning. Explicit positions and Sk != S serve ring
// attention's partial steps (Liu et al., arXiv 2310.01889), whose query and key chunks
// need not be contiguous; a query row that sees no key gets o = 0 and lse = -inf and no
// gradient, so partial results merge by their LSE.
struct AttnShape {
  int64_t B, S, A, G, D;
  int64_t Sk = 0;                             // key/value rows per sequence; 0 means S
  std::vector<int64_t> qpos = {}, kpos = {};  // S and Sk positions; empty: 0..S-1 / 0..Sk-1

  int64_t keys() const { return Sk ? Sk : S; }
  std::vector<int64_t> query_positions() const { return qpos.empty() ? iota(S) : qpos; }
  std::vector<int64_t> key_positions() const { return kpos.empty() ? iota(keys()) : kpos; }

 private:
  static std::vector<int64_t> iota(int64_t n) {
    std::vector<int64_t> p(size_t(n > 0 ? n : 0));
    for (size_t i = 0; i < p.size(); ++i) p[i] = int64_t(i);
    return p;
  }
};

struct AdamHyper {
  float lr, beta1, beta2, eps, weight_decay;  // weight_decay 0 for norm weights
  float bias_corr1, bias_corr2;               // 1 - beta^t
  float grad_scale;                           // clip coefficient (<= 1)
};

#include "optimized/kernels/op_signatures.inc"

// dst = src between devices (swap and offload: a device tensor to host memory and back),
// on the stream of the device side (CUDA: an asynchronous cudaMemcpy; from pinned memory
// it overlaps compute). Same dtype and element count.
void transfer(Tensor& dst, const Tensor& src, const Stream& stream = {});

}  // namespace pb::ops
