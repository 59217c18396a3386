/* The distributed decoder: its blocks per pipeline chunk, and the chunk forward / backward
 * (see dist_model.h). */
#include "optimized/model/dist_model.h"

#include <algorithm>

#include "optimized/comm/ledger.h"
#include "optimized/core/timeline.h"
#include "optimized/model/attention_block.h"
#include "optimized/model/end_blocks.h"
#include "optimized/model/mlp_block.h"
#include "optimized/model/recompute.h"
#include "optimized/parallel/cp_ring.h"
#include "reference/common/error.h"

namespace pb {

namespace {
pp::Placement placement_of(const DistModelConfig& cfg, const ProcessGrid& grid) {
  pp::Placement p;
  p.p = grid.layout().pp;
  p.v = grid.layout().vpp;
  p.vshape = cfg.vshape;
  p.bidir = cfg.bidir;
  p.bounds = cfg.stage_bounds;
  return p;
}

// The RoPE position of each of this rank's token rows: 0..S-1 per sequence, or under CP the
// positions of the rank's two chunks (parallel/cp_ring.h).
// TeraPipe: slice `slice` of every sequence (K slices of S/K tokens).
std::vector<int64_t> token_positions(const DistModelConfig& cfg, const ProcessGrid& grid, int64_t slice = 0) {
  if (cfg.terapipe_slices > 0) {
    const int64_t s = cfg.seq_length / cfg.terapipe_slices;
    std::vector<int64_t> all;
    for (int64_t b = 0; b < cfg.micro_batch_size; ++b)
      for (int64_t t = 0; t < s; ++t) all.push_back(slice * s + t);
    return all;
  }
  const int c = grid.layout().cp;
  // (2D / 2.5D TP: the rank's block of the sequences, parallel/tp2d_linear.h)
  if (c == 1) return ref::sequence_positions(cfg.micro_batch_size / grid.tp_grid().row_blocks(), cfg.seq_length);
  const std::vector<int64_t> one = cp_positions(cfg.seq_length, c, grid.cp_rank(), cfg.cp_contiguous, cfg.cp_ulysses);
  std::vector<int64_t> all;
  for (int64_t b = 0; b < cfg.micro_batch_size; ++b) all.insert(all.end(), one.begin(), one.end());
  return all;
}
}  // namespace

DistModel::DistModel(const DistModelConfig& cfg, ProcessGrid& grid)
    : cfg_(cfg),
      grid_(grid),
      placement_(placement_of(cfg, grid)),
      params_(cfg.model, grid.layout().tp, grid.tp_rank(), cfg.seed, cfg.dtype,
              [&](const std::string& name) {
                return stage_holds(placement_, grid.pp_rank(), cfg.model.num_hidden_layers, name);
              },
              grid.layout().ep, grid.ep().rank(), cfg.reuse_fp32_param,
              cfg.distributed_optimizer ? grid.dp_cp().size() : 1, cfg.distributed_optimizer ? grid.dp_cp().rank() : 0,
              cfg.offload_optimizer, cfg.zero_stage, cfg.bucket_size,
              cfg.distributed_optimizer ? grid.expert_dp().size() : 1, cfg.distributed_optimizer ? grid.expert_dp().rank() : 0,
              grid.tp_grid()),
      sink_(cfg.strategies.grad_sink(params_)),
      tp_(cfg.strategies.tp_linear(grid, *sink_)),
      block_grads_(cfg.strategies.block_grads(params_, grid, *tp_)),
      provider_(cfg.strategies.params(params_, grid)),
      chain_(std::make_unique<BlockChain>(*provider_, *block_grads_)),
      policy_(cfg.strategies.activations()),
      pos_(token_positions(cfg, grid)) {  // uploaded here, once
  const auto& mc = cfg_.model;  // the blocks keep references: the model's own copy
  const TpGrid& tg = grid.tp_grid();
  const int t = tg.q;  // the heads', ffn's and vocabulary's split (1d: tp)
  const int64_t N = pos_.size();
  PB_REQUIRE(cfg.micro_batch_size % tg.row_blocks() == 0, "tp grid: micro_batch_size ", cfg.micro_batch_size,
             " does not split in ", tg.row_blocks(), " blocks of sequences");
  const int64_t K = cfg.terapipe_slices;
  if (K > 0) {  // TeraPipe: a unit is one slice of every sequence
    PB_REQUIRE(cfg.seq_length % K == 0, "terapipe: ", K, " slices do not divide the sequence of ", cfg.seq_length,
               " tokens");
    for (int64_t i = 0; i < K; ++i) slice_pos_.emplace_back(token_positions(cfg, grid, i));
    terapipe_ = std::make_unique<TeraPipeKV>(cfg.micro_batch_size, cfg.seq_length, K,
                                             mc.num_key_value_heads / grid.layout().tp * mc.head_dim(), cfg.dtype);
  }
  env_.reset(new BlockEnv{mc, cfg.micro_batch_size / tg.row_blocks(), K > 0 ? cfg.seq_length / K : cfg.seq_length, N,
                          tp_->outer_rows(N), mc.hidden_size / tg.hidden_blocks(),
                          mc.head_dim(), mc.num_attention_heads / t, mc.num_key_value_heads / t,
                          mc.intermediate_size / t, cfg.dtype, params_, *tp_, *provider_, *policy_, pos_, &grid.cp(),
                          cfg.cp_contiguous, grid.cp_ulysses(), grid.cp_ring(), &grid.ep(), &grid.tp_cp(),
                          K > 0 ? &slice_pos_ : nullptr, terapipe_.get(), mc.vocab_size / t});
  for (int c = 0; c < placement_.v; ++c) {
    const int s = stage_of(c);
    auto& blocks = chunks_.emplace_back();
    if (placement_.first_of(s)) blocks.push_back(std::make_unique<EmbeddingBlock>(*env_));
    const auto [l0, l1] = placement_.layers(mc.num_hidden_layers, s);
    const auto groups = cfg.strategies.recompute_groups(l0, l1);  // full recompute's checkpointed layers
    for (int64_t l = l0; l < l1;) {
      std::vector<std::unique_ptr<Block>> layers;
      const auto g = std::find_if(groups.begin(), groups.end(), [l](const auto& r) { return r.first == l; });
      const int64_t end = g == groups.end() ? l + 1 : g->second;
      for (; l < end; ++l) {
        layers.push_back(std::make_unique<AttentionBlock>(*env_, l, cfg.strategies.attention_core(*env_, l)));
        layers.push_back(std::make_unique<MlpBlock>(*env_, l, cfg.strategies.mlp(*env_, l)));
      }
      if (g != groups.end())
        blocks.push_back(std::make_unique<CheckpointedBlocks>(std::move(layers), *chain_));
      else
        for (auto& b : layers) blocks.push_back(std::move(b));
    }
    if (placement_.last_of(s)) blocks.push_back(std::make_unique<HeadBlock>(*env_));
  }
}

DistModel::~DistModel() = default;

std::vector<int64_t> DistModel::chunk_layers(int c) const {
  const auto [l0, l1] = placement_.layers(cfg_.model.num_hidden_layers, stage_of(c));
  std::vector<int64_t> out;
  for (int64_t l = l0; l < l1; ++l) out.push_back(l);
  return out;
}

Tensor DistModel::boundary_activation() const { return env_->act(env_->Ns, env_->H); }
Tensor DistModel::boundary_gradient() const { return env_->work(env_->Ns, env_->H); }

Tensor DistModel::forward_chunk(int c, int mb, const ref::Batch& batch, const Tensor& x_in, float grad_scale,
                                double* loss) {
  PhaseScope phase(Phase::Forward);
  auto& st = inflight_[{c, mb}];
  PB_REQUIRE(!st, "pipeline: micro-batch ", mb, " is already in flight in chunk ", c);
  st = std::make_unique<InFlight>();
  BlockCtx ctx{mb, &batch, grad_scale};
  if (terapipe_) terapipe_->begin_forward(mb, chunk_layers(c));
  const Tensor x = chain_->forward(chunks_[size_t(c)], ctx, x_in, {});
  if (last_stage(c)) *loss = ctx.loss;
  aux_ += ctx.aux;
  return x;
}

Tensor DistModel::backward_chunk(int c, int mb, const Tensor& dy, bool split_w) {
  PhaseScope phase(Phase::Backward);
  const auto it = inflight_.find({c, mb});
  PB_REQUIRE(it != inflight_.end(), "pipeline: backward of micro-batch ", mb, " in chunk ", c, " before its forward");
  tp_->defer_to(split_w ? &it->second->wgrads : nullptr);
  block_grads_->defer_to(split_w ? &it->second->grads : nullptr);
  BlockCtx ctx{mb};
  if (terapipe_) terapipe_->begin_backward(mb, chunk_layers(c));
  const Tensor d = chain_->backward(chunks_[size_t(c)], ctx, dy, {});
  if (terapipe_) terapipe_->end_backward(mb);
  tp_->defer_to(nullptr);
  block_grads_->defer_to(nullptr);
  block_grads_->chunk_done();
  if (!split_w) inflight_.erase(it);
  return d;
}

void DistModel::weight_grad_chunk(int c, int mb) {
  PhaseScope phase(Phase::Backward);
  const auto it = inflight_.find({c, mb});
  PB_REQUIRE(it != inflight_.end(), "pipeline: W of micro-batch ", mb, " in chunk ", c, " without its B");
  {
    const TimedSpan span(SpanKind::Compute, "W", "chunk " + std::to_string(c));
    run_wgrads(it->second->wgrads, *sink_);
  }
  block_grads_->reduce(it->second->grads);
  std::vector<ShardedParam*> params;  // the chunk's
  for (const auto& b : chunks_[size_t(c)])
    for (ShardedParam* p : b->params()) params.push_back(p);
  block_grads_->weights_done(params, mb);
  inflight_.erase(it);
}

void DistModel::recompute_chunk(int c, int mb) {
  PhaseScope phase(Phase::Backward);
  PB_REQUIRE(inflight_.count({c, mb}), "pipeline: recompute of micro-batch ", mb, " in chunk ", c, " before its forward");
  for (const auto& b : chunks_[size_t(c)])
    if (auto* g = dynamic_cast<CheckpointedBlocks*>(b.get())) g->recompute(mb);
}

double DistModel::forward_backward(const ref::Batch& batch, float grad_scale, int mb) {
  PB_REQUIRE(chunks() == 1 && last_stage(0) && first_stage(0), "forward_backward: a pipeline needs a schedule");
  double loss = 0;
  forward_chunk(0, mb, batch, Tensor(), grad_scale, &loss);
  backward_chunk(0, mb, Tensor(), false);
  return loss;
}

}  // namespace pb
