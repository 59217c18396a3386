/* The MPI Communicator and the process grid: every primitive's values, its accounting
 * (payload and bus bytes with the nccl-tests factors), the size-1 short circuit, the
 * non-blocking variants, and Megatron's rank order. Runs on 1, 2 and 4 ranks. */
#include <gtest/gtest.h>
#include <mpi.h>

#include "mpi_test_util.h"

#include "optimized/comm/mpi_communicator.h"
#include "optimized/parallel/process_grid.h"
#include "reference/common/error.h"

#include <cmath>
#include <algorithm>

namespace pb::test {


static Tensor filled(std::vector<int64_t> shape, float base) {
  Tensor t = Tensor::empty(std::move(shape), MemCategory::Workspace);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = base + float(i);
  return t;
}

static CommCounter counter(const std::string& g, CommOp op, Phase ph) { return CommLedger::get().total(g, op, ph); }

TEST(Communicator, CollectivesComputeAndAccount) {
  MPI_Comm dup;
  MPI_Comm_dup(MPI_COMM_WORLD, &dup);
  MpiCommunicator mc("w", dup);
  Communicator& c = mc;  // technique code sees the interface
  const int n = c.size(), r = c.rank();
  CommLedger::get().clear();
  PhaseScope phase(Phase::Backward);
  // all_reduce: sum over ranks of (r*10 + i)
  Tensor a = filled({3, 2}, float(r * 10));
  c.all_reduce(a);
  for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(a.f32()[i], float(10 * n * (n - 1) / 2 + n * i));
  Tensor mx = filled({4}, float(r));
  c.all_reduce(mx, ReduceOp::Max);
  EXPECT_EQ(mx.f32()[0], float(n - 1));
  // all_gather: row blocks in rank order
  Tensor in = filled({2, 3}, float(100 * r)), out = Tensor::empty({2 * n, 3}, MemCategory::Workspace);
  std::fill_n(out.f32(), out.numel(), std::nanf(""));
  c.all_gather(out, in);
  for (int q = 0; q < n; ++q)
    for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(out.f32()[q * 6 + i], float(100 * q + i));
  // reduce_scatter: block r of the sum
  Tensor full = filled({2 * n, 3}, float(r)), mine = Tensor::empty({2, 3}, MemCategory::Workspace);
  c.reduce_scatter(mine, full);
  for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(mine.f32()[i], float(n * (n - 1) / 2 + n * (r * 6 + i)));
  // all_to_all: block j of rank q arrives as block q on rank j
  Tensor send = filled({n, 2}, float(1000 * r)), recv = Tensor::empty({n, 2}, MemCategory::Workspace);
  c.all_to_all(recv, send);
  for (int q = 0; q < n; ++q) EXPECT_EQ(recv.f32()[q * 2], float(1000 * q + 2 * r));
  // non-blocking all_reduce
  Tensor b = filled({5}, 1.0f);
  c.iall_reduce(b)->wait();
  EXPECT_EQ(b.f32()[4], float(5 * n));
  EXPECT_EQ(c.all_reduce_scalar(double(r + 1)), double(n * (n + 1) / 2));

  if (n == 1) {
    EXPECT_TRUE(CommLedger::get().entries().empty()) << "a size-1 group records nothing";
    return;
  }
  const auto ar = counter("w", CommOp::AllReduce, Phase::Backward);
  EXPECT_EQ(ar.calls, 4);
  EXPECT_EQ(ar.bytes, 4 * 6 + 4 * 4 + 4 * 5 + 8);
  EXPECT_DOUBLE_EQ(ar.bus_bytes, double(ar.bytes) * 2.0 * (n - 1) / n);
  for (int64_t size : {24, 16, 20, 8})  // one ledger row per call size
    EXPECT_EQ(CommLedger::get().entries().count({"w", CommOp::AllReduce, Phase::Backward, size}), 1u) << size;
  const auto ag = counter("w", CommOp::AllGather, Phase::Backward);
  EXPECT_EQ(ag.calls, 1);
  EXPECT_EQ(ag.bytes, 4 * 6 * n);  // the gathered output
  EXPECT_DOUBLE_EQ(ag.bus_bytes, double(ag.bytes) * (n - 1) / n);
  EXPECT_EQ(counter("w", CommOp::ReduceScatter, Phase::Backward).bytes, 4 * 6 * n);  // the full input
  EXPECT_EQ(counter("w", CommOp::AllToAll, Phase::Backward).bytes, 4 * 2 * n);
  EXPECT_EQ(counter("w", CommOp::AllReduce, Phase::Forward).calls, 0);  // phase respected
}

// Rank r sends q+1 rows to rank q (rows valued 100 r + q); rank r receives r+1 rows from each.
TEST(Communicator, AllToAllVWithUnevenRows) {
  MPI_Comm dup;
  MPI_Comm_dup(MPI_COMM_WORLD, &dup);
  MpiCommunicator mc("a2av", dup);
  Communicator& c = mc;
  const int n = c.size(), r = c.rank();
  std::vector<int64_t> send(static_cast<size_t>(n)), recv(static_cast<size_t>(n), r + 1);
  int64_t total = 0;
  for (int q = 0; q < n; ++q) total += (send[size_t(q)] = q + 1);
  Tensor in = Tensor::empty({total, 2}, MemCategory::Workspace), out = Tensor::empty({int64_t(n) * (r + 1), 2}, MemCategory::Workspace);
  for (int q = 0, row = 0; q < n; ++q)
    for (int k = 0; k <= q; ++k, ++row) in.f32()[2 * row] = in.f32()[2 * row + 1] = float(100 * r + q);
  CommLedger::get().clear();
  c.all_to_all_v(out, recv, in, send);
  for (int q = 0; q < n; ++q)
    for (int k = 0; k <= r; ++k) EXPECT_EQ(out.f32()[2 * (q * (r + 1) + k)], float(100 * q + r));
  if (n > 1) {
    EXPECT_EQ(counter("a2av", CommOp::AllToAll, Phase::Forward).bytes, total * 2 * 4);
  }
}

TEST(Communicator, SendRecvRing) {
  MPI_Comm dup;
  MPI_Comm_dup(MPI_COMM_WORLD, &dup);
  MpiCommunicator mc("ring", dup);
  Communicator& c = mc;
  const int n = c.size(), r = c.rank();
  if (n == 1) GTEST_SKIP() << "needs 2 ranks";
  CommLedger::get().clear();
  Tensor s = filled({7}, float(r)), d = Tensor::empty({7}, MemCategory::Workspace);
  auto rq = c.irecv(d, (r + n - 1) % n);
  auto sq = c.isend(s, (r + 1) % n);
  rq->wait();
  sq->wait();
  EXPECT_EQ(d.f32()[0], float((r + n - 1) % n));
  EXPECT_EQ(counter("ring", CommOp::Send, Phase::Forward).bytes, 28);
  EXPECT_EQ(counter("ring", CommOp::Recv, Phase::Forward).bytes, 28);
}

TEST(ProcessGrid, MegatronRankOrderAndGroups) {
  const int w = world_size(), r = world_rank();
  Layout l;
  l.tp = w >= 2 ? 2 : 1;
  l.dp = w / l.tp;
  ProcessGrid g(MPI_COMM_WORLD, l);
  EXPECT_EQ(g.tp_rank(), r % l.tp);  // TP fastest
  EXPECT_EQ(g.dp_rank(), r / l.tp);
  EXPECT_EQ(g.tp().size(), l.tp);
  EXPECT_EQ(g.dp().size(), l.dp);
  EXPECT_EQ(g.tp().rank(), g.tp_rank());
  EXPECT_EQ(g.describe(), "TP(" + std::to_string(r % l.tp) + "/" + std::to_string(l.tp) + ")-CP(0/1)-DP(" +
                              std::to_string(r / l.tp) + "/" + std::to_string(l.dp) + ")-PP(0/1)");
  // tp ranks of one dp replica are consecutive world ranks: gather the world ranks over tp.
  int mine = r, first = -1;
  MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, g.raw_tp());
  EXPECT_EQ(first, r - r % l.tp);
}

TEST(ProcessGrid, RejectsAWorldOfTheWrongSize) {
  Layout l;
  l.dp = world_size() + 1;
  EXPECT_THROW(ProcessGrid(MPI_COMM_WORLD, l), pb::Error);
}

}  // namespace pb::test
