/* Asynchronous communication on the MPI backend (optimized/comm/mpi_communicator.h): a
 * non-blocking all-reduce, all-gather and reduce-scatter progress on the communicator's
 * worker while the calling thread computes (measured spans intersect, and the call
 * completes before the computation ends, without the caller entering MPI); the results
 * equal the blocking calls' bit for bit; calls posted back to back complete correctly and
 * start in program order; the ledger counts equal the blocking calls'. Runs on 2 and 4
 * ranks (a group of one short-circuits). */
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <thread>

#include "mpi_test_util.h"

#include "optimized/comm/mpi_communicator.h"
#include "optimized/core/device.h"
#include "optimized/kernels/ops.h"

namespace pb::test {

namespace {

// Values whose sums are exact in fp32 in any order (multiples of 1/8 below 2^10), so that
// blocking and non-blocking reductions agree bit for bit whatever algorithm MPI picks.
Tensor exact(std::vector<int64_t> shape, int salt) {
  Tensor t = Tensor::empty(std::move(shape), MemCategory::CommBuffers);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = float((i * 37 + salt * 101) % 2048 - 1024) / 8.0f;
  return t;
}

Tensor nans(std::vector<int64_t> shape) {
  Tensor t = Tensor::empty(std::move(shape), MemCategory::CommBuffers);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = std::nanf("");
  return t;
}

Tensor clone(const Tensor& t) {
  Tensor c = Tensor::empty(t.shape(), MemCategory::CommBuffers);
  std::memcpy(c.raw(), t.raw(), t.bytes());
  return c;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.bytes() == b.bytes() && std::memcmp(a.raw(), b.raw(), a.bytes()) == 0;
}

struct Comm {
  MPI_Comm dup = [] {
    MPI_Comm c;
    MPI_Comm_dup(MPI_COMM_WORLD, &c);
    return c;
  }();
  MpiCommunicator mpi{"async", dup};
  Communicator& c = mpi;  // technique code sees the interface
};

// A computation on the calling thread that makes no MPI call: GEMMs for at least `ms`.
Span compute_for(double ms) {
  Tensor x = exact({64, 64}, 1), w = exact({64, 64}, 2), y = Tensor::empty({64, 64}, MemCategory::Activations);
  Span s{host_clock_ms(), 0};
  while (host_clock_ms() - s.start_ms < ms) ops::linear_forward(y, x, w);
  s.end_ms = host_clock_ms();
  return s;
}

// Rank 0 posts and computes; the other ranks post late, so the call cannot complete
// before they do, and rank 0's worker must progress it while rank 0 computes.
void expect_overlap(Communicator& c, const std::function<RequestPtr()>& post, const char* what) {
  const bool first = c.rank() == 0;
  c.barrier();  // a common start: "late" is late relative to rank 0's post
  if (!first) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  RequestPtr r = post();
  const Span work = first ? compute_for(250) : Span{};
  r->wait();
  if (!first) return;
  const Span comm = r->span();
  EXPECT_GT(comm.end_ms, comm.start_ms) << what;
  EXPECT_LT(comm.start_ms, work.end_ms) << what << ": the call started after the computation";
  EXPECT_LT(work.start_ms, comm.end_ms) << what << ": the spans do not intersect";
  EXPECT_LT(comm.end_ms, work.end_ms) << what << ": the call only completed when the caller waited";
}

}  // namespace

TEST(AsyncComm, AllReduceOverlapsComputeAndMatchesBlocking) {
  if (world_size() == 1) GTEST_SKIP() << "a group of one short-circuits";
  Comm g;
  const int r = g.c.rank();
  Tensor blocking = exact({1 << 14}, r), async = clone(blocking);
  g.c.all_reduce(blocking);
  expect_overlap(g.c, [&] { return g.c.iall_reduce(async); }, "iall_reduce");
  EXPECT_TRUE(same_bits(async, blocking));
}

TEST(AsyncComm, AllGatherAndReduceScatterOverlapComputeAndMatchBlocking) {
  if (world_size() == 1) GTEST_SKIP() << "a group of one short-circuits";
  Comm g;
  const int r = g.c.rank(), n = g.c.size();
  const Tensor in = exact({128, 32}, 3 + r), full = exact({n * 64, 16}, 7 + r);
  Tensor gathered = nans({n * 128, 32}), gathered_async = nans({n * 128, 32});
  Tensor mine = nans({64, 16}), mine_async = nans({64, 16});
  g.c.all_gather(gathered, in);
  g.c.reduce_scatter(mine, full);
  expect_overlap(g.c, [&] { return g.c.iall_gather(gathered_async, in); }, "iall_gather");
  expect_overlap(g.c, [&] { return g.c.ireduce_scatter(mine_async, full); }, "ireduce_scatter");
  EXPECT_TRUE(same_bits(gathered_async, gathered));
  EXPECT_TRUE(same_bits(mine_async, mine));
}

// Five calls posted back to back on one communicator (collectives and a ring exchange),
// waited in reverse order: each result is the blocking call's, and the worker started
// them in the order they were posted. A blocking call after them drains the worker.
TEST(AsyncComm, BackToBackCallsCompleteInOrder) {
  if (world_size() == 1) GTEST_SKIP() << "a group of one short-circuits";
  Comm g;
  const int r = g.c.rank(), n = g.c.size();
  Tensor a1 = exact({1000}, r), a2 = exact({333}, 5 * r + 1);
  const Tensor in = exact({17, 3}, r + 2), full = exact({n * 9, 4}, r + 4);
  Tensor out = nans({n * 17, 3}), part = nans({9, 4});
  const Tensor send = exact({21}, 100 + r);
  Tensor got = nans({21});
  Tensor ra1 = clone(a1), ra2 = clone(a2), rout = nans({n * 17, 3}), rpart = nans({9, 4}), rgot = nans({21});
  g.c.all_reduce(ra1);
  g.c.all_gather(rout, in);
  g.c.reduce_scatter(rpart, full);
  g.c.all_reduce(ra2);
  g.c.batch_p2p({{false, &rgot, (r + n - 1) % n}, {true, const_cast<Tensor*>(&send), (r + 1) % n}});

  std::vector<RequestPtr> reqs;
  reqs.push_back(g.c.iall_reduce(a1));
  reqs.push_back(g.c.iall_gather(out, in));
  reqs.push_back(g.c.ireduce_scatter(part, full));
  reqs.push_back(g.c.iall_reduce(a2));
  reqs.push_back(g.c.irecv(got, (r + n - 1) % n));
  reqs.push_back(g.c.isend(send, (r + 1) % n));
  for (auto it = reqs.rbegin(); it != reqs.rend(); ++it) (*it)->wait();
  for (size_t i = 1; i < reqs.size(); ++i)
    EXPECT_LE(reqs[i - 1]->span().start_ms, reqs[i]->span().start_ms) << "call " << i << " started out of order";
  EXPECT_TRUE(same_bits(a1, ra1));
  EXPECT_TRUE(same_bits(out, rout));
  EXPECT_TRUE(same_bits(part, rpart));
  EXPECT_TRUE(same_bits(a2, ra2));
  EXPECT_TRUE(same_bits(got, rgot));

  Tensor a3 = exact({50}, r), ra3 = clone(a3);
  auto pending = g.c.iall_reduce(a3);
  g.c.all_reduce(ra3);  // a blocking call after a posted one: the worker drains first
  pending->wait();
  EXPECT_TRUE(same_bits(a3, ra3));
  EXPECT_EQ(g.c.all_reduce_scalar(double(r + 1)), double(n * (n + 1) / 2));
}

// Accounting happens when a call is posted, under the caller's phase: the same rows as the
// blocking calls, even when the wait runs in another phase.
TEST(AsyncComm, LedgerCountsEqualTheBlockingCalls) {
  if (world_size() == 1) GTEST_SKIP() << "a group of one short-circuits";
  Comm g;
  const int r = g.c.rank(), n = g.c.size();
  Tensor a = exact({77}, r), out = nans({n * 5, 2}), part = nans({3});
  const Tensor in = exact({5, 2}, r), full = exact({n * 3}, r);
  CommLedger::get().clear();
  {
    PhaseScope phase(Phase::Backward);
    g.c.all_reduce(a);
    g.c.all_gather(out, in);
    g.c.reduce_scatter(part, full);
  }
  const auto blocking = CommLedger::get().entries();
  CommLedger::get().clear();
  std::vector<RequestPtr> reqs;
  {
    PhaseScope phase(Phase::Backward);
    reqs.push_back(g.c.iall_reduce(a));
    reqs.push_back(g.c.iall_gather(out, in));
    reqs.push_back(g.c.ireduce_scatter(part, full));
  }
  PhaseScope later(Phase::Optimizer);
  for (auto& q : reqs) q->wait();
  const auto async = CommLedger::get().entries();
  ASSERT_EQ(async.size(), blocking.size());
  for (const auto& [key, c] : blocking) {
    const auto it = async.find(key);
    ASSERT_NE(it, async.end()) << std::get<0>(key) << " " << comm_op_name(std::get<1>(key));
    EXPECT_EQ(it->second.calls, c.calls);
    EXPECT_EQ(it->second.bytes, c.bytes);
    EXPECT_EQ(it->second.bus_bytes, c.bus_bytes);
  }
  CommLedger::get().clear();
}

}  // namespace pb::test
