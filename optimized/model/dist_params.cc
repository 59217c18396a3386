/* Sharded parameter registry and counter-based shard init (see dist_params.h). */
#include "optimized/model/dist_params.h"

#include "optimized/core/device.h"
#include "optimized/kernels/ops.h"
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

}  // namespace pb
