/* MC2 (optimized/parallel/mc2_linear.h): the sequence-parallel linears with their
 * collectives in chunks under the matrix products.
 *
 * The linears: over the world as the TP group, each of column / row forward and backward
 * equals SP's bitwise (fp32 and bf16, 1, 2 and 4 chunks of 4 rows or more); its bytes per
 * op and phase are SP's, the split ones in chunks times as many calls; all_gather_at puts
 * each rank's rows in their place. Bitwise needs the CPU GEMM's rows to be independent of
 * how many rows it is given (optimized/kernels/cpu/sgemm.h): the AVX2 kernel's rows are
 * stable for any chunk; the Eigen fallback's only for multiples of 4 (measured at these
 * shapes; m = 2 differs in the last bit), so chunks of 2 rows are checked to fp32 rounding.
 * Training: cases with mc2 (chunks of 4 rows or more) are bitwise the same cases with SP alone, with
 * communication and every memory category of every rank as predicted, the same bytes as
 * SP's; the chunked collectives run while the caller computes: on every rank some
 * communication is hidden (a structural property of the recorded spans -- a reduce-
 * scatter is posted before the next chunk's product -- not a speed threshold). */
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <cstring>
#include <random>

#include "case_expect.h"
#include "mpi_test_util.h"

#include "harness/runner.h"
#include "optimized/comm/ledger.h"
#include "optimized/core/timeline.h"
#include "optimized/kernels/ops.h"
#include "optimized/parallel/grad_sink.h"
#include "optimized/parallel/mc2_linear.h"
#include "optimized/parallel/process_grid.h"

namespace pb::test {

using harness::Case;

namespace {

Tensor random(std::vector<int64_t> shape, DType dt, uint64_t seed) {
  Tensor f = Tensor::empty(shape, MemCategory::Activations, DType::F32);
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> normal;
  for (int64_t i = 0; i < f.numel(); ++i) f.f32()[i] = normal(gen);
  if (dt == DType::F32) return f;
  Tensor b = Tensor::empty(shape, MemCategory::Activations, dt);
  ops::cast(b, f);
  return b;
}
Tensor zeros(std::vector<int64_t> shape, DType dt) { return Tensor::zeros(shape, MemCategory::Activations, dt); }
void expect_bitwise(const Tensor& a, const Tensor& b, const char* what) {
  ASSERT_EQ(a.bytes(), b.bytes()) << what;
  EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.bytes()), 0) << what;
}

// One pass of the four linears through a strategy: the outputs and gradients it produced,
// and the ledger of its calls.
struct Pass {
  std::vector<Tensor> out;
  std::map<CommLedger::Key, CommCounter> ledger;
};

Pass run_linears(TpLinear& tp, DType dt, int64_t n, uint64_t seed) {
  const int64_t T = tp.group().size(), r = tp.group().rank(), N = n * T, in = 24, o1 = 40, o2 = 16, out = 24, f = 48;
  const uint64_t s = seed + 100 * uint64_t(r);
  // column: x shard (n, in), weights (o/T, in) x 2; row: x (N, f/T), w (out, f/T)
  const Tensor x = random({n, in}, dt, s + 1), w1 = random({o1, in}, dt, s + 2), w2 = random({o2, in}, dt, s + 3);
  const Tensor xr = random({N, f}, dt, s + 4), wr = random({out, f}, dt, s + 5);
  const Tensor dy1 = random({N, o1}, dt, s + 6), dy2 = random({N, o2}, dt, s + 7), dyr = random({n, out}, dt, s + 8);
  CommLedger::get().clear();
  Pass p;
  Tensor y1 = zeros({N, o1}, dt), y2 = zeros({N, o2}, dt), yr = zeros({n, out}, dt);
  {
    PhaseScope ph(Phase::Forward);
    tp.column_forward({&y1, &y2}, x, {&w1, &w2});
    tp.row_forward(yr, xr, wr);
  }
  Tensor dx = zeros({n, in}, dt), dw1 = zeros({o1, in}, DType::F32), dw2 = zeros({o2, in}, DType::F32);
  Tensor dxr = zeros({N, f}, dt), dwr = zeros({out, f}, DType::F32);
  {
    PhaseScope ph(Phase::Backward);
    tp.column_backward(dx, {&dw1, &dw2}, {&dy1, &dy2}, x, {&w1, &w2});
    tp.row_backward(dxr, dwr, dyr, xr, wr);
  }
  p.out = {y1, y2, yr, dx, dw1, dw2, dxr, dwr};
  p.ledger = CommLedger::get().entries();
  CommLedger::get().clear();
  return p;
}

}  // namespace

TEST(Mc2, LinearsEqualSequenceParallelsWithItsBytes) {
  const int T = world_size();
  ProcessGrid grid(MPI_COMM_WORLD, Layout{.tp = T});
  const char* names[] = {"column y1", "column y2", "row y", "column dx", "column dW1", "column dW2", "row dx", "row dW"};
  for (DType dt : {DType::F32, DType::BF16})
    for (int64_t k : {1, 2, 4}) {
      SCOPED_TRACE(std::string(dt == DType::F32 ? "fp32" : "bf16") + " chunks " + std::to_string(k));
      const int64_t n = 16;  // rows of a shard: chunks of 16, 8, 4 rows
      AccumulateGrads a, b;
      TpSequenceParallel sp(grid.tp(), a);
      TpMc2 mc2(grid.tp(), b, k);
      const Pass plain = run_linears(sp, dt, n, 7), fused = run_linears(mc2, dt, n, 7);
      for (size_t i = 0; i < plain.out.size(); ++i) expect_bitwise(fused.out[i], plain.out[i], names[i]);
      // The same bytes per op and phase; the split calls (forward all-gathers and reduce-
      // scatters, the backward's row all-gather) k times as many.
      std::map<std::pair<CommOp, Phase>, CommCounter> sum_p, sum_f;
      for (const auto& [key, c] : plain.ledger) {
        auto& s = sum_p[{std::get<1>(key), std::get<2>(key)}];
        s.calls += c.calls, s.bytes += c.bytes;
      }
      for (const auto& [key, c] : fused.ledger) {
        auto& s = sum_f[{std::get<1>(key), std::get<2>(key)}];
        s.calls += c.calls, s.bytes += c.bytes;
      }
      ASSERT_EQ(sum_f.size(), sum_p.size());
      for (const auto& [key, c] : sum_p) {
        EXPECT_EQ(sum_f[key].bytes, c.bytes) << comm_op_name(key.first) << " " << phase_name(key.second);
        const bool split = key.second == Phase::Forward || key.first == CommOp::AllGather;
        // Backward all-gathers: the column's re-gather whole, the row's dY in k chunks.
        const int64_t calls = key.second == Phase::Backward && key.first == CommOp::AllGather ? 1 + k : split ? k : 1;
        EXPECT_EQ(c.calls, key.second == Phase::Backward && key.first == CommOp::AllGather ? 2 : 1);
        EXPECT_EQ(sum_f[key].calls, calls) << comm_op_name(key.first) << " " << phase_name(key.second);
      }
    }
}

// Chunks of 2 rows: Eigen's products of 2 rows round differently in the last bit.
TEST(Mc2, LinearsInChunksOfTwoRowsEqualSequenceParallelsToRounding) {
  ProcessGrid grid(MPI_COMM_WORLD, Layout{.tp = world_size()});
  AccumulateGrads a, b;
  TpSequenceParallel sp(grid.tp(), a);
  TpMc2 mc2(grid.tp(), b, 8);
  const Pass plain = run_linears(sp, DType::F32, 16, 7), fused = run_linears(mc2, DType::F32, 16, 7);
  for (size_t i = 0; i < plain.out.size(); ++i)
    for (int64_t e = 0; e < plain.out[i].numel(); ++e) {
      const float x = plain.out[i].f32()[e], y = fused.out[i].f32()[e];
      // sums of at most 48 products of unit normals (|x| up to ~20): a few ulps of the terms
      ASSERT_LE(std::abs(x - y), 1e-5f * (1 + std::abs(x))) << "output " << i << " element " << e;
    }
}

TEST(Mc2, AllGatherAtPlacesEachRanksRows) {
  const int T = world_size(), r = world_rank();
  ProcessGrid grid(MPI_COMM_WORLD, Layout{.tp = T});
  const int64_t R = 5, q = 2, row0 = 3, cols = 3;
  Tensor out = Tensor::empty({T * R, cols}, MemCategory::Activations, DType::F32);
  for (int64_t i = 0; i < out.numel(); ++i) out.f32()[i] = -1.0f;
  Tensor in = Tensor::empty({q, cols}, MemCategory::Activations, DType::F32);
  for (int64_t i = 0; i < in.numel(); ++i) in.f32()[i] = float(100 * r + i);
  grid.tp().iall_gather_at(out, in, row0)->wait();
  for (int j = 0; j < T; ++j)
    for (int64_t i = 0; i < R * cols; ++i) {
      const int64_t row = i / cols;
      const float want = row >= row0 && row < row0 + q ? float(100 * j + (row - row0) * cols + i % cols) : -1.0f;
      EXPECT_EQ(out.f32()[j * R * cols + i], want) << "block " << j << " element " << i;
    }
  Tensor bad = Tensor::empty({q + 4, cols}, MemCategory::Activations, DType::F32);
  EXPECT_THROW(grid.tp().iall_gather_at(out, bad, row0), Error);  // past the end of a block
}

static ref::ModelConfig dense(int64_t L) { return ref::ModelConfig::dense(16, 4, 2, 24, 32, L); }

// The MC2 cases of this world size (tp x the rest = world): TP 2 and 4, with DP, 1F1B and
// zero bubble (weight gradients deferred to W), CP, MoE, full recompute, ZeRO-1, bf16;
// 2 chunks unless named; sequences of 16, so that every chunk is 4 rows or more.
static std::vector<Case> mc2_cases(int world) {
  const std::vector<std::string> f = {"mc2"};
  auto moe = dense(2);
  moe.num_local_experts = 4, moe.num_experts_per_tok = 2;
  std::vector<Case> all = {small_case("tp2", dense(2), f, 1, 2), small_case("tp4", ref::ModelConfig::dense(16, 4, 4, 24, 32, 2), f, 1, 4),
                           small_case("dp2_tp2", dense(2), f, 2, 2)};
  Case k4 = small_case("tp2_chunks4", dense(2), f, 1, 2);
  k4.mc2_chunks = 4;
  all.push_back(k4);
  Case k1 = small_case("tp2_chunks1", dense(2), f, 1, 2);
  k1.mc2_chunks = 1;
  all.push_back(k1);
  for (const char* s : {"1f1b", "zb-h1"}) {
    Case c = small_case(std::string("pp2_tp2_") + s, dense(2), f, 1, 2, 4);
    c.layout.pp = 2, c.schedule = s;
    all.push_back(c);
  }
  Case cp = small_case("cp2_tp2", dense(2), f, 1, 2);
  cp.layout.cp = 2;
  all.push_back(cp);
  Case e = small_case("moe_dp2_tp2_ep2", moe, f, 2, 2);
  e.layout.ep = 2, e.model_json = io::hf_config_json(moe);
  all.push_back(e);
  all.push_back(small_case("recompute_tp2", dense(2), {"mc2", "recompute_full"}, 1, 2));
  all.push_back(small_case("zero1_dp2_tp2", dense(2), {"mc2", "distributed_optimizer"}, 2, 2));
  add_bf16_copies(all, {"tp2", "dp2_tp2"});
  for (auto& c : all) c.train.seq_length = 16;
  return cases_of_world(all, world);
}

TEST(Mc2, TrainingIsSequenceParallelsWithItsBytesAndHidesCommunication) {
  const auto cases = mc2_cases(world_size());
  ASSERT_FALSE(cases.empty());
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const auto [o, plain] = run_beside_plain(c, without_feature(c, "mc2"), world_rank());
    if (world_rank() != 0) continue;
    auto tp_bytes = [](const nlohmann::json& r) {
      std::map<std::string, int64_t> b;
      for (const auto& row : r["comm"])
        if (row["group"] == "tp") b[row["op"].get<std::string>() + " " + row["phase"].get<std::string>()] += row["bytes"].get<int64_t>();
      return b;
    };
    EXPECT_EQ(tp_bytes(o.result), tp_bytes(plain.result));
    // Every rank hid part of its communication (SP alone: blocking, nothing hidden, where
    // nothing else is asynchronous).
    for (const auto& r : o.result["overlap"]["ranks"]) {
      EXPECT_LT(r["exposed_ms"].get<double>(), r["comm_ms"].get<double>()) << r.dump();
    }
    if (c.layout.cp == 1 && !c.typed_features().distributed_optimizer) {  // (ring attention, ZeRO: asynchronous)
      for (const auto& r : plain.result["overlap"]["ranks"]) {
        EXPECT_EQ(r["exposed_ms"].get<double>(), r["comm_ms"].get<double>()) << r.dump();
      }
    }
  }
}

// Chunks of 2 rows (sequences of 8): not bitwise SP's (above), within the reference checks.
TEST(Mc2, TrainingInChunksOfTwoRowsPassesItsChecks) {
  Case c = small_case("chunks_of_2_rows", dense(2), {"mc2"}, world_size() / 2, 2);
  c.mc2_chunks = 4;
  harness::validate_case(c, c.layout.world());
  const auto o = harness::run_case(c, MPI_COMM_WORLD, {});
  if (world_rank() != 0) return;
  expect_pass(o.result);
  expect_exact_comm(o.result);
  expect_exact_memory(o.result, c);
}

TEST(Mc2, RefusedWithoutSequenceParallelismOrWithChunksThatDoNotDivide) {
  Case c = small_case("tp2", dense(2), {"mc2"}, 1, 2);
  Case nosp = c;
  std::erase(nosp.features, "sp");
  expect_invalid(nosp, "mc2 fuses the sequence-parallel linears' collectives");
  Case odd = c;
  odd.mc2_chunks = 3;  // 8 rows per shard
  expect_invalid(odd, "mc2_chunks 3 does not divide the 8 rows");
  Case zero = c;
  zero.mc2_chunks = 0;
  expect_invalid(zero, "mc2_chunks 0");
}

}  // namespace pb::test
