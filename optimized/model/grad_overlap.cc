/* Gradient reduction overlapped with the backward (see grad_overlap.h). */
#include "optimized/model/grad_overlap.h"

#include "reference/common/error.h"

namespace pb {

OverlappedGrads::OverlappedGrads(DistParams& params, Communicator& dp, Communicator& expert_dp, Communicator& tp,
                                 bool tp_partial, int64_t m)
    : params_(params), dp_(dp), expert_dp_(expert_dp), tp_(tp), tp_partial_(tp_partial), m_(m),
      filled_(params.buckets().size(), 0) {
  if (params.shards() > 1) reduced_ = Tensor::zeros({params.shard_size()}, MemCategory::Grads, DType::F32);
  const auto& all = params.all();
  for (const auto& b : params.buckets()) {  // its parameters' elements (the padding excluded)
    int64_t n = 0;
    for (size_t i = b.first; i < b.last; ++i) n += all[i].rows * all[i].cols;
    elements_.push_back(n);
  }
}

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
  const size_t k = params_.bucket_of(p);
  const auto& b = params_.buckets()[k];
  const int64_t n = p.rows * p.cols;
  PB_REQUIRE(p.offset + n <= b.start + b.padded, "overlap_grad_reduce: ", p.name, " crosses a bucket boundary");
  filled_[k] += n;
  PB_REQUIRE(filled_[k] <= elements_[k], "overlap_grad_reduce: a gradient of bucket ", k, " counted twice (", p.name,
             ")");
  if (filled_[k] == elements_[k]) start(k);
}

void OverlappedGrads::start(size_t k) {
  const auto& b = params_.buckets()[k];
  if (b.start == 0 && tp_partial_ && params_.replicated_numel() > 0) {  // SP: the replicated block, over TP first
    Tensor r = params_.replicated_grads();
    tp_.all_reduce(r);
  }
  Tensor g = params_.grad_buffer().view(b.start, {b.padded});
  Communicator& over = b.expert ? expert_dp_ : dp_;
  if (reduced_.defined()) {  // ZeRO-1: the rank's slice of the sum
    Tensor mine = reduced_.view(b.at, {b.q});
    requests_.push_back(over.ireduce_scatter(mine, g));
  } else {
    requests_.push_back(over.iall_reduce(g));
  }
}

bool OverlappedGrads::finish() {
  for (size_t k = 0; k < filled_.size(); ++k)
    PB_REQUIRE(filled_[k] == elements_[k], "overlap_grad_reduce: bucket ", k, " has ", filled_[k], " of its ",
               elements_[k], " gradient elements at the step");
  for (auto& r : requests_) r->wait();
  requests_.clear();
  std::fill(filled_.begin(), filled_.end(), 0);
  return true;
}

}  // namespace pb
