/* Sharded parameter registry and counter-based shard init (see dist_params.h). */
#include "optimized/model/dist_params.h"

#include <algorithm>

#include "optimized/core/device.h"
#include "optimized/core/fatal.h"
#include "optimized/kernels/ops.h"
#include "optimized/parallel/process_grid.h"
#include "reference/common/error.h"
#include "reference/model/init.h"
#include "reference/model/params.h"

namespace pb {

DistParams::DistParams(const ref::ModelConfig& mc, int tp, int tp_rank, uint64_t seed, DType dtype,
                       const std::function<bool(const std::string&)>& keep) {
  // The global shapes and names come from the reference's own parameter list.
  const auto shapes = ref::zero_params<float>(mc);
  std::vector<ShardedParam> norms, sharded;
  ref::for_each_param(shapes, [&](const std::string& name, const ref::Mat<float>& m, bool is_vector) {
    if (keep && !keep(name)) return;
    ShardedParam p;
    p.name = name;
    p.global_rows = m.rows();
    p.global_cols = m.cols();
    p.is_norm = is_vector;
    const bool by_cols = name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight");
    p.dim = is_vector ? ShardDim::None : by_cols ? ShardDim::Cols : ShardDim::Rows;
    if (p.dim == ShardDim::Rows) {
      PB_REQUIRE(m.rows() % tp == 0, "tp ", tp, " does not divide the rows of ", name);
      p.row0 = m.rows() / tp * tp_rank;
    }
    if (p.dim == ShardDim::Cols) {
      PB_REQUIRE(m.cols() % tp == 0, "tp ", tp, " does not divide the columns of ", name);
      p.col0 = m.cols() / tp * tp_rank;
    }
    (is_vector ? norms : sharded).push_back(std::move(p));
  });
  params_ = std::move(norms);
  for (auto& p : params_) replicated_numel_ += p.global_cols;
  for (auto& p : sharded) params_.push_back(std::move(p));

  auto local_shape = [&](const ShardedParam& p) {
    return std::vector<int64_t>{p.dim == ShardDim::Rows ? p.global_rows / tp : p.global_rows,
                                p.dim == ShardDim::Cols ? p.global_cols / tp : p.global_cols};
  };
  int64_t total = 0;
  for (const auto& p : params_) {
    const auto s = local_shape(p);
    total += s[0] * s[1];
  }
  weights_ = Tensor::empty({total}, MemCategory::Params, dtype);
  master_ = dtype == DType::F32 ? weights_ : Tensor::empty({total}, MemCategory::Optimizer, DType::F32);
  grads_ = Tensor::zeros({total}, MemCategory::Grads);
  m_ = Tensor::zeros({total}, MemCategory::Optimizer);
  v_ = Tensor::zeros({total}, MemCategory::Optimizer);
  std::vector<float> host(static_cast<size_t>(total));  // generated on the host, then copied to the device
  int64_t off = 0;
  for (auto& p : params_) {
    const auto s = local_shape(p);
    p.w = weights_.view(off, s);
    p.master = master_.view(off, s);
    p.g = grads_.view(off, s);
    p.m = m_.view(off, s);
    p.v = v_.view(off, s);
    float* w = host.data() + off;
    off += s[0] * s[1];
    for (int64_t i = 0; i < s[0]; ++i)
      for (int64_t j = 0; j < s[1]; ++j) {
        const uint64_t global = uint64_t((p.row0 + i) * p.global_cols + (p.col0 + j));
        w[i * s[1] + j] = float(ref::init_value(seed, p.name, global, p.is_norm, mc.initializer_range));
      }
  }
  copy_bytes(master_.raw(), master_.device(), host.data(), Device::CPU, master_.bytes());
  master_to_weights();
}

void DistParams::master_to_weights() {
  if (weights_.dtype() != DType::F32) ops::cast(weights_, master_);
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

void DistParams::zero_grads() { ops::zero(grads_); }

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
  int owner = holds && grid.dp_rank() == 0 && grid.tp_rank() == 0 ? rank : -1;  // unique: TP 0, DP 0
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &owner, 1, MPI_INT, MPI_MAX, comm));
  PB_REQUIRE(owner >= 0, "no rank holds parameter ", name);
  std::vector<float> out;
  if (holds && grid.dp_rank() == 0) {  // the TP shards of DP rank 0 to TP rank 0
    const ShardedParam& p = get(name);
    const Tensor& local = part == ParamPart::Grad ? p.g : p.master;
    const int t = grid.layout().tp;
    const int64_t n = local.numel();
    std::vector<float> all(grid.tp_rank() == 0 ? size_t(n * t) : 0);
    const Tensor host = local.device() == Device::CPU ? local : to_device(local, Device::CPU);
    MPI_CHECK(MPI_Gather(host.f32(), int(n), MPI_FLOAT, all.data(), int(n), MPI_FLOAT, 0, grid.raw_tp()));
    if (grid.tp_rank() == 0) out = join_tp_shards(p, all, n, t);
  }
  owner_to_rank0(out, owner, rank, comm);
  return rank == 0 ? out : std::vector<float>();
}

}  // namespace pb
