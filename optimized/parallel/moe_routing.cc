/* Routing plans and the routing log (see moe_routing.h). */
#include "optimized/parallel/moe_routing.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace pb {

int64_t expert_capacity(int64_t T, int64_t E, int64_t K, double cf) {
  return int64_t(std::ceil(double(T * K) / double(E) * cf));
}

RoutingPlan plan_routing(std::vector<int64_t> idx, std::vector<float> weight, int64_t T, int64_t E, int64_t K,
                         std::optional<double> cf) {
  RoutingPlan p;
  p.T = T, p.E = E, p.K = K;
  p.idx = std::move(idx);
  p.weight = std::move(weight);
  p.kept.assign(size_t(T * K), 1);
  p.count.assign(size_t(E), 0);
  for (const int64_t e : p.idx) ++p.count[size_t(e)];
  if (cf) {
    const int64_t cap = expert_capacity(T, E, K, *cf);
    std::vector<std::vector<int64_t>> of(static_cast<size_t>(E));  // copies per expert, in (t, k) order
    for (int64_t c = 0; c < T * K; ++c) of[size_t(p.idx[size_t(c)])].push_back(c);
    for (auto& copies : of) {
      if (int64_t(copies.size()) <= cap) continue;
      // Largest weight first; equal weights keep (t, k) order: the lower token first.
      std::stable_sort(copies.begin(), copies.end(),
                       [&](int64_t a, int64_t b) { return p.weight[size_t(a)] > p.weight[size_t(b)]; });
      for (size_t i = size_t(cap); i < copies.size(); ++i) p.kept[size_t(copies[i])] = 0;
    }
  }
  p.kept_count.assign(size_t(E), 0);
  for (int64_t c = 0; c < T * K; ++c) {
    if (p.kept[size_t(c)])
      ++p.kept_count[size_t(p.idx[size_t(c)])];
    else
      ++p.dropped;
  }
  return p;
}

int64_t RoutingRecord::sent_total() const { return std::accumulate(sent.begin(), sent.end(), int64_t(0)); }
int64_t RoutingRecord::recv_total() const { return std::accumulate(recv.begin(), recv.end(), int64_t(0)); }

RoutingLog& RoutingLog::get() {
  static RoutingLog log;
  return log;
}

RoutingRecord& RoutingLog::add(int64_t layer) {
  const int64_t mb = seen_[{step_, layer}]++;
  RoutingRecord& r = records_.emplace_back();
  r.step = step_;
  r.mb = mb;
  r.layer = layer;
  return r;
}

}  // namespace pb
