/* The parameter all-gather overlapped with the forward (see param_gather_overlap.h). */
#include "optimized/model/param_gather_overlap.h"

#include "reference/common/error.h"

namespace pb {

void OverlappedGather::gathering(size_t bucket, RequestPtr r) {
  PB_REQUIRE(bucket < pending_.size() && !pending_[bucket], "overlap_param_gather: bucket ", bucket,
             " gathered again before it was used");
  pending_[bucket] = std::move(r);
}

const Tensor& OverlappedGather::acquire(ShardedParam& p) {
  if (RequestPtr& r = pending_[params_.bucket_of(p)]) {  // its bucket's gather, complete before p is read
    r->wait();
    r.reset();
  }
  return p.w;
}

int64_t OverlappedGather::in_flight() const {
  int64_t n = 0;
  for (const auto& r : pending_) n += r ? 1 : 0;
  return n;
}

}  // namespace pb
