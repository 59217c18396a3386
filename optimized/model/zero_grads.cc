/* ZeRO-2's gradients around a block's backward (see zero_grads.h). */
#include "optimized/model/zero_grads.h"

#include "optimized/comm/communicator.h"
#include "optimized/kernels/ops.h"
#include "reference/common/error.h"

namespace pb {

void ShardedGrads::before(const std::vector<ShardedParam*>& params, int) {
  PB_REQUIRE(whole_.empty(), "ZeRO-2: a block's backward began before the last one's gradients were reduced");
  for (ShardedParam* p : params) {
    Tensor g = Tensor::zeros({p->padded}, MemCategory::Grads, DType::F32);  // (n')
    p->g = g.view(0, {p->rows, p->cols});
    whole_.emplace_back(p, g);
  }
}

ShardedGrads::~ShardedGrads() {
  try {
    drain();
  } catch (...) {  // a destructor must not throw
  }
}

void ShardedGrads::after(const std::vector<ShardedParam*>&, int) {
  std::vector<InFlight> started;
  for (auto& [p, g] : whole_) {
    p->g = Tensor();  // (the queued weight gradients of a split backward keep their own view)
    if (held_) {
      held_->emplace_back(p, std::move(g));
    } else if (overlap_) {
      sum_replicated(*p, g);
      started.push_back({p, g, group_of(*p).ireduce_scatter_in_place(g)});
    } else {
      reduce_one(*p, g);
    }
  }
  whole_.clear();
  drain();  // the previous block's, which ran under this block's backward
  in_flight_ = std::move(started);
}

void ShardedGrads::drain() {
  for (auto& f : in_flight_) {
    f.done->wait();
    const Communicator& group = group_of(*f.p);
    Tensor mine = params_.grad_accumulator().view(f.p->slice, {f.p->slice_len});
    ops::add_(mine, f.g.view(int64_t(group.rank()) * f.p->slice_len, {f.p->slice_len}));
  }
  in_flight_.clear();
}

void ShardedGrads::reduce(Held& held) {
  for (auto& [p, g] : held) reduce_one(*p, g);
  held.clear();
}

void ShardedGrads::sum_replicated(ShardedParam& p, Tensor& g) {
  if (p.replicated && tp_partial_) {  // SP: each TP rank saw N/TP rows of the norm's (router's) input
    Tensor whole = g.view(0, {p.rows * p.cols});
    tp_.all_reduce(whole);
  }
}

void ShardedGrads::reduce_one(ShardedParam& p, Tensor& g) {
  sum_replicated(p, g);
  Tensor part = Tensor::empty({p.slice_len}, MemCategory::CommBuffers, DType::F32);  // (q)
  group_of(p).reduce_scatter(part, g);
  Tensor mine = params_.grad_accumulator().view(p.slice, {p.slice_len});
  ops::add_(mine, part);
}

}  // namespace pb
