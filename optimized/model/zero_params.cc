/* ZeRO-3's gathered weights (see zero_params.h). */
#include "optimized/model/zero_params.h"

#include "reference/common/error.h"

namespace pb {

GatheredParams::~GatheredParams() {
  for (auto& [p, h] : held_)
    if (h.pending) h.pending->wait();  // never leave a collective behind
}

void GatheredParams::start(ShardedParam& p, bool async) {
  Held& h = held_[&p];
  h.whole = Tensor::empty({p.padded}, MemCategory::Params, params_.weight_buffer().dtype());  // (n')
  const Tensor mine = params_.weight_slice(p);
  Communicator& over = p.is_expert ? expert_shards_ : shards_;
  if (async)
    h.pending = over.iall_gather(h.whole, mine);
  else
    over.all_gather(h.whole, mine);
}

void GatheredParams::prefetch(const std::vector<ShardedParam*>& ps) {
  for (ShardedParam* p : ps)
    if (!held_.count(p)) start(*p, true);
}

const Tensor& GatheredParams::acquire(ShardedParam& p) {
  auto it = held_.find(&p);
  if (it == held_.end()) {
    start(p, false);
    it = held_.find(&p);
  }
  Held& h = it->second;
  if (h.pending) {
    h.pending->wait();
    h.pending.reset();
  }
  PB_REQUIRE(!p.w.defined(), "ZeRO-3: ", p.name, " acquired twice");
  p.w = h.whole.view(0, {p.rows, p.cols});
  return p.w;
}

void GatheredParams::release(ShardedParam& p) {
  const auto it = held_.find(&p);
  PB_REQUIRE(it != held_.end() && !it->second.pending, "ZeRO-3: ", p.name, " released without its acquire");
  p.w = Tensor();
  held_.erase(it);
}

}  // namespace pb
