/* Gradient sync, global norm and AdamW of the distributed model (see dist_optimizer.h). */
#include "optimized/model/dist_optimizer.h"

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

#include "optimized/kernels/ops.h"
#include "optimized/parallel/dp_grad_sync.h"
#include "optimized/parallel/ep_grads.h"
#include "reference/common/error.h"

namespace pb {

double DistOptimizer::sum_squares(int64_t from, int64_t to, bool experts) {
  DistParams& P = model_.params();
  std::vector<int64_t> ends;  // the segments of the gradients in [from, to), in buffer order
  for (const auto& p : P.all()) {
    const int64_t b = std::max(p.offset, from), e = std::min(p.offset + p.g.numel(), to);
    if (p.is_expert != experts || e <= b) continue;
    PB_REQUIRE(b - from == (ends.empty() ? 0 : ends.back()), "gradient norm: ", p.name, " is not next in the buffer");
    ends.push_back(e - from);
  }
  return ops::sum_squares_segments(P.grad_buffer().view(from, {to - from}), ends);
}

float DistOptimizer::clip_coefficient(double norm) const {
  return float(tc_.clip_grad > 0 ? std::min(1.0, tc_.clip_grad / (norm + 1e-6)) : 1.0);
}

ops::AdamHyper DistOptimizer::hyper(double norm) {
  skip_ = !std::isfinite(norm);
  const float clip = skip_ ? 1.0f : clip_coefficient(norm);
  t_ += skip_ ? 0 : 1;
  return {float(tc_.lr), float(tc_.beta1), float(tc_.beta2), float(tc_.adam_eps), 0.0f,
          1.0f - float(std::pow(tc_.beta1, double(t_))), 1.0f - float(std::pow(tc_.beta2, double(t_))), clip};
}

void DistOptimizer::adamw(int64_t lo, int64_t hi, int64_t base, ops::AdamHyper h) {
  if (skip_) return;
  DistParams& P = model_.params();
  // Two launches: the norm weights in the range (no weight decay), then its matrices
  // (element-wise, so identical to per-tensor steps).
  const int64_t norms_end = std::clamp(P.norm_numel(), lo, hi);
  for (auto [b, e, decay] : {std::tuple{lo, norms_end, 0.0f}, {norms_end, hi, float(tc_.weight_decay)}}) {
    if (e <= b) continue;
    h.weight_decay = decay;
    Tensor g = P.offloaded() ? P.host_grads().view(b - base, {e - b}) : P.grad_buffer().view(b, {e - b});
    Tensor m = P.adam_m_buffer().view(b - base, {e - b}), v = P.adam_v_buffer().view(b - base, {e - b});
    if (P.residual_buffer().defined()) {  // reuse-fp32-param, sharded: the weights' halves
      Tensor hi = P.weight_buffer().view(b, {e - b}), lo = P.residual_buffer().view(b - base, {e - b});
      ops::adamw_reuse(hi, lo, g, m, v, h);
      continue;
    }
    Tensor w = P.master_buffer().defined() ? P.master_buffer().view(b - base, {e - b})
                                           : P.weight_buffer().view(b, {e - b});  // fp32 ZeRO-1: the weights
    ops::adamw(w, g, m, v, h);
  }
}

double DistOptimizer::step() {
  PhaseScope phase(Phase::Optimizer);
  DistParams& P = model_.params();
  if (P.per_param_shards()) return step_per_param();
  // overlap_grad_reduce (model/grad_overlap.h): the backward started the buckets' sums (and
  // the replicated block's over TP); wait for them.
  const bool summed = model_.block_grads().finish();
  if (model_.bidirectional()) {  // DualPipe, Chimera: the two copies of each stage sum their gradients
    Tensor g = P.grad_buffer();
    grid_.pp_mirror().all_reduce(g);
  }
  if (!summed) sum_replicated_grads();
  if (P.shards() > 1) return step_sharded();
  const double sq = reduced_squares(summed);
  if (post_validation_) return step_post_validated(sq);
  // Two pipelines: every parameter is on two pipeline ranks, with the same (summed) gradient.
  const double norm = std::sqrt(grid_.mp().all_reduce_scalar(sq) / (model_.bidirectional() ? 2.0 : 1.0));
  if (P.offloaded()) to_host(P.grad_buffer().view(0, {P.host_grads().numel()}), 0);
  P.master_to_fp32();  // reuse-fp32-param: the master's bytes back to fp32
  adamw(0, P.weight_buffer().numel(), 0, hyper(norm));
  if (P.offloaded()) {
    Tensor w = P.weight_buffer().view(0, {P.master_buffer().numel()});
    from_host(w, P.master_buffer());
  } else {
    P.master_to_weights();
  }
  return norm;
}

double DistOptimizer::step_stage() {
  PhaseScope phase(Phase::Optimizer);
  DistParams& P = model_.params();
  PB_REQUIRE(!P.per_param_shards() && P.shards() == 1 && !P.offloaded() && P.expert_offset() == P.grad_buffer().numel(),
             "a stage's own update: not with ZeRO, offload or experts");
  sum_replicated_grads();
  const double sq = grid_.tp().all_reduce_scalar(reduced_squares(false));  // the stage's, each element once
  adamw(0, P.weight_buffer().numel(), 0, hyper(std::sqrt(sq)));
  P.master_to_weights();
  return sq;
}

void DistOptimizer::sum_replicated_grads() {
  if (!model_.tp_linear().replicated_grads_partial()) return;  // SP: each rank saw N/TP rows (grids: a row block)
  Tensor norms = model_.params().replicated_grads();
  model_.tp_linear().sum_replicated_grads(norms);
}

double DistOptimizer::reduced_squares(bool summed) {
  DistParams& P = model_.params();
  const int64_t x0 = P.expert_offset(), total_g = P.grad_buffer().numel();
  const bool moe = x0 < total_g;
  Tensor dense = P.grad_buffer().view(0, {x0});
  Tensor experts = moe ? P.expert_grads() : Tensor();
  const int replicas = grid_.layout().dp * grid_.layout().cp;
  if (!summed)  // bucket by bucket (one dense bucket without bucket_size), as overlap_grad_reduce does
    for (const auto& b : P.buckets()) {  // over DP (x CP); the experts' over expert_dp
      Tensor g = P.grad_buffer().view(b.start, {b.padded});
      (b.expert ? grid_.expert_dp() : grad_group()).all_reduce(g);
    }
  // The mean over DP (x CP); the experts summed over the ranks holding them, averaged over DP x CP.
  if (grad_group().size() > 1) ops::scale_(dense, 1.0f / float(grad_group().size()));
  if (moe && replicas > 1) ops::scale_(experts, 1.0f / float(replicas));
  // The squared global norm in one op per block of the contiguous gradient buffer: its
  // segments are the gradients in P.all() order, without the replicated tensors (norm
  // weights and routers: the leading block) except on tp rank 0, so that they count once
  // across TP. On the CPU bitwise the per-tensor loop `sq += sum_squares(p.g)`. The experts
  // (the last block) count once across TP too, and once per EP rank: summed over EP.
  // (2D / 2.5D / 3D: the copies that count, dist_params.h; a 2.5D depth layer but the first
  // counts none.)
  const int64_t skip = P.counts_replicated() ? 0 : P.replicated_numel();
  double sq = P.counts_sharded() ? sum_squares(skip, x0, false) : 0.0;
  if (moe) {
    const double sq_experts = grid_.ep().all_reduce_scalar(sum_squares(x0, total_g, true));
    if (grid_.tp_rank() == 0) sq += sq_experts;
  }
  return sq;
}

// The distributed optimizer (ZeRO-1; Megatron's DistributedOptimizer, Rajbhandari et al.,
// arXiv 1910.02054), bucket by bucket: reduce-scatter the padded bucket over DP x CP (its mean
// lands in this rank's slice), the squared norm of the slices summed over DP x CP and the
// model-parallel group, AdamW on the slices' fp32 master and Adam state, and all-gather of
// each bucket's updated weights (cast to the model dtype): the bytes of one all-reduce.
double DistOptimizer::step_sharded() {
  DistParams& P = model_.params();
  Communicator& g = grad_group();
  const auto& buckets = P.buckets();
  const auto slices = P.slices();
  // The experts' buckets over expert_dp (every TP rank and DP x CP / EP): summed there,
  // averaged over DP x CP like the dense gradients (ep_grads.h).
  auto group_of = [&](const DistParams::Bucket& bk) -> Communicator& { return bk.expert ? grid_.expert_dp() : g; };
  const float replicas = float(grid_.layout().dp * grid_.layout().cp);
  const Tensor reduced = model_.block_grads().reduced();  // overlap_grad_reduce: started in the backward
  for (size_t k = 0; k < buckets.size(); ++k) {
    const auto& bk = buckets[k];
    const auto& sl = slices[k];
    Tensor mean;  // (q) the bucket's reduce-scatter: this rank's slice of the sum
    if (reduced.defined()) {
      mean = reduced.view(bk.at, {bk.q});
    } else {
      mean = Tensor::empty({bk.q}, MemCategory::CommBuffers, DType::F32);
      group_of(bk).reduce_scatter(mean, P.grad_buffer().view(bk.start, {bk.padded}));
    }
    ops::scale_(mean, 1.0f / (bk.expert ? replicas : float(g.size())));
    Tensor mine = P.grad_buffer().view(sl.lo, {sl.len});
    ops::copy(mine, mean);
    if (P.offloaded()) to_host(mean, sl.at);
  }
  // The norm over the slices (the replicated tensors only on TP rank 0), summed over the
  // slices of DP x CP and the model-parallel group.
  // The experts' squares over their slices, summed over expert_dp and EP (each expert once),
  // added on TP rank 0.
  const int64_t skip = grid_.tp_rank() == 0 ? 0 : P.replicated_numel();
  double sq_here = 0, sq_experts = 0;
  bool moe = false;
  for (size_t k = 0; k < buckets.size(); ++k) {
    const auto& sl = slices[k];
    if (buckets[k].expert) {
      moe = true;
      sq_experts += sum_squares(sl.lo, sl.lo + sl.len, true);
    } else {
      sq_here += sum_squares(std::min(std::max(sl.lo, skip), sl.lo + sl.len), sl.lo + sl.len, false);
    }
  }
  double sq = g.all_reduce_scalar(sq_here);
  if (moe) {
    const double e = grid_.ep().all_reduce_scalar(grid_.expert_dp().all_reduce_scalar(sq_experts));
    if (grid_.tp_rank() == 0) sq += e;
  }
  const double norm = std::sqrt(grid_.mp().all_reduce_scalar(sq));
  const ops::AdamHyper h = hyper(norm);
  for (const auto& sl : slices) adamw(sl.lo, sl.lo + sl.len, sl.lo - sl.at, h);
  // Each bucket's new weights into this rank's slice of it, then the bucket gathered in
  // place; with overlap_param_gather the gathers are left to run and the parameter
  // provider waits for a bucket where a block first uses it (model/param_gather_overlap.h).
  for (size_t k = 0; k < buckets.size(); ++k) {
    const auto& bk = buckets[k];
    const auto& sl = slices[k];
    Tensor mine = P.weight_buffer().view(sl.lo, {sl.len});  // (q)
    if (P.offloaded())  // the new weights from the host (cast there)
      from_host(mine, P.master_of(sl));
    else if (!P.residual_buffer().defined() && mine.dtype() != DType::F32)  // else the slice is the new weights
      ops::cast(mine, P.master_of(sl));
    Tensor whole = P.weight_buffer().view(bk.start, {bk.padded});
    model_.param_provider().gathering(k, group_of(bk).iall_gather_in_place(whole));
  }
  return norm;
}

// ZeRO-2 (zero_grads.h): the gradients were reduce-scattered into the accumulator during
// the backward; average them (the experts' summed over expert_dp, averaged over DP x CP
// as well), the norm over the rank's slices (the replicated ones only on TP rank 0) summed
// over DP x CP and the model-parallel group (the experts' over expert_dp and EP, added on
// TP rank 0), AdamW on each unit's slice, and each unit's all-gather of its new weights.
double DistOptimizer::step_per_param() {
  DistParams& P = model_.params();
  Communicator& g = grad_group();
  Tensor& acc = P.grad_accumulator();
  ops::scale_(acc, 1.0f / float(g.size()));
  const int64_t n = acc.numel(), x0 = P.expert_slices(), skip = grid_.tp_rank() == 0 ? 0 : P.replicated_slices();
  auto squares = [&](int64_t from, int64_t to) {
    return to > from ? ops::sum_squares_segments(acc.view(from, {to - from}), {to - from}) : 0.0;
  };
  double sq = g.all_reduce_scalar(squares(skip, x0));
  if (x0 < n) {
    const double e = grid_.ep().all_reduce_scalar(grid_.expert_dp().all_reduce_scalar(squares(x0, n)));
    if (grid_.tp_rank() == 0) sq += e;
  }
  const double norm = std::sqrt(grid_.mp().all_reduce_scalar(sq));
  ops::AdamHyper h = hyper(norm);
  if (P.offloaded()) to_host(acc, 0);  // the step on the host
  const auto units = P.zero_units();
  for (ShardedParam* u : units) {
    if (skip_) break;
    const ShardedParam& p = *u;
    h.weight_decay = p.is_norm ? 0.0f : float(tc_.weight_decay);
    const int64_t q = p.slice_len;
    Tensor gr = P.offloaded() ? P.host_grads().view(p.slice, {q}) : acc.view(p.slice, {q});
    Tensor m = P.adam_m_buffer().view(p.slice, {q}), v = P.adam_v_buffer().view(p.slice, {q});
    if (P.residual_buffer().defined()) {  // reuse-fp32-param: the slice's weights and residual halves
      Tensor hi = P.weight_slice(p), lo = P.residual_buffer().view(p.slice, {q});
      ops::adamw_reuse(hi, lo, gr, m, v, h);
      continue;
    }
    Tensor w = P.master_slice(p);
    ops::adamw(w, gr, m, v, h);
  }
  const bool reuse = P.residual_buffer().defined();
  const DType dt = P.weight_buffer().dtype();
  if (P.params_sharded()) {  // ZeRO-3: the weights are the slices; the provider gathers them when used
    if (P.offloaded())
      from_host(P.weight_buffer(), P.master_buffer());
    else if (dt != DType::F32 && !reuse)
      for (ShardedParam* u : units) {
        Tensor w = P.weight_slice(*u);
        ops::cast(w, P.master_slice(*u));
      }
    return norm;
  }
  Tensor back;  // offload: the new weights of all the slices from the host, (sum q)
  if (P.offloaded()) {
    back = Tensor::empty({P.shard_size()}, MemCategory::CommBuffers, dt);
    from_host(back, P.master_buffer());
  }
  for (ShardedParam* u : units) {
    const ShardedParam& p = *u;
    Tensor updated;  // (q) in the model dtype
    if (back.defined()) {
      updated = back.view(p.slice, {p.slice_len});
    } else {
      updated = Tensor::empty({p.slice_len}, MemCategory::CommBuffers, dt);
      const Tensor master = reuse ? P.weight_slice(p) : P.master_slice(p);
      if (master.dtype() == dt)
        ops::copy(updated, master);
      else
        ops::cast(updated, master);
    }
    Tensor whole = P.weight_buffer().view(p.offset, {p.padded});
    (p.is_expert ? grid_.expert_dp() : g).all_gather(whole, updated);
  }
  return norm;
}

// ZeRO-Offload's copies run on a side stream, ordered by events: after the work that wrote
// their source, and waited on before their destination is used (on the host by the step,
// on the device by the current stream) and before a host staging buffer is freed.
Stream& DistOptimizer::copy_stream() {
  if (!side_.defined()) side_ = Stream::create(model_.params().weight_buffer().device());
  return side_;
}

// The reduced fp32 gradients of the step to the host copy (from element at).
void DistOptimizer::to_host(const Tensor& grads, int64_t at) {
  Tensor h = model_.params().host_grads().view(at, {grads.numel()});
  const Device dev = grads.device();
  Event ready(dev), done(dev);
  ready.record();
  copy_stream().wait(ready);
  ops::transfer(h, grads, copy_stream());
  grads.record_stream(copy_stream());
  done.record(copy_stream());
  done.synchronize();  // the host step reads them next
  CommLedger::get().record("host", CommOp::ToHost, 2, int64_t(h.bytes()));
}

// The new weights of a master (host, fp32) into dst on the device, cast on the host first
// (bf16: a staging buffer of the host category while the copy runs).
void DistOptimizer::from_host(Tensor& dst, const Tensor& master) {
  Tensor out = master;
  if (dst.dtype() != DType::F32) {
    out = Tensor::empty({master.numel()}, MemCategory::Host, dst.dtype(), Device::CPU);
    ops::cast(out, master);
  }
  const Device dev = dst.device();
  Event done(dev);
  ops::transfer(dst, out, copy_stream());
  dst.record_stream(copy_stream());
  done.record(copy_stream());
  current_stream(dev).wait(done);  // the device uses dst after the copy
  done.synchronize();              // and the staging buffer may go
  CommLedger::get().record("host", CommOp::ToDevice, 2, int64_t(out.bytes()));
}

double DistOptimizer::average_loss(double local_mean) {
  PhaseScope phase(Phase::Optimizer);
  Communicator& g = grad_group();  // CP ranks hold equal shares of the sequence
  return g.all_reduce_scalar(local_mean) / g.size();
}

void offload_terms(const Dims& d, Terms& t) {
  const int64_t range = d.zero ? d.shard : d.params_local;
  t.memory[MemCategory::Optimizer] -= (d.e == Dims::fp ? 2 : 3) * Dims::fp * range;  // optimizer_terms' state
  t.memory[MemCategory::Host] += 4 * Dims::fp * range;  // master, m, v and the gradients
  // Per bucket of the distributed optimizer (its slice), or the whole buffer at once.
  std::vector<int64_t> parts;
  for (const int64_t b : d.zero_buckets) parts.push_back(b / (d.d * d.c));
  for (const int64_t b : d.zero_expert_buckets) parts.push_back(b / (d.t * d.d * d.c / d.ep));
  if (parts.empty()) parts.push_back(range);
  for (const int64_t q : parts) {
    if (d.e != Dims::fp) t.host_step = std::max(t.host_step, d.e * q);  // the cast weights, in the step
    t.call("host", CommOp::ToHost, Phase::Optimizer, d.steps, Dims::fp * q, 2);
    t.call("host", CommOp::ToDevice, Phase::Optimizer, d.steps, d.e * q, 2);
  }
}

void optimizer_terms(const Dims& d, Terms& t) {
  // (post-validation and the asynchronous pipelines' stage updates count their own norms)
  if (!d.post_validation && d.updates == 1) t.call("mp", CommOp::AllReduce, Phase::Optimizer, d.steps, 8, d.t * d.p);
  const int64_t P = d.zero ? d.padded : d.params_local;  // the distributed optimizer pads its buffers
  // ZeRO-3: the slices, and the weights of two consecutive blocks whole at once.
  t.memory[MemCategory::Params] += d.e * (d.zero_stage == 3 && !d.zero_params.empty() ? d.shard + d.zero_gathered : P);
  // ZeRO-2: the accumulator of the rank's slices, and one block's whole gradients at a time.
  // ZeRO-1 with overlap_grad_reduce: the buckets' reduce-scatter results too (the range).
  // ZeRO-2/3 with overlap_grad_reduce: two consecutive blocks' whole gradients.
  const int64_t whole = d.overlap_grad_reduce ? d.zero_pair_grads : d.zero_block_grads;
  t.memory[MemCategory::Grads] += Dims::fp * (d.zero_params.empty() ? P : d.shard + whole);
  if (d.zero_stage == 1 && d.overlap_grad_reduce && d.d * d.c > 1) t.memory[MemCategory::Grads] += Dims::fp * d.shard;
  // (+ master) + m + v: whole, or this rank's range of them (ZeRO-1)
  t.memory[MemCategory::Optimizer] += (d.e == Dims::fp ? 2 : 3) * Dims::fp * (d.zero ? d.shard : d.params_local);
}

}  // namespace pb
