/* ZeRO-2/3's per-parameter shards of DistParams (see dist_params.h; Rajbhandari et al.,
 * "ZeRO: Memory Optimizations Toward Training Trillion Parameter Models", arXiv 1910.02054):
 * each parameter of n elements is padded to n' = q d (d = DP x CP shards, q = ceil(n/d))
 * and rank r owns elements [r q, (r+1) q) of it; the shard buffers (the gradient
 * accumulator, the fp32 master in bf16, Adam's m and v) are the rank's slices in parameter
 * order, so the norm weights' and routers' slices come first (the norms not weight-decayed,
 * both counted once over TP). The local experts of a (layer, projection) are one unit
 * (DistParams::expert_groups: the grouped GEMMs read them as one tensor), sharded over
 * expert_dp like the distributed optimizer's expert bucket; their slices come last.
 * The weights stay whole (ZeRO-2), each parameter at its padded offset, or are the rank's
 * slices as well (ZeRO-3). */
#include <algorithm>
#include <cstring>

#include "optimized/core/device.h"
#include "optimized/core/fatal.h"
#include "optimized/model/dist_params.h"
#include "optimized/parallel/process_grid.h"
#include "reference/common/error.h"

namespace pb {

void DistParams::build_per_param(const std::vector<float>& host, DType dtype) {
  // The units in order (the dense parameters, then the expert groups), each with where its
  // values begin in `host` (the parameters' values in params_ order; a group's are its
  // experts', consecutive).
  groups_ = expert_groups(params_);
  std::vector<std::pair<ShardedParam*, int64_t>> units;
  {
    int64_t at = 0;
    for (auto& p : params_) {
      if (!p.is_expert)
        units.emplace_back(&p, at);
      else if (ShardedParam& g = group_of(p); units.empty() || units.back().first != &g)  // its first expert
        units.emplace_back(&g, at);
      at += p.rows * p.cols;
    }
  }
  int64_t off = 0, slice = 0;
  expert_slices_ = -1;
  for (auto& [u, at] : units) {
    const int sh = shards_of(*u);
    const int64_t n = u->rows * u->cols, q = (n + sh - 1) / sh;
    if (u->is_expert && expert_slices_ < 0) expert_slices_ = slice;
    u->padded = q * sh, u->slice_len = q;
    u->offset = off, u->slice = slice;
    off += u->padded, slice += q;
    if (u->replicated) replicated_slices_ += q;
  }
  if (expert_slices_ < 0) expert_slices_ = slice;
  for (auto& p : params_)  // an expert within its group
    if (p.is_expert) {
      const ShardedParam& g = group_of(p);
      p.offset = g.offset + (expert_key(p.name).expert % (g.rows / g.global_rows)) * p.rows * p.cols;
    }
  shard_ = slice;
  weights_ = Tensor::zeros({params_sharded_ ? shard_ : off}, MemCategory::Params, dtype);
  grad_acc_ = Tensor::zeros({shard_}, MemCategory::Grads, DType::F32);
  // The optimizer's fp32 state of the slices: on the device, or offloaded to the host.
  auto state = [&] {
    return offload_ ? Tensor::zeros({shard_}, MemCategory::Host, DType::F32, Device::CPU)
                    : Tensor::zeros({shard_}, MemCategory::Optimizer, DType::F32);
  };
  if (offload_) {  // master, m, v and the reduced gradients' copy on the host
    master_ = state();
    host_grads_ = state();
  } else if (reuse_) {  // the slices' master: their bf16 weights and a buffer of low halves
    residual_ = Tensor::zeros({shard_}, MemCategory::Optimizer, DType::BF16);
  } else if (dtype != DType::F32) {
    master_ = state();
  }
  m_ = state();
  v_ = state();
  // The weights (whole, or this rank's slices; bf16 rounded on the host, with
  // reuse-fp32-param the high half of u = bits + 0x8000 and its low half the residual) and
  // this rank's slices of the master.
  std::vector<float> w(static_cast<size_t>(off), 0.0f), mine(static_cast<size_t>(shard_), 0.0f);
  for (const auto& [u, at] : units) {
    const int64_t n = u->rows * u->cols;
    std::copy_n(host.begin() + at, n, w.begin() + u->offset);
    for (int64_t i = 0; i < u->slice_len; ++i) {
      const int64_t e = rank_of(*u) * u->slice_len + i;
      if (e < n) mine[size_t(u->slice + i)] = host[size_t(at + e)];
    }
  }
  if (!params_sharded_) {  // ZeRO-2: views of the whole weights (an expert's in its group's)
    for (auto& p : params_) p.w = weights_.view(p.offset, {p.rows, p.cols});
    for (auto& g : groups_) g.w = weights_.view(g.offset, {g.rows, g.cols});
  }
  if (params_sharded_) w = mine;
  auto bits = [](float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    return u + 0x8000u;
  };
  if (dtype == DType::F32) {
    copy_bytes(weights_.raw(), weights_.device(), w.data(), Device::CPU, w.size() * 4);
  } else {
    std::vector<uint16_t> b(w.size());
    for (size_t i = 0; i < w.size(); ++i) b[i] = reuse_ ? uint16_t(bits(w[i]) >> 16) : float_to_bf16(w[i]);
    copy_bytes(weights_.raw(), weights_.device(), b.data(), Device::CPU, b.size() * 2);
  }
  if (master_.defined()) copy_bytes(master_.raw(), master_.device(), mine.data(), Device::CPU, mine.size() * 4);
  if (residual_.defined()) {
    std::vector<uint16_t> r(mine.size());
    for (size_t i = 0; i < r.size(); ++i) r[i] = uint16_t(bits(mine[i]) & 0xffffu);
    copy_bytes(residual_.raw(), residual_.device(), r.data(), Device::CPU, r.size() * 2);
  }
}

Tensor DistParams::weight_slice(const ShardedParam& p) {
  if (params_sharded_) return weights_.view(p.slice, {p.slice_len});
  return weights_.view(p.offset + rank_of(p) * p.slice_len, {p.slice_len});
}

std::vector<ShardedParam*> DistParams::zero_units() {
  std::vector<ShardedParam*> out;
  for (auto& p : params_)
    if (!p.is_expert) out.push_back(&p);
  for (auto& g : groups_) out.push_back(&g);
  return out;
}

Tensor DistParams::master_slice(const ShardedParam& p) {
  PB_REQUIRE(!residual_.defined(), "reuse_fp32_param: ", p.name, "'s master is its weights and residual halves");
  if (master_.defined()) return master_.view(p.slice, {p.slice_len});
  return weight_slice(p);  // fp32: the weights themselves
}

// The whole (TP shard of the) unit from the slices of its DP x CP (experts: expert_dp) ranks.
std::vector<float> DistParams::gather_slices(const ShardedParam& p, ParamPart part, ProcessGrid& grid) {
  const int64_t q = p.slice_len;
  std::vector<float> own(static_cast<size_t>(q)), whole(static_cast<size_t>(q * shards_of(p)));
  if (part == ParamPart::Master && residual_.defined()) {
    own = join_halves(weight_slice(p), residual_.view(p.slice, {q}));
  } else {
    const Tensor src = part == ParamPart::Grad ? grad_acc_.view(p.slice, {q}) : master_slice(p);
    copy_bytes(own.data(), Device::CPU, src.raw(), src.device(), own.size() * 4);
  }
  MPI_CHECK(MPI_Allgather(own.data(), int(q), MPI_FLOAT, whole.data(), int(q), MPI_FLOAT,
                          p.is_expert ? grid.raw_expert_dp() : grid.raw_dp_cp()));
  whole.resize(static_cast<size_t>(p.rows * p.cols));
  return whole;
}

}  // namespace pb
