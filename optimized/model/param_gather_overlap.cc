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
  const auto& buckets = params_.buckets();
  for (size_t k = 0; k < buckets.size(); ++k)
    if (p.offset >= buckets[k].start && p.offset < buckets[k].start + buckets[k].padded) {
      if (pending_[k]) {
        pending_[k]->wait();
        pending_[k].reset();
      }
      PB_REQUIRE(!pending_[k], "overlap_param_gather: ", p.name, " read while its bucket is in flight");
      return p.w;
    }
  throw Error("overlap_param_gather: " + p.name + " is in no bucket");
}

int64_t OverlappedGather::in_flight() const {
  int64_t n = 0;
  for (const auto& r : pending_) n += r ? 1 : 0;
  return n;
}

}  // namespace pb
