/* Sizes at the edge of what can be counted (harness/size_check.h, reference/model/sizes.h):
 * growing one size at a time by doubling, every case the bound accepts predicts memory and
 * communication figures that are non-negative, grow with the size, and whose rows hold
 * bytes == calls x bytes per call, on every pipeline stage (dp2 x tp2 + sp, pp2 gpipe); the
 * first case past the bound is refused with one line naming the case. The memory fit says
 * the need, its largest parts and what the machine has. */
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <string>

#include "harness/analytic.h"
#include "harness/case.h"
#include "harness/size_check.h"
#include "reference/common/error.h"
#include "reference/model/sizes.h"

namespace pb::test {

using harness::Case;
using harness::Prediction;

Case base_case(int pp) {
  Case c;
  c.name = "edge";
  c.model = ref::ModelConfig::dense(16, 4, 2, 24, 32, 2);
  c.train.micro_batch_size = 2, c.train.seq_length = 8, c.train.num_micro_batches = 2, c.train.steps = 2;
  c.layout.dp = 2, c.layout.tp = 2, c.layout.pp = pp;
  c.features = {"sp"};
  c.schedule = "gpipe";
  return c;
}

// Every figure of every stage, keyed by what it is.
std::map<std::string, long double> figures(const Case& c) {
  std::map<std::string, long double> f;
  for (int s = 0; s < c.layout.pp; ++s) {
    const Prediction p = harness::predict(c, s);
    const std::string st = "stage" + std::to_string(s) + " ";
    f[st + "params_local"] = p.params_local;
    for (const auto& [cat, bytes] : p.memory) f[st + category_name(cat)] = bytes;
    for (const auto& r : p.comm) {
      const std::string key = st + r.group + " " + comm_op_name(r.op) + " " + phase_name(r.phase) + " " +
                              std::to_string(r.bytes_per_call());
      EXPECT_EQ((long double)r.bytes, (long double)r.calls * (long double)r.bytes_per_call()) << key;
      f[key + " bytes"] += r.bytes;
      f[key + " calls"] += r.calls;
    }
  }
  return f;
}

void grow_until_refused(const std::string& what, int pp, const std::function<void(Case&)>& twice) {
  Case c = base_case(pp);
  std::map<std::string, long double> last = figures(c);
  for (int i = 0; i < 200; ++i) {
    Case next = c;
    twice(next);
    try {
      harness::check_case_sizes(next);
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.rfind("case edge: ", 0), 0u) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
      EXPECT_GT(i, 3) << what << ": refused too early: " << msg;
      return;
    }
    const std::map<std::string, long double> f = figures(next);
    for (const auto& [key, v] : f) {
      EXPECT_GE(v, 0) << what << " x2^" << i + 1 << ": " << key;
      auto it = last.find(key);
      if (it != last.end() && key.find("bytes_per_call") == std::string::npos) {
        EXPECT_GE(v, it->second) << what << " x2^" << i + 1 << ": " << key << " shrank";
      }
    }
    c = next, last = f;
  }
  ADD_FAILURE() << what << ": never refused";
}

TEST(SizeCheck, FiguresStayExactUpToTheBound) {
  for (int pp : {1, 2}) {
    grow_until_refused("seq_length", pp, [](Case& c) { c.train.seq_length *= 2; });
    grow_until_refused("micro_batch_size", pp, [](Case& c) { c.train.micro_batch_size *= 2; });
    grow_until_refused("hidden_size", pp, [](Case& c) { c.model.hidden_size *= 2; });
    grow_until_refused("intermediate_size", pp, [](Case& c) { c.model.intermediate_size *= 2; });
    grow_until_refused("vocab_size", pp, [](Case& c) { c.model.vocab_size *= 2; });
    grow_until_refused("num_hidden_layers", pp, [](Case& c) { c.model.num_hidden_layers *= 2; });
    grow_until_refused("steps", pp, [](Case& c) { c.train.steps *= 2; });
  }
}

TEST(SizeCheck, CountsThatOnlyLengthenTheRun) {
  Case c = base_case(1);
  c.train.num_micro_batches = 1000001;
  EXPECT_THROW(harness::check_case_sizes(c), Error);
  c.train.num_micro_batches = 1000000;  // 10^6 per step
  c.train.steps = 5;                     // 5 steps x dp 2 x 10^6 = 10^7 passes: the limit
  EXPECT_NO_THROW(harness::check_case_sizes(c));
  c.train.steps = 6;
  EXPECT_THROW(harness::check_case_sizes(c), Error);
  c = base_case(1);
  c.model.num_hidden_layers = 100001;
  EXPECT_THROW(harness::check_case_sizes(c), Error);
}

TEST(SizeCheck, MemoryFitNamesTheNeedAndItsParts) {
  Case c = base_case(1);
  EXPECT_EQ(harness::memory_fit(c, 4, int64_t(1) << 40), "");  // a tiny case fits in 1 TiB
  EXPECT_EQ(harness::memory_fit(c, 4, -1), "");                  // unknown: nothing said
  c.model = ref::ModelConfig::dense(1 << 14, 16, 16, 1 << 16, 1 << 15, 8);
  const std::string line = harness::memory_fit(c, 4, int64_t(8) << 30);
  EXPECT_EQ(line.rfind("case edge: needs ", 0), 0u) << line;
  EXPECT_NE(line.find(" on this node (4 ranks, the most "), std::string::npos) << line;
  EXPECT_NE(line.find("optimizer"), std::string::npos) << line;
  EXPECT_NE(line.find("; this machine has 8.0 GiB available"), std::string::npos) << line;
  // The need is the four ranks' predicted totals plus the reference's bound.
  double ranks = 0;
  for (int r = 0; r < 4; ++r)
    for (const auto& [cat, b] : harness::predict(c, 0).memory) ranks += double(b);
  const double ref_bytes = ref::reference_bytes_lower_bound(c.model, c.train, 8) +
                           16.0 * double(harness::predict(c).params_total);
  EXPECT_NE(line.find("needs " + ref::human_bytes(ranks + ref_bytes) + " "), std::string::npos) << line;
  EXPECT_EQ(harness::memory_fit(c, 4, int64_t(ranks + ref_bytes) + 1), "");
}

}  // namespace pb::test
