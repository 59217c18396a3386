/* The decoder as blocks (DESIGN.md): a layer is x -> h = x + Attention(norm(x)) ->
 * y = h + Mlp(norm(h)); the model is embedding -> layers -> head + loss. Each block has a
 * forward and a backward over one micro-batch and owns what it saves for its backward, per
 * micro-batch in flight (a pipeline schedule may hold several).
 *
 * BlockEnv is what every block of one rank shares: the sizes of its shards, the dtype and
 * the strategies chosen once when the model was built (TP linear, parameter provider,
 * activation policy; the attention core and the MLP are per block).
 * Sizes: N = B*S token rows of a micro-batch, N_s the rows outside TP regions (N, or N/TP
 * under SP), H hidden, D head dim, and this rank's heads Aq = A/TP, kv heads Gk = G/TP and
 * ffn columns F = F/TP. Under 2D / 2.5D TP (parallel/tp2d_linear.h) they are the rank's
 * blocks: B = B/(q d) sequences, H = H/q, Aq = A/q, Gk = G/q, F = F/q. Saved activations are MemCategory::Activations, temporaries
 * Workspace (gathered copies are the TP strategy's CommBuffers), statistics (rstd, LSE) fp32.
 */
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "optimized/core/index_tensor.h"
#include "optimized/kernels/ops.h"
#include "optimized/memory/activation_policy.h"
#include "optimized/model/dist_params.h"
#include "optimized/model/param_provider.h"
#include "optimized/parallel/terms.h"
#include "optimized/parallel/tp_linear.h"
#include "reference/common/error.h"
#include "reference/model/config.h"
#include "reference/model/data.h"

namespace pb {

class TeraPipeKV;

struct BlockEnv {
  const ref::ModelConfig& mc;
  int64_t B, S, N, Ns, H, D, Aq, Gk, F;
  DType dtype;                        // weights and activations
  DistParams& params;
  TpLinear& tp;
  ParamProvider& provider;
  ActivationPolicy& policy;
  const IndexTensor& pos;             // (N) RoPE position of each token row, uploaded once per model
  Communicator* cp = nullptr;         // context parallelism: the cp group (size 1 without CP)
  bool cp_contiguous = false;         // its split: chunks 2r, 2r+1 instead of r, 2c-1-r
  Communicator* cp_ulysses = nullptr;  // hybrid CP: the Ulysses group and the ring group
  Communicator* cp_ring = nullptr;
  Communicator* ep = nullptr;         // expert parallelism: the ep group (size 1 without EP)
  Communicator* tp_cp = nullptr;      // the ranks sharing one sequence (the MoE load-balancing counts)
  // TeraPipe (model/attention_terapipe.h): S is a slice's tokens; micro-batch unit mb is slice
  // mb % K, whose rows have the positions slice_pos[mb % K]; the cross-slice K/V state.
  const std::vector<IndexTensor>* slice_pos = nullptr;
  TeraPipeKV* terapipe = nullptr;
  int64_t Vh = 0;                     // the head's vocabulary columns (V/TP; a grid's V/q)
  const IndexTensor& positions(int mb) const {
    return slice_pos ? (*slice_pos)[size_t(mb) % slice_pos->size()] : pos;
  }
  Tensor act(int64_t r, int64_t c) const { return Tensor::empty({r, c}, MemCategory::Activations, dtype); }
  Tensor work(int64_t r, int64_t c) const { return Tensor::empty({r, c}, MemCategory::Workspace, dtype); }
  static Tensor stat(int64_t n) { return Tensor::empty({n}, MemCategory::Activations, DType::F32); }
};

// What a block's forward and backward see of the micro-batch.
struct BlockCtx {
  int mb = 0;                         // micro-batch in flight: the key of the saved state
  const ref::Batch* batch = nullptr;  // tokens and labels (used by the embedding and the head)
  float grad_scale = 1;               // d(step loss) / d(this micro-batch's mean loss)
  double loss = 0;                    // out of the head's forward: the mean cross-entropy
  double aux = 0;                     // out of MoE forwards: this rank's share of the load-balancing
                                      // loss, times grad_scale
  bool recompute = false;             // a checkpointed forward run again inside backward (recompute.h):
                                      // nothing is logged (MoE routing) or added (losses) twice
  bool checkpointed = false;          // a block inside a checkpointed group (its state is dropped)
  std::vector<ShardedParam*> then{};  // a composite block's: the weights acquired right after it
                                      // (block_chain.h), to be prefetched before its last block
};

class Block {
 public:
  virtual ~Block() = default;
  // The forward, counted (forwards(): how often this block ran forward, recomputes included).
  Tensor run(BlockCtx& ctx, const Tensor& x) {
    ++forwards_;
    return forward(ctx, x);
  }
  int64_t forwards() const { return forwards_; }
  // forward (through run): x (N_s, H) -> out (N_s, H); the embedding ignores x, the head
  // returns an empty tensor and sets ctx.loss.
  // dout (N_s, H) -> din (N_s, H); the head ignores dout, the embedding returns an empty
  // tensor. Frees the micro-batch's saved state (what queued weight gradients hold stays
  // alive through the queue).
  virtual Tensor backward(BlockCtx& ctx, const Tensor& dout) = 0;
  // Discards the saved state of micro-batch mb without a backward (recompute.h: a
  // checkpointed block keeps nothing between its forward and the recompute in backward).
  virtual void drop(int mb);
  // The parameters whose gradients this block's backward writes (ZeRO-2/3 bind and reduce
  // them around it).
  virtual std::vector<ShardedParam*> params() const = 0;
  // Its name on the timeline ("attention 3", "mlp 3", "embedding", "head").
  virtual std::string label() const = 0;
  // A block that runs blocks of its own through the chain (block_chain.h: a checkpointed
  // group) prefetches what follows it and binds its blocks' gradients itself.
  virtual bool composite() const { return false; }
  // The weights its forward (or backward) acquires first from the parameter provider.
  virtual std::vector<ShardedParam*> weights_used(bool backward) const {
    (void)backward;
    return params();
  }

 protected:
  virtual Tensor forward(BlockCtx& ctx, const Tensor& x) = 0;

 private:
  int64_t forwards_ = 0;
};

// A block's saved state of each micro-batch in flight.
template <class S>
class PerMicroBatch {
 public:
  explicit PerMicroBatch(const char* block) : block_(block) {}
  S& start(int mb) {  // a forward
    auto& p = states_[mb];
    PB_REQUIRE(!p, block_, ": micro-batch ", mb, " is already in flight");
    p = std::make_unique<S>();
    return *p;
  }
  S& of(int mb) {  // its backward
    const auto it = states_.find(mb);
    PB_REQUIRE(it != states_.end(), block_, ": backward of micro-batch ", mb, " before its forward");
    return *it->second;
  }
  void end(int mb) { states_.erase(mb); }

 private:
  const char* block_;
  std::map<int, std::unique_ptr<S>> states_;
};

// Scoped acquire / release of a block's weights through the parameter provider.
class Weights {
 public:
  Weights(ParamProvider& p, std::vector<ShardedParam*> ps) : p_(p), ps_(std::move(ps)) {
    for (auto* q : ps_) w_.push_back(&p_.acquire(*q));
  }
  ~Weights() {
    for (auto* q : ps_) p_.release(*q);
  }
  Weights(const Weights&) = delete;
  Weights& operator=(const Weights&) = delete;
  const Tensor& operator[](size_t i) const { return *w_[i]; }

 private:
  ParamProvider& p_;
  std::vector<ShardedParam*> ps_;
  std::vector<const Tensor*> w_;
};

}  // namespace pb
