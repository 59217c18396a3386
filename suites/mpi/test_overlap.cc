/* Communication overlap (optimized/core/timeline.h): every case's results carry each
 * rank's communication time, the part its compute thread waited on, the hidden fraction
 * and the ranks' timelines of the last step. A case with only blocking collectives hides
 * nothing; ZeRO-3's prefetched gathers run on the communicator's thread while blocks
 * compute (a structural check of the spans, not a speed threshold). */
#include <gtest/gtest.h>
#include <mpi.h>

#include "case_expect.h"
#include "mpi_test_util.h"

#include "harness/runner.h"

namespace pb::test {

using harness::Case;

static ref::ModelConfig dense(int64_t L) { return ref::ModelConfig::dense(16, 4, 2, 24, 32, L); }

// The spans of rank r in the trace: (kind, start, end) in microseconds.
struct Ev {
  std::string cat;
  double start, end;
};
static std::vector<Ev> events_of(const nlohmann::json& overlap, int r) {
  std::vector<Ev> out;
  for (const auto& e : overlap["trace"]["traceEvents"])
    if (e["pid"] == r) out.push_back({e["cat"], e["ts"].get<double>(), e["ts"].get<double>() + e["dur"].get<double>()});
  return out;
}

TEST(Overlap, BlockingCollectivesHideNothing) {
  const int n = world_size();
  Case c = small_case("dp_tp", dense(2), {}, n / 2, 2);  // TP + SP and DP: blocking collectives only
  const auto o = harness::run_case(c, MPI_COMM_WORLD, {});
  if (world_rank() != 0) return;
  const auto& ov = o.result["overlap"];
  ASSERT_EQ(int(ov["ranks"].size()), n);
  EXPECT_GT(ov["comm_ms"].get<double>(), 0);
  EXPECT_EQ(ov["exposed_ms"].get<double>(), ov["comm_ms"].get<double>());
  EXPECT_EQ(ov["hidden_fraction"].get<double>(), 0.0);
  for (int r = 0; r < n; ++r) {
    int compute = 0, comm = 0, async = 0;
    for (const Ev& e : events_of(ov, r)) {
      EXPECT_LE(e.start, e.end);
      compute += e.cat == "compute", comm += e.cat == "comm", async += e.cat == "comm_async";
    }
    // Every block's forward and backward per micro-batch, and the optimizer step.
    EXPECT_EQ(compute, int(c.train.num_micro_batches) * 2 * (2 * 2 + 2) + 1) << "rank " << r;
    EXPECT_GT(comm, 0) << "rank " << r;
    EXPECT_EQ(async, 0) << "rank " << r;
  }
}

TEST(Overlap, Zero3GathersRunWhileBlocksCompute) {
  const int n = world_size();
  Case c = small_case("zero3", dense(2), {"distributed_optimizer"}, n);
  c.zero_stage = 3;
  const auto o = harness::run_case(c, MPI_COMM_WORLD, {});
  if (world_rank() != 0) return;
  const auto& ov = o.result["overlap"];
  EXPECT_GT(ov["comm_ms"].get<double>(), 0);
  EXPECT_LE(ov["exposed_ms"].get<double>(), ov["comm_ms"].get<double>());
  for (int r = 0; r < n; ++r) {
    const auto ev = events_of(ov, r);
    int overlapping = 0;
    for (const Ev& a : ev)
      if (a.cat == "comm_async")
        for (const Ev& b : ev)
          if (b.cat == "compute" && a.start < b.end && b.start < a.end) ++overlapping;
    EXPECT_GT(overlapping, 0) << "rank " << r << ": no prefetched gather under a block's compute";
  }
}

}  // namespace pb::test
