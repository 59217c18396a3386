/* The attention-core seam (DESIGN.md, "The decoder as blocks"): between RoPE and the output
 * projection,
 *   o = softmax(q k^T / sqrt(D) + causal mask) v      q, o (N, Aq*D); k, v (N, Gk*D)
 * over this rank's token rows and heads (GQA: query head j uses kv head j / (Aq/Gk)).
 * The core owns what its backward needs (Saved) and returns it from the forward.
 *
 * Strategies: local (LocalAttention below: the whole sequence on this rank, the flash-style
 * kernel of kernels/ops.h, saving o and the LSE (B*Aq, S) fp32, Dao et al., arXiv
 * 2205.14135); later ring (load-balanced), Ulysses and hybrid context parallelism.
 */
#pragma once

#include <memory>

#include "optimized/kernels/ops.h"
#include "optimized/parallel/terms.h"

namespace pb {

struct BlockEnv;

class AttentionCore {
 public:
  struct Saved {
    virtual ~Saved() = default;
    virtual std::vector<Tensor*> tensors() = 0;
  };
  virtual ~AttentionCore() = default;
  // o (N, Aq*D), allocated as an activation, from q, k, v (already rotated); mb: the
  // micro-batch in flight (TeraPipe's: its slice).
  virtual std::unique_ptr<Saved> forward(Tensor& o, const Tensor& q, const Tensor& k, const Tensor& v, int mb) = 0;
  // dq (N, Aq*D), dk, dv (N, Gk*D) overwritten from dout (N, Aq*D).
  virtual void backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, Saved& s) = 0;
};

class LocalAttention final : public AttentionCore {
 public:
  explicit LocalAttention(const BlockEnv& env);
  std::unique_ptr<Saved> forward(Tensor& o, const Tensor& q, const Tensor& k, const Tensor& v, int mb) override;
  void backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, Saved& s) override;

 private:
  ops::AttnShape shape_;
  DType dtype_;
};

// Saved per layer and micro-batch by the local core: o in the model dtype, LSE fp32:
//   e N a D + 4 a N bytes (q, k, v are the attention block's; N = B S, or its CP share).
int64_t local_attention_saved_bytes(const Dims& d);

}  // namespace pb
