/* The MLP block of a decoder layer (reference/model/layer.h, second half):
 *   m = rmsnorm(h, g_post)       (N_s, H)
 *   y = h + mlp(m)               (N_s, H)     the MLP seam: dense SwiGLU, later MoE
 * Backward in reverse; the residual passes dy through to dh.
 */
#pragma once

#include <map>
#include <memory>

#include "optimized/model/block.h"
#include "optimized/model/mlp.h"

namespace pb {

class MlpBlock final : public Block {
 public:
  MlpBlock(const BlockEnv& env, int64_t layer, std::unique_ptr<Mlp> mlp);
  ~MlpBlock() override;
  Tensor forward(BlockCtx& ctx, const Tensor& h) override;
  Tensor backward(BlockCtx& ctx, const Tensor& dy) override;
  void drop(int mb) override;
  std::vector<ShardedParam*> params() const override;
  std::string label() const override { return "mlp " + std::to_string(layer_); }
  Mlp& mlp() { return *mlp_; }

 private:
  struct Saved;
  const BlockEnv& env_;
  int64_t layer_;
  std::unique_ptr<Mlp> mlp_;
  ShardedParam* post_norm_;
  PerMicroBatch<Saved> saved_;
};

// Saved per layer and micro-batch besides the MLP's: h, m (N_s, H) in the model dtype and
// rstd (N_s) fp32: 2 e N_s H + 4 N_s.
int64_t mlp_block_saved_bytes(const Dims& d);
// Workspace with the dense MLP: forward f (N_s, H) and the row linear's partial (N, H);
// backward dm (N_s, H), ds, dg, du (N, F/TP) and the column linear's dx_full and tmp (N, H).
BlockWorkspace mlp_block_workspace(const Dims& d);

}  // namespace pb
