/* Stage partitioning (optimized/train/pp_partition.h): the partitioner's split is optimal
 * (its largest stage cost equals the brute-force minimum over every contiguous split with
 * >= 1 layer per stage, for random costs, and its sum of squared stage costs the least
 * among those), Megatron-LM's first / last rank counts (also
 * with virtual stages), the analytic layer costs, the stage weights, and one-line errors
 * for splits that do not cover the layers. */
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <random>

#include "optimized/train/pp_partition.h"
#include "reference/common/error.h"
#include "error_of.h"
#include "reference/model/flops.h"

namespace pb::pp {
namespace {

using test::error_of;

double largest(const LayerCosts& c, const std::vector<int64_t>& split) {
  const auto sc = stage_costs(c, split);
  return *std::max_element(sc.begin(), sc.end());
}

double squares(const LayerCosts& c, const std::vector<int64_t>& split) {
  double q = 0;
  for (const double x : stage_costs(c, split)) q += x * x;
  return q;
}

// The least largest stage cost over every contiguous split of L layers into S stages, and
// the least sum of squared stage costs among the splits that reach it.
std::pair<double, double> brute_force(const LayerCosts& c, int S) {
  const int L = int(c.layer.size());
  double best = 1e300, best_sq = 1e300;
  std::vector<int64_t> split;
  std::function<void(int, int)> walk = [&](int stage, int left) {
    if (stage == S - 1) {
      if (left < 1) return;
      split.push_back(left);
      const double x = largest(c, split), q = squares(c, split);
      if (x < best || (x == best && q < best_sq)) best = x, best_sq = q;
      split.pop_back();
      return;
    }
    for (int n = 1; n <= left - (S - 1 - stage); ++n) {
      split.push_back(n);
      walk(stage + 1, left - n);
      split.pop_back();
    }
  };
  walk(0, L);
  return {best, best_sq};
}

TEST(PpPartition, BalancedSplitIsOptimalAndTheMostEvenOfTheOptimal) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> cost(0.1, 3.0);
  for (int trial = 0; trial < 200; ++trial) {
    LayerCosts c;
    const int L = 2 + int(rng() % 9), S = 1 + int(rng() % std::min(L, 5));
    for (int l = 0; l < L; ++l) c.layer.push_back(std::round(cost(rng) * 8) / 8);
    c.head = trial % 3 == 0 ? 0.0 : std::round(cost(rng) * 8) / 8;
    c.embed = trial % 4 == 0 ? std::round(cost(rng) * 8) / 8 : 0.0;
    const auto split = balanced_split(c, S);
    EXPECT_NO_THROW(check_split(split, L, S));
    const auto [most, sq] = brute_force(c, S);
    EXPECT_EQ(largest(c, split), most) << "L=" << L << " S=" << S << " split " << split_str(split);
    EXPECT_DOUBLE_EQ(squares(c, split), sq) << "L=" << L << " S=" << S << " split " << split_str(split);
  }
}

TEST(PpPartition, BalancedSplitGivesTheHeadsStageFewerLayers) {
  // 8 equal layers, a head worth two layers, 4 stages: the largest stage costs 3 at best
  // (the last stage 1 layer + the head); among such splits the partitioner takes the one
  // with the least sum of squared stage costs (3, 2, 2, 1 and 2, 3, 2, 1 against 3, 3, 1, 1),
  // ties going to the earliest stages' being fullest.
  LayerCosts c;
  c.layer.assign(8, 1.0);
  c.head = 2.0;
  EXPECT_EQ(balanced_split(c, 4), (std::vector<int64_t>{3, 2, 2, 1}));
  c.head = 0.0;
  EXPECT_EQ(balanced_split(c, 4), (std::vector<int64_t>{2, 2, 2, 2}));
  EXPECT_EQ(balanced_split(c, 1), (std::vector<int64_t>{8}));
}

TEST(PpPartition, MegatronFirstAndLastRankLayers) {
  Placement pl;
  pl.p = 4;
  EXPECT_EQ(megatron_split(pl, 16, 3, 3), (std::vector<int64_t>{3, 5, 5, 3}));
  EXPECT_EQ(megatron_split(pl, 16, 1, 0), (std::vector<int64_t>{1, 5, 5, 5}));
  EXPECT_EQ(megatron_split(pl, 16, 0, 4), (std::vector<int64_t>{4, 4, 4, 4}));
  pl.p = 2, pl.v = 2;  // interleaved: stages 0, 2 on rank 0; 1, 3 on rank 1
  EXPECT_EQ(megatron_split(pl, 16, 6, 0), (std::vector<int64_t>{3, 5, 3, 5}));
  pl.vshape = true;  // V: stages 0, 3 on rank 0; 1, 2 on rank 1
  EXPECT_EQ(megatron_split(pl, 16, 6, 0), (std::vector<int64_t>{3, 5, 5, 3}));
}

TEST(PpPartition, AnalyticCostsAndWeights) {
  ref::ModelConfig mc = ref::ModelConfig::dense(32, 8, 4, 48, 512, 4);
  const LayerCosts c = analytic_layer_costs(mc, 16);
  ASSERT_EQ(c.layer.size(), 4u);
  for (const double x : c.layer) EXPECT_EQ(x, 3.0 * ref::layer_forward_flops_per_token(mc, 0, 16));
  EXPECT_EQ(c.head, 3.0 * 2.0 * 512 * 32);
  EXPECT_EQ(c.embed, 0.0);
  double sum = c.head;
  for (const double x : c.layer) sum += x;
  EXPECT_DOUBLE_EQ(sum, ref::train_flops_per_token(mc, 16));
  LayerCosts unit;
  unit.layer.assign(6, 1.0);
  unit.head = 1.5;
  EXPECT_EQ(stage_weights(unit, {2, 2, 2}), (std::vector<int64_t>{8, 8, 14}));
}

TEST(PpPartition, BadSplitsAreOneLine) {
  Placement pl;
  pl.p = 4;
  LayerCosts c;
  c.layer.assign(3, 1.0);
  for (const auto& [msg, f] : std::vector<std::pair<std::string, std::function<void()>>>{
           {"covers 7 layers, the model has 8", [] { check_split(std::vector<int64_t>{2, 2, 2, 1}, 8, 4); }},
           {"stage 2 holds 0 layers", [] { check_split(std::vector<int64_t>{4, 4, 0, 0}, 8, 4); }},
           {"3 stage(s) given (2, 3, 3) for 4 pipeline stages", [] { check_split(std::vector<int64_t>{2, 3, 3}, 8, 4); }},
           {"do not split evenly over the other 2 rank(s)", [&] { megatron_split(pl, 16, 3, 2); }},
           {"exceed the model's 4 layers", [&] { megatron_split(pl, 4, 3, 2); }},
           {"3 layers cannot fill 4 stages", [&] { balanced_split(c, 4); }},
           {"stages do not divide 10 layers evenly", [] { uniform_split(10, 4); }},
       }) {
    const std::string e = error_of(f);
    EXPECT_NE(e.find(msg), std::string::npos) << msg << " -- " << e;
    EXPECT_EQ(e.find('\n'), std::string::npos);
  }
  Placement iv;
  iv.p = 2, iv.v = 2;
  EXPECT_NE(error_of([&] { megatron_split(iv, 16, 5, 0); }).find("rank 0's 5 layers do not split over its 2 chunks"),
            std::string::npos);
}

}  // namespace
}  // namespace pb::pp
