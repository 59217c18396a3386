/* Sharded parameter registry and counter-based shard init (see dist_params.h). */
#include "optimized/model/dist_params.h"

#include <algorithm>
#include <cstring>

#include "optimized/core/device.h"
#include "optimized/core/fatal.h"
#include "optimized/comm/ledger.h"
#include "optimized/kernels/ops.h"
#include "optimized/parallel/process_grid.h"
#include "reference/common/error.h"
#include "reference/model/init.h"
#include "reference/model/params.h"

namespace pb {

// Element (i, j) of p's shard: the counter-based init of its global index (rows x cols into out).
static void init_shard(const ShardedParam& p, uint64_t seed, const ref::ModelConfig& mc, float* out) {
  for (int64_t i = 0; i < p.rows; ++i)
    for (int64_t j = 0; j < p.cols; ++j) {
      const uint64_t global = uint64_t((p.row0 + i) * p.global_cols + (p.col0 + j));
      out[i * p.cols + j] = float(ref::init_value(seed, p.name, global, p.is_norm, mc.initializer_range));
    }
}

DistParams::DistParams(const ref::ModelConfig& mc, int tp, int tp_rank, uint64_t seed, DType dtype,
                       const std::function<bool(const std::string&)>& keep, int ep, int ep_rank,
                       bool reuse_fp32_param, int shards, int shard_rank, bool offload, int zero_stage,
                       int64_t bucket_size, int expert_shards, int expert_shard_rank, const TpGrid& tp_grid)
    : reuse_(reuse_fp32_param && dtype == DType::BF16),
      offload_(offload),
      per_param_(zero_stage >= 2 && shards > 1),
      params_sharded_(zero_stage >= 3 && shards > 1),
      shards_(shards),
      shard_rank_(shard_rank),
      expert_shards_(expert_shards),
      expert_rank_(expert_shard_rank) {
  PB_REQUIRE(!(offload && reuse_), "offload with reuse_fp32_param: the master is in host memory, no device bytes "
                                   "to share with the weights");
  params_ = enumerate(mc, tp, tp_rank, keep, ep, ep_rank, tp_grid);
  if (tp_grid.kind == TpKind::OneD) {
    counts_replicated_ = tp_rank == 0;
  } else {
    const TpGrid::Coords c = tp_grid.coords(tp_rank);
    if (tp_grid.kind == TpKind::ThreeD)  // the norms replicated over the (i, j) plane
      counts_replicated_ = c.i == 0 && c.j == 0;
    else  // over the column group and the depth, which holds copies of everything
      counts_replicated_ = c.i == 0 && c.k == 0, counts_sharded_ = c.k == 0;
  }
  size_t n_dense = params_.size();
  for (const auto& p : params_) {
    if (p.is_norm) norm_numel_ += p.rows * p.cols;
    if (p.replicated) replicated_numel_ += p.rows * p.cols;
    if (p.is_expert) n_dense = std::min(n_dense, size_t(&p - params_.data()));
  }
  const bool has_experts = n_dense < params_.size();
  auto local_shape = [](const ShardedParam& p) { return std::vector<int64_t>{p.rows, p.cols}; };
  int64_t total = 0;
  for (const auto& p : params_) {
    const auto s = local_shape(p);
    total += s[0] * s[1];
  }
  if (per_param_) {  // ZeRO-2/3: the initial values, then the per-parameter layout (zero_shards.cc)
    std::vector<float> host(static_cast<size_t>(total));
    int64_t at = 0;
    for (const auto& p : params_) {
      init_shard(p, seed, mc, host.data() + at);
      at += p.rows * p.cols;
    }
    build_per_param(host, dtype);
    expert_offset_ = weights_.numel();
    return;
  }
  const bool zero = shards_ > 1;
  // The buckets (bucket_size elements or more; one without it, and the experts' one):
  // ZeRO-1's, each padded to a multiple of the shards, this rank owning one slice of each;
  // without sharding DP's, reduced one by one (param_layout.cc, model/grad_overlap.h).
  buckets_ = layout_buckets(params_, bucket_size, shards_, shard_rank_, zero ? expert_shards : 1,
                            zero ? expert_shard_rank : 0);
  total = 0;
  for (const auto& bk : buckets_) total += bk.padded;
  shard_ = 0;
  for (const auto& bk : buckets_) shard_ += bk.q;
  // The optimizer's fp32 state of n elements: on the device, or offloaded to the host.
  auto state = [&](int64_t n) {
    return offload_ ? Tensor::zeros({n}, MemCategory::Host, DType::F32, Device::CPU)
                    : Tensor::zeros({n}, MemCategory::Optimizer, DType::F32);
  };
  if (offload_) {  // the weights on the device; master, m, v and the gradients' copy on the host
    weights_ = Tensor::zeros({total}, MemCategory::Params, dtype);
    master_ = state(shard_);
    host_grads_ = state(shard_);
  } else if (zero && reuse_) {  // the slices' fp32 master: their bf16 weights and a residual buffer
    weights_ = Tensor::zeros({total}, MemCategory::Params, dtype);
    residual_ = Tensor::zeros({shard_}, MemCategory::Optimizer, DType::BF16);
  } else if (zero) {  // fp32: the master is the weights' slices themselves (no buffer)
    weights_ = Tensor::zeros({total}, MemCategory::Params, dtype);
    if (dtype != DType::F32) master_ = Tensor::zeros({shard_}, MemCategory::Optimizer, DType::F32);
  } else if (reuse_) {  // the bf16 weights: the second half of the master's bytes
    master_ = Tensor::empty({total}, MemCategory::Optimizer, DType::F32);
    weights_ = master_.reinterpret(DType::BF16, 2 * total, {total});
  } else {
    weights_ = Tensor::empty({total}, MemCategory::Params, dtype);
    master_ = dtype == DType::F32 ? weights_ : Tensor::empty({total}, MemCategory::Optimizer, DType::F32);
  }
  grads_ = Tensor::zeros({total}, MemCategory::Grads);
  m_ = state(shard_);
  v_ = state(shard_);
  std::vector<float> host(static_cast<size_t>(total), 0.0f);  // generated on the host, then copied to the device
  for (const auto& bk : buckets_) {
    int64_t off = bk.start;
    for (size_t i = bk.first; i < bk.last; ++i) {
      auto& p = params_[i];
      const auto s = local_shape(p);
      if (i == n_dense) expert_offset_ = off;
      p.offset = off;
      p.w = weights_.view(off, s);
      p.g = grads_.view(off, s);
      if (!zero) {  // ZeRO-1: the master, m and v cover this rank's slices only (no per-tensor views)
        p.master = master_.view(off, s);
        p.m = m_.view(off, s);
        p.v = v_.view(off, s);
      }
      init_shard(p, seed, mc, host.data() + off);
      off += s[0] * s[1];
    }
  }
  if (!has_experts) expert_offset_ = total;
  groups_ = expert_groups(params_);  // views of their experts' consecutive elements
  for (auto& g : groups_) g.w = weights_.view(g.offset, {g.rows, g.cols}), g.g = grads_.view(g.offset, {g.rows, g.cols});
  if (!zero && !offload_) {
    copy_bytes(master_.raw(), master_.device(), host.data(), Device::CPU, master_.bytes());
    master_to_weights();
    return;
  }
  // Sharded or offloaded: the whole weights from the host values (bf16 rounded on the host;
  // with reuse-fp32-param its split u = bits + 0x8000: the weight u >> 16 on every rank, the
  // residual u & 0xffff of this rank's slices), the master of this rank's slices.
  if (dtype == DType::F32) {
    copy_bytes(weights_.raw(), weights_.device(), host.data(), Device::CPU, size_t(total) * 4);
  } else {
    std::vector<uint16_t> b(static_cast<size_t>(total));
    for (int64_t i = 0; i < total; ++i) {
      uint32_t u;
      std::memcpy(&u, &host[size_t(i)], 4);
      b[size_t(i)] = reuse_ ? uint16_t((u + 0x8000u) >> 16) : float_to_bf16(host[size_t(i)]);
    }
    copy_bytes(weights_.raw(), weights_.device(), b.data(), Device::CPU, size_t(total) * 2);
  }
  for (const Slice& sl : slices()) {
    if (reuse_) {
      std::vector<uint16_t> r(static_cast<size_t>(sl.len));
      for (int64_t i = 0; i < sl.len; ++i) {
        uint32_t u;
        std::memcpy(&u, &host[size_t(sl.lo + i)], 4);
        r[size_t(i)] = uint16_t((u + 0x8000u) & 0xffffu);
      }
      Tensor res = residual_.view(sl.at, {sl.len});
      copy_bytes(res.raw(), res.device(), r.data(), Device::CPU, r.size() * 2);
    } else if (master_.defined()) {
      Tensor m = master_.view(sl.at, {sl.len});
      copy_bytes(m.raw(), m.device(), host.data() + sl.lo, Device::CPU, size_t(sl.len) * 4);
    }
  }
}

size_t DistParams::bucket_of(const ShardedParam& p) const {
  for (size_t k = 0; k < buckets_.size(); ++k)
    if (p.offset >= buckets_[k].start && p.offset < buckets_[k].start + buckets_[k].padded) return k;
  throw Error("no bucket holds " + p.name);
}

std::vector<DistParams::Slice> DistParams::slices() const {
  std::vector<Slice> out;
  for (const auto& bk : buckets_) out.push_back({bk.start + bk.rank * bk.q, bk.q, bk.at});
  return out;
}

Tensor DistParams::master_of(const Slice& sl) {
  if (master_.defined()) return master_.view(sl.at, {sl.len});
  return weights_.view(sl.lo, {sl.len});  // fp32 under ZeRO-1: the weights themselves
}

std::vector<float> DistParams::master_shard_values() const {
  std::vector<float> out(static_cast<size_t>(shard_));
  for (const Slice& sl : slices()) {
    float* o = out.data() + sl.at;
    if (!residual_.defined()) {
      const Tensor m = const_cast<DistParams*>(this)->master_of(sl);
      copy_bytes(o, Device::CPU, m.raw(), m.device(), size_t(sl.len) * 4);
      continue;
    }
    const std::vector<float> v = join_halves(weights_.view(sl.lo, {sl.len}), residual_.view(sl.at, {sl.len}));
    std::copy(v.begin(), v.end(), o);
  }
  return out;
}

std::vector<float> DistParams::join_halves(const Tensor& hi, const Tensor& lo) {
  std::vector<uint16_t> h(static_cast<size_t>(hi.numel())), l(h.size());
  copy_bytes(h.data(), Device::CPU, hi.raw(), hi.device(), h.size() * 2);
  copy_bytes(l.data(), Device::CPU, lo.raw(), lo.device(), l.size() * 2);
  std::vector<float> out(h.size());
  for (size_t i = 0; i < h.size(); ++i) {
    const uint32_t bits = ((uint32_t(h[i]) << 16) | uint32_t(l[i])) - 0x8000u;
    std::memcpy(&out[i], &bits, 4);
  }
  return out;
}

void DistParams::master_to_weights() {
  if (residual_.defined()) return;  // the sharded reuse step updates the halves in place
  PB_REQUIRE(!offload_, "master_to_weights: offloaded weights come back through the optimizer's transfers");
  if (reuse_)
    ops::fp32_to_bf16_residual(master_);
  else if (weights_.dtype() != DType::F32)
    ops::cast(weights_, master_);
}

void DistParams::master_to_fp32() {
  if (reuse_ && !residual_.defined()) ops::bf16_residual_to_fp32(master_);
}

std::vector<float> DistParams::master_values(const ShardedParam& p) const {
  const int64_t n = p.master.numel(), total = master_.numel();
  std::vector<float> out(static_cast<size_t>(n));
  if (!reuse_) {
    copy_bytes(out.data(), Device::CPU, p.master.raw(), p.master.device(), size_t(n) * 4);
    return out;
  }
  // Between steps the master holds [residuals | bf16].
  return join_halves(master_.reinterpret(DType::BF16, 2 * (total + p.offset), {n}),
                     master_.reinterpret(DType::BF16, 2 * p.offset, {n}));
}

bool DistParams::has(const std::string& name) const {
  for (const auto& p : params_)
    if (p.name == name) return true;
  return false;
}

ShardedParam& DistParams::get(const std::string& name) {
  for (auto& p : params_)
    if (p.name == name) return p;
  throw Error("no parameter named " + name);
}

Tensor DistParams::replicated_grads() { return grads_.view(0, {replicated_numel_}); }

ShardedParam& DistParams::expert_group(int64_t layer, const char* proj) {
  const std::string name = "model.layers." + std::to_string(layer) + ".block_sparse_moe.local_experts." + proj;
  for (auto& g : groups_)
    if (g.name == name) return g;
  throw Error("no experts of layer " + std::to_string(layer) + " (" + proj + ") on this rank");
}

ShardedParam& DistParams::group_of(const ShardedParam& expert) {
  const ExpertKey k = expert_key(expert.name);
  static const char* const kProj[] = {"w1", "w3", "w2"};
  return expert_group(k.layer, kProj[k.proj]);
}

void DistParams::zero_grads() { ops::zero(per_param_ ? grad_acc_ : grads_); }

namespace {

// The global [R, C] tensor from the t TP shards of p gathered in TP order (all, t x n).
std::vector<float> join_tp_shards(const ShardedParam& p, const std::vector<float>& all, int64_t n, int t) {
  const int64_t R = p.global_rows, C = p.global_cols;
  std::vector<float> out(size_t(R * C));
  if (p.dim == ShardDim::None) {
    std::copy(all.begin(), all.begin() + n, out.begin());  // replicated: shard 0
  } else if (p.dim == ShardDim::Rows) {
    std::copy(all.begin(), all.end(), out.begin());  // row blocks in TP order
  } else {
    const int64_t c = C / t;  // column blocks: shard r holds columns r*c .. r*c+c-1
    for (int r = 0; r < t; ++r)
      for (int64_t i = 0; i < R; ++i) std::copy_n(all.begin() + r * n + i * c, c, out.begin() + i * C + r * c);
  }
  return out;
}

// Moves a tensor held on rank `owner` of comm to rank 0 (nothing when owner is 0).
void owner_to_rank0(std::vector<float>& out, int owner, int rank, MPI_Comm comm) {
  if (owner == 0) return;
  if (rank == owner) MPI_CHECK(MPI_Send(out.data(), int(out.size()), MPI_FLOAT, 0, 7, comm));
  if (rank == 0) {
    int count = 0;
    MPI_Status st;
    MPI_CHECK(MPI_Probe(owner, 7, comm, &st));
    MPI_CHECK(MPI_Get_count(&st, MPI_FLOAT, &count));
    out.resize(size_t(count));
    MPI_CHECK(MPI_Recv(out.data(), count, MPI_FLOAT, owner, 7, comm, MPI_STATUS_IGNORE));
  }
}

}  // namespace

std::vector<float> DistParams::gather_global(const std::string& name, ParamPart part, ProcessGrid& grid,
                                             MPI_Comm comm) {
  int rank = 0;
  MPI_CHECK(MPI_Comm_rank(comm, &rank));
  const bool holds = has(name);
  // The readers: DP rank 0 of the stage; for an expert the first EP group (DP x CP
  // positions 0 .. EP-1), of which one EP rank holds it.
  const auto& l = grid.layout();
  const bool expert = expert_key(name).layer >= 0;
  const bool reader = holds && (expert ? (grid.cp_rank() + l.cp * grid.dp_rank()) / l.ep == 0 : grid.dp_rank() == 0);
  int owner = reader && grid.tp_rank() == 0 ? rank : -1;  // the highest of them: unique per name
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &owner, 1, MPI_INT, MPI_MAX, comm));
  PB_REQUIRE(owner >= 0, "no rank holds parameter ", name);
  std::vector<float> out, whole;
  if (holds && per_param_) {
    const ShardedParam& p = get(name);
    if (p.is_expert) {  // its group's slices, then its part of the group
      const ShardedParam& g = group_of(p);
      const std::vector<float> all = gather_slices(g, part, grid);
      const int64_t n = p.rows * p.cols, at = p.offset - g.offset;
      whole.assign(all.begin() + at, all.begin() + at + n);
    } else {
      whole = gather_slices(p, part, grid);
    }
  } else if (holds && shards_ > 1) {  // the distributed optimizer: p's bucket from its slices
    const Bucket* bk = &buckets_[bucket_of(get(name))];
    const Slice sl{bk->start + bk->rank * bk->q, bk->q, bk->at};
    std::vector<float> own(static_cast<size_t>(bk->q));
    if (part == ParamPart::Grad) {
      copy_bytes(own.data(), Device::CPU, grads_.view(sl.lo, {sl.len}).raw(), grads_.device(), own.size() * 4);
    } else {
      const std::vector<float> all_mine = master_shard_values();
      std::copy_n(all_mine.begin() + sl.at, sl.len, own.begin());
    }
    whole.assign(static_cast<size_t>(grads_.numel()), 0.0f);  // the bucket back in its place of the buffer
    MPI_CHECK(MPI_Allgather(own.data(), int(bk->q), MPI_FLOAT, whole.data() + bk->start, int(bk->q), MPI_FLOAT,
                            bk->expert ? grid.raw_expert_dp() : grid.raw_dp_cp()));
  }
  if (reader) {  // the TP shards of the reader to TP rank 0
    const ShardedParam& p = get(name);
    const int t = grid.layout().tp;
    std::vector<float> mine;
    if (per_param_) {
      mine = std::move(whole);
    } else if (shards_ > 1) {
      mine.assign(whole.begin() + p.offset, whole.begin() + p.offset + p.w.numel());
    } else if (part == ParamPart::Grad) {
      mine.resize(static_cast<size_t>(p.g.numel()));
      copy_bytes(mine.data(), Device::CPU, p.g.raw(), p.g.device(), mine.size() * 4);
    } else {
      mine = master_values(p);
    }
    const int64_t n = int64_t(mine.size());
    std::vector<float> all(grid.tp_rank() == 0 ? size_t(n * t) : 0);
    MPI_CHECK(MPI_Gather(mine.data(), int(n), MPI_FLOAT, all.data(), int(n), MPI_FLOAT, 0, grid.raw_tp()));
    if (p.dim == ShardDim::Block) {  // each block at its (row0, col0), from the copy that counts
      const int64_t at[3] = {p.row0, p.col0, (p.replicated ? counts_replicated_ : counts_sharded_) ? 1 : 0};
      std::vector<int64_t> where(grid.tp_rank() == 0 ? size_t(3 * t) : 0);
      MPI_CHECK(MPI_Gather(at, 3, MPI_INT64_T, where.data(), 3, MPI_INT64_T, 0, grid.raw_tp()));
      if (grid.tp_rank() == 0) {
        out.assign(size_t(p.global_rows * p.global_cols), 0.0f);
        for (int r = 0; r < t; ++r)
          if (where[size_t(3 * r + 2)])
            for (int64_t i = 0; i < p.rows; ++i)
              std::copy_n(all.begin() + r * n + i * p.cols, p.cols,
                          out.begin() + (where[size_t(3 * r)] + i) * p.global_cols + where[size_t(3 * r + 1)]);
      }
    } else if (grid.tp_rank() == 0) {
      out = join_tp_shards(p, all, n, t);
    }
  }
  owner_to_rank0(out, owner, rank, comm);
  return rank == 0 ? out : std::vector<float>();
}

}  // namespace pb
