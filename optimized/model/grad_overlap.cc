/* Gradient reduction overlapped with the backward (see grad_overlap.h). */
#include "optimized/model/grad_overlap.h"

#include "reference/common/error.h"

namespace pb {

OverlappedGrads::OverlappedGrads(DistParams& params, Communicator& dp, Communicator& expert_dp, Communicator& tp,
                                 bool tp_partial, int64_t m)
    : params_(params), dp_(dp), expert_dp_(expert_dp), tp_(tp), tp_partial_(tp_partial), m_(m),
      filled_(params.buckets().size(), 0) {}

void OverlappedGrads::after(const std::vector<ShardedParam*>& params, int mb) {
  if (held_ || mb != m_ - 1) return;  // a split backward's gradients are complete after W
  for (const ShardedParam* p : params) count(*p);
}

void OverlappedGrads::weights_done(const std::vector<ShardedParam*>& params, int mb) {
  if (mb != m_ - 1) return;
  for (const ShardedParam* p : params) count(*p);
}

// p's elements (an expert group's: all its experts') in the bucket holding them.
void OverlappedGrads::count(const ShardedParam& p) {
  const auto& buckets = params_.buckets();
  for (size_t k = 0; k < buckets.size(); ++k) {
    const auto& b = buckets[k];
    if (p.offset < b.start || p.offset >= b.start + b.padded) continue;
    const int64_t n = p.rows * p.cols;
    PB_REQUIRE(p.offset + n <= b.start + b.padded, "overlap_grad_reduce: ", p.name, " crosses a bucket boundary");
    filled_[k] += n;
    PB_REQUIRE(filled_[k] <= b.padded, "overlap_grad_reduce: a gradient of bucket ", k, " counted twice (", p.name, ")");
    if (filled_[k] == b.padded) start(k);
    return;
  }
  throw Error("overlap_grad_reduce: " + p.name + " is in no bucket");
}

void OverlappedGrads::start(size_t k) {
  const auto& b = params_.buckets()[k];
  if (b.start == 0 && tp_partial_ && params_.replicated_numel() > 0) {  // SP: the replicated block, over TP first
    Tensor r = params_.replicated_grads();
    tp_.all_reduce(r);
  }
  Tensor g = params_.grad_buffer().view(b.start, {b.padded});
  requests_.push_back((b.expert ? expert_dp_ : dp_).iall_reduce(g));
}

bool OverlappedGrads::finish() {
  for (size_t k = 0; k < filled_.size(); ++k)
    PB_REQUIRE(filled_[k] == params_.buckets()[k].padded, "overlap_grad_reduce: bucket ", k, " has ", filled_[k],
               " of its ", params_.buckets()[k].padded, " gradient elements at the step");
  for (auto& r : requests_) r->wait();
  requests_.clear();
  std::fill(filled_.begin(), filled_.end(), 0);
  return true;
}

}  // namespace pb
