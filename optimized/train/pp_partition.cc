/* Stage partitioning (see pp_partition.h). */
#include "optimized/train/pp_partition.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "reference/common/error.h"
#include "reference/model/flops.h"

namespace pb::pp {

LayerCosts analytic_layer_costs(const ref::ModelConfig& mc, int64_t seq_length) {
  LayerCosts c;
  for (int64_t l = 0; l < mc.num_hidden_layers; ++l)
    c.layer.push_back(3.0 * ref::layer_forward_flops_per_token(mc, l, seq_length));
  c.head = 3.0 * ref::head_forward_flops_per_token(mc);
  c.embed = 0;  // a lookup
  return c;
}

void check_split(const std::vector<int64_t>& layers, int64_t L, int S) {
  PB_REQUIRE(int64_t(layers.size()) == S, "pp_layers: ", layers.size(), " stage(s) given (", split_str(layers),
             ") for ", S, " pipeline stages (pp x vpp)");
  int64_t sum = 0;
  for (size_t s = 0; s < layers.size(); ++s) {
    PB_REQUIRE(layers[s] >= 1, "pp_layers: stage ", s, " holds ", layers[s], " layers (every stage needs >= 1)");
    sum += layers[s];
  }
  PB_REQUIRE(sum == L, "pp_layers: the split ", split_str(layers), " covers ", sum, " layers, the model has ", L);
}

std::vector<int64_t> uniform_split(int64_t L, int S) {
  PB_REQUIRE(S >= 1 && L % S == 0, "pipeline: ", S, " stages do not divide ", L, " layers evenly (give pp_layers)");
  return std::vector<int64_t>(size_t(S), L / S);
}

std::vector<int64_t> megatron_split(const Placement& pl, int64_t L, int64_t first, int64_t last) {
  const int p = pl.p, v = pl.v;
  PB_REQUIRE(first >= 0 && last >= 0, "pp_first_layers / pp_last_layers must be > 0, got ", first, " / ", last);
  PB_REQUIRE(p >= 2, "pp_first_layers / pp_last_layers need pp >= 2");
  std::vector<int64_t> per_rank(size_t(p), -1);
  int64_t rest = L;
  int middle = p;
  if (first > 0) per_rank[0] = first, rest -= first, --middle;
  if (last > 0) per_rank[size_t(p - 1)] = last, rest -= last, --middle;
  PB_REQUIRE(rest >= 0, "pp_first_layers ", first, " + pp_last_layers ", last, " exceed the model's ", L, " layers");
  PB_REQUIRE(middle > 0 ? rest % middle == 0 : rest == 0, "pipeline: the ", rest, " layers left after the first and "
             "last ranks' do not split evenly over the other ", middle, " rank(s)");
  for (auto& n : per_rank)
    if (n < 0) n = rest / middle;
  std::vector<int64_t> layers(size_t(pl.stages()));
  for (int s = 0; s < pl.stages(); ++s) {
    const int64_t n = per_rank[size_t(pl.rank_of(s))];
    PB_REQUIRE(n % v == 0, "pipeline: rank ", pl.rank_of(s), "'s ", n, " layers do not split over its ", v, " chunks");
    layers[size_t(s)] = n / v;
  }
  check_split(layers, L, pl.stages());
  return layers;
}

std::vector<double> stage_costs(const LayerCosts& c, const std::vector<int64_t>& layers) {
  std::vector<double> out;
  size_t l = 0;
  for (size_t s = 0; s < layers.size(); ++s) {
    double x = s == 0 ? c.embed : 0.0;
    for (int64_t k = 0; k < layers[s] && l < c.layer.size(); ++k) x += c.layer[l++];
    if (s + 1 == layers.size()) x += c.head;
    out.push_back(x);
  }
  return out;
}

// Two passes of dynamic programming over (stage s, layers 0..j-1 placed): the least largest
// stage cost B* (best[s][j] = min over i of max(best[s-1][i], cost(i..j-1))), then among the
// splits with every stage <= B* the least sum of squared stage costs (the most even of the
// optimal ones), ties going to the latest cut (the earliest stages the most layers). Stage
// 0 adds the embedding's cost, the last stage the head's.
std::vector<int64_t> balanced_split(const LayerCosts& c, int S) {
  const int64_t L = int64_t(c.layer.size());
  PB_REQUIRE(S >= 1 && L >= S, "pp_layers balanced: ", L, " layers cannot fill ", S, " stages (>= 1 layer each)");
  for (double x : c.layer) PB_REQUIRE(std::isfinite(x) && x >= 0, "pp_layers balanced: a layer cost ", x, " (>= 0)");
  PB_REQUIRE(std::isfinite(c.embed) && c.embed >= 0 && std::isfinite(c.head) && c.head >= 0,
             "pp_layers balanced: embedding / head costs must be >= 0");
  std::vector<double> prefix(size_t(L) + 1, 0.0);
  for (int64_t l = 0; l < L; ++l) prefix[size_t(l) + 1] = prefix[size_t(l)] + c.layer[size_t(l)];
  auto cost = [&](int s, int64_t i, int64_t j) {  // stage s holding layers i .. j-1
    return prefix[size_t(j)] - prefix[size_t(i)] + (s == 0 ? c.embed : 0.0) + (s == S - 1 ? c.head : 0.0);
  };
  constexpr double kInf = std::numeric_limits<double>::infinity();
  const size_t N = size_t(L) + 1;
  auto at = [&](int s, int64_t j) { return size_t(s) * N + size_t(j); };
  // Pass 1: the bottleneck.
  std::vector<double> best(size_t(S) * N, kInf);
  for (int64_t j = 1; j <= L; ++j) best[at(0, j)] = cost(0, 0, j);
  for (int s = 1; s < S; ++s)
    for (int64_t j = s + 1; j <= L; ++j)
      for (int64_t i = s; i < j; ++i) best[at(s, j)] = std::min(best[at(s, j)], std::max(best[at(s - 1, i)], cost(s, i, j)));
  const double bottleneck = best[at(S - 1, L)];
  // Pass 2: the least sum of squares with every stage within it.
  std::vector<double> sq(size_t(S) * N, kInf);
  std::vector<int64_t> cut(size_t(S) * N, -1);
  for (int64_t j = 1; j <= L; ++j)
    if (cost(0, 0, j) <= bottleneck) sq[at(0, j)] = cost(0, 0, j) * cost(0, 0, j);
  for (int s = 1; s < S; ++s)
    for (int64_t j = s + 1; j <= L; ++j)
      for (int64_t i = s; i < j; ++i) {
        const double x = cost(s, i, j);
        if (x > bottleneck || sq[at(s - 1, i)] == kInf) continue;
        const double total = sq[at(s - 1, i)] + x * x;
        if (total <= sq[at(s, j)]) sq[at(s, j)] = total, cut[at(s, j)] = i;  // ties: the latest cut
      }
  PB_REQUIRE(sq[at(S - 1, L)] < kInf, "pp_layers balanced: no split found (internal error)");
  std::vector<int64_t> layers(static_cast<size_t>(S), 0);
  int64_t j = L;
  for (int s = S - 1; s > 0; --s) {
    const int64_t i = cut[at(s, j)];
    layers[size_t(s)] = j - i;
    j = i;
  }
  layers[0] = j;
  check_split(layers, L, S);
  return layers;
}

std::vector<int64_t> stage_weights(const LayerCosts& c, const std::vector<int64_t>& layers) {
  double mean = 0;
  for (const double x : c.layer) mean += x / double(c.layer.size());
  const double unit = mean > 0 ? mean / 4.0 : 1.0;
  std::vector<int64_t> w;
  for (const double x : stage_costs(c, layers)) w.push_back(std::max<int64_t>(1, std::llround(x / unit)));
  return w;
}

std::string split_str(const std::vector<int64_t>& layers) {
  std::string s;
  for (const int64_t n : layers) s += (s.empty() ? "" : ", ") + std::to_string(n);
  return s.empty() ? "(none)" : s;
}

}  // namespace pb::pp
