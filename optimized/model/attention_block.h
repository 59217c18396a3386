/* The attention block of a decoder layer (reference/model/layer.h, first half):
 *   a  = rmsnorm(x, g_in)                                   (N_s, H)
 *   q  = rope(a Wq^T), k = rope(a Wk^T), v = a Wv^T         (N, Aq*D), (N, Gk*D), (N, Gk*D)   column
 *   o  = core(q, k, v)                                      (N, Aq*D)    the attention-core seam
 *   h  = x + o Wo^T                                         (N_s, H)     row
 * Backward in reverse; the residual passes dh through to dx.
 */
#pragma once

#include <map>
#include <memory>

#include "optimized/model/attention_core.h"
#include "optimized/model/block.h"

namespace pb {

class AttentionBlock final : public Block {
 public:
  AttentionBlock(const BlockEnv& env, int64_t layer, std::unique_ptr<AttentionCore> core);
  ~AttentionBlock() override;
  Tensor forward(BlockCtx& ctx, const Tensor& x) override;
  Tensor backward(BlockCtx& ctx, const Tensor& dh) override;
  void drop(int mb) override;
  std::vector<ShardedParam*> params() const override { return {in_norm_, wq_, wk_, wv_, wo_}; }
  std::string label() const override { return "attention " + std::to_string(layer_); }
  AttentionCore& core() { return *core_; }

 private:
  struct Saved;
  const BlockEnv& env_;
  int64_t layer_;
  std::unique_ptr<AttentionCore> core_;
  ShardedParam *in_norm_, *wq_, *wk_, *wv_, *wo_;
  PerMicroBatch<Saved> saved_;
};

// Saved per layer and micro-batch besides the core's: x, a (N_s, H), q (N, a D), k, v
// (N, g D) in the model dtype and rstd (N_s) fp32: e (2 N_s H + N (a + 2 g) D) + 4 N_s.
// The output h is the MLP block's saved input.
int64_t attention_block_saved_bytes(const Dims& d);
// Workspace: forward qp (N, a D), kp (N, g D), the projection's output (N_s, H) and the row
// linear's partial (N, H); backward dout, dq, dqp (N, a D), dk, dv, dkp (N, g D), da
// (N_s, H) and the column linear's dx_full and tmp (N, H) (dx (N_s, H) comes after them).
// The core's own transients (`core`: the strategy's) come while qp and kp (forward), dout,
// dq, dk and dv (backward) are held.
BlockWorkspace attention_block_workspace(const Dims& d, const BlockWorkspace& core = {});

}  // namespace pb
