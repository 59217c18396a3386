/* Weight stashing of the asynchronous pipelines (see pp_async.h). */
#include "optimized/train/pp_async.h"

#include <algorithm>
#include <utility>

#include "optimized/kernels/ops.h"
#include "reference/common/error.h"

namespace pb {

WeightVersions::WeightVersions(Tensor weights, int every, std::function<void()> update,
                               std::function<void()> zero_grads)
    : w_(std::move(weights)), every_(every), update_(std::move(update)), zero_grads_(std::move(zero_grads)) {
  PB_REQUIRE(every_ >= 1, "weight versions: an update every ", every_, " micro-batches");
}

bool WeightVersions::in_flight(int v) const {
  return std::any_of(version_of_.begin(), version_of_.end(), [v](const auto& e) { return e.second == v; });
}

void WeightVersions::forward(int mb) {
  PB_REQUIRE(version_of_.emplace(mb, version_).second, "weight versions: micro-batch ", mb, " forward twice");
}

void WeightVersions::backward_begin(int mb) {
  const auto it = version_of_.find(mb);
  PB_REQUIRE(it != version_of_.end(), "weight versions: micro-batch ", mb, " backward before its forward");
  if (backwards_ > 0 && backwards_ % every_ == 0) zero_grads_();  // the previous update's are applied
  if (it->second != version_) ops::swap(w_, stash_.at(it->second));
}

void WeightVersions::backward_end(int mb) {
  const auto it = version_of_.find(mb);
  const int v = it->second;
  version_of_.erase(it);
  if (v != version_) {
    ops::swap(w_, stash_.at(v));
    if (!in_flight(v)) stash_.erase(v);  // its last micro-batch is done
  }
  if (++backwards_ % every_ != 0) return;
  // The update: the current version is kept for the micro-batches in flight that use it.
  if (in_flight(version_)) {
    Tensor copy = Tensor::empty(w_.shape(), MemCategory::Params, w_.dtype());
    ops::copy(copy, w_);
    stash_.emplace(version_, std::move(copy));
  }
  update_();
  ++version_;
  most_ = std::max(most_, int(stash_.size()) + 1);
}

void async_terms(const pp::Schedule& s, const Dims& d, Terms& t) {
  t.memory[MemCategory::Params] += d.e * d.params_local * (pp::weight_versions(s, d.pp_rank) - 1);
  t.call("tp", CommOp::AllReduce, Phase::Optimizer, d.steps * d.updates, 8, d.t);
  t.call("pp", CommOp::AllReduce, Phase::Optimizer, d.steps, 8, d.p);
}

}  // namespace pb
