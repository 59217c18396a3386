/* The MLP seam (DESIGN.md, "The decoder as blocks"): f = mlp(m) for the normalized
 * m (N_s, H), f (N_s, H) before the residual. The MLP owns what its backward needs.
 *
 * Strategies: dense SwiGLU (DenseSwiGlu below, Shazeer, arXiv 2002.05202):
 *   g, u = column(m; Wg, Wu)      (N, F/TP) each        s = silu(g) * u      (N, F/TP)
 *   f    = row(s; Wd)             (N_s, H)
 * MoE (router + dispatcher + grouped experts): mlp_moe.h.
 */
#pragma once

#include <memory>
#include <vector>

#include "optimized/model/dist_params.h"
#include "optimized/parallel/terms.h"

namespace pb {

struct BlockEnv;
struct BlockCtx;

class Mlp {
 public:
  struct Saved {
    virtual ~Saved() = default;
    virtual std::vector<Tensor*> tensors() = 0;
  };
  virtual ~Mlp() = default;
  // f (N_s, H), allocated as workspace (the block adds the residual). ctx: the micro-batch
  // (an MoE adds its share of the load-balancing loss to ctx.aux).
  virtual std::unique_ptr<Saved> forward(Tensor& f, const Tensor& m, BlockCtx& ctx) = 0;
  // dm (N_s, H) overwritten; weight gradients to the TP linear's sink.
  virtual void backward(Tensor& dm, const Tensor& df, Saved& s) = 0;
  virtual std::vector<ShardedParam*> params() const = 0;  // the weights it owns
};

class DenseSwiGlu final : public Mlp {
 public:
  DenseSwiGlu(const BlockEnv& env, int64_t layer);
  std::unique_ptr<Saved> forward(Tensor& f, const Tensor& m, BlockCtx& ctx) override;
  void backward(Tensor& dm, const Tensor& df, Saved& s) override;
  std::vector<ShardedParam*> params() const override { return {wg_, wu_, wd_}; }

 private:
  const BlockEnv& env_;
  ShardedParam *wg_, *wu_, *wd_;
};

// Saved per layer and micro-batch: g, u, s (N, F/TP) in the model dtype: 3 e N f bytes
// (the input m is the block's). Kept by a split backward's queued weight gradients: s.
int64_t dense_mlp_saved_bytes(const Dims& d);

}  // namespace pb
