/* The blocks at the two ends of the decoder (reference/model/transformer.h):
 *   embedding  x0 = vocab_embedding(tokens)                          (N_s, H)
 *   head       logits = column(rmsnorm(x_L); Wlm)                    (N, V/TP)
 *              loss   = vocab-parallel mean cross-entropy (tp_vocab.h)
 * The embedding's backward scatters into its table's gradient; the head's starts the
 * backward from the loss, scaled by the micro-batch's grad_scale.
 */
#pragma once

#include <map>
#include <memory>

#include "optimized/model/block.h"
#include "optimized/parallel/tp_vocab.h"

namespace pb {

class EmbeddingBlock final : public Block {
 public:
  explicit EmbeddingBlock(const BlockEnv& env);
  Tensor forward(BlockCtx& ctx, const Tensor& unused) override;
  Tensor backward(BlockCtx& ctx, const Tensor& dx) override;
  std::vector<ShardedParam*> params() const override { return {table_}; }
  std::string label() const override { return "embedding"; }
  // Its backward scatters into the table's gradient without the table.
  std::vector<ShardedParam*> weights_used(bool backward) const override {
    return backward ? std::vector<ShardedParam*>{} : params();
  }

 private:
  const BlockEnv& env_;
  ShardedParam* table_;
  PerMicroBatch<IndexTensor> tokens_{"embedding"};  // (N), uploaded once per micro-batch
};

class HeadBlock final : public Block {
 public:
  explicit HeadBlock(const BlockEnv& env);
  ~HeadBlock() override;
  Tensor forward(BlockCtx& ctx, const Tensor& x) override;
  Tensor backward(BlockCtx& ctx, const Tensor& unused) override;
  std::vector<ShardedParam*> params() const override { return {norm_, head_}; }
  std::string label() const override { return "head"; }

 private:
  struct Saved;
  const BlockEnv& env_;
  ShardedParam *norm_, *head_;
  PerMicroBatch<Saved> saved_;
};

// Saved by the head per micro-batch: x_L, rmsnorm(x_L) (N_s, H) and the logits (N, V/TP)
// in the model dtype; rstd (N_s) and the cross-entropy's row max and sum (N) fp32:
//   e (2 N_s H + N V/TP) + 4 (N_s + 2N). Kept by a split backward's queued LM-head weight
// gradient: its input rmsnorm(x_L) without SP (under SP the gathered copy), e N H.
int64_t head_saved_bytes(const Dims& d);
// Workspace: the embedding's partial (N, H) forward, nothing backward; the head's target
// logits (N) fp32 forward, and backward dlogits (N, V/TP), dxf, dx (N_s, H) and the column
// linear's dx_full and tmp (N, H).
BlockWorkspace embedding_workspace(const Dims& d);
BlockWorkspace head_workspace(const Dims& d);

}  // namespace pb
