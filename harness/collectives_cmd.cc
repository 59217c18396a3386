/* `parabench collectives` (see collectives_cmd.h). */
#include "harness/collectives_cmd.h"

#include <mpi.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "harness/dist_run.h"
#include "harness/env.h"
#include "optimized/comm/mpi_communicator.h"
#include "optimized/comm/nccl_communicator.h"
#include "optimized/core/device.h"
#include "optimized/core/fatal.h"
#include "optimized/kernels/ops.h"
#include "reference/common/error.h"
#include "reference/io/atomic_file.h"

namespace pb::harness {

using nlohmann::json;

int64_t parse_bytes(const std::string& text, const char* what) {
  size_t used = 0;
  long long n = -1;
  try {
    n = std::stoll(text, &used);
  } catch (...) {
    used = 0;
  }
  int64_t unit = 1;
  if (used + 1 == text.size()) {
    const char u = char(std::toupper(static_cast<unsigned char>(text[used])));
    unit = u == 'K' ? 1 << 10 : u == 'M' ? 1 << 20 : u == 'G' ? int64_t(1) << 30 : 0;
    used += unit ? 1 : 0;
  }
  PB_REQUIRE(!text.empty() && used == text.size() && n >= 0 && n <= (int64_t(1) << 40) / unit, what,
             ": expected a byte count like 8, 64K, 128M or 1G, got '", text, "'");
  return int64_t(n) * unit;
}

namespace {

const std::vector<std::string>& all_ops() {
  static const std::vector<std::string> ops = {"all_reduce", "all_gather",  "reduce_scatter",
                                               "all_to_all", "broadcast", "send_recv"};
  return ops;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

CommOp ledger_op(const std::string& op) {
  if (op == "all_reduce") return CommOp::AllReduce;
  if (op == "all_gather") return CommOp::AllGather;
  if (op == "reduce_scatter") return CommOp::ReduceScatter;
  if (op == "all_to_all") return CommOp::AllToAll;
  if (op == "broadcast") return CommOp::Broadcast;
  return CommOp::Send;
}

// The exactly predictable input element i of rank r.
float value(int r, int64_t i) { return float((7 * int64_t(r) + i) % 5 - 2); }

// One op at one size on this rank: its buffers and what it must produce.
struct Trial {
  int64_t size_bytes = 0, count = 0;  // count: elements of the size
  std::function<void()> fill;         // the inputs, before each iteration
  std::function<void()> run;          // the op
  std::function<int64_t()> wrong;     // elements of the output that differ from the exact result
};

class Bench {
 public:
  Bench(Communicator& c, Device dev, DType dt, bool corrupt) : c_(c), dev_(dev), dt_(dt), corrupt_(corrupt) {}

  Trial make(const std::string& op, int64_t bytes) {
    const int n = c_.size(), r = c_.rank();
    const int64_t e = int64_t(dtype_bytes(dt_));
    const bool split = op == "all_gather" || op == "reduce_scatter" || op == "all_to_all";
    const int64_t count = bytes / e / (split ? n : 1) * (split ? n : 1), q = count / n;  // q: a rank's part
    Trial t;
    t.count = count, t.size_bytes = count * e;
    if (count == 0) return t;
    if (op == "all_reduce") {
      Tensor buf = tensor(count);
      t.fill = [=, this]() mutable { put(buf, [&](int64_t i) { return value(r, i); }); };
      t.run = [=, this]() mutable { c_.all_reduce(buf); };
      t.wrong = [=, this]() mutable { return differ(buf, [&](int64_t i) { return sum_over_ranks(i); }); };
    } else if (op == "all_gather") {
      Tensor in = tensor(q), out = tensor(count);
      t.fill = [=, this]() mutable { put(in, [&](int64_t i) { return value(r, i); }); };
      t.run = [=, this]() mutable { c_.all_gather(out, in); };
      t.wrong = [=, this]() mutable { return differ(out, [&](int64_t i) { return double(value(int(i / q), i % q)); }); };
    } else if (op == "reduce_scatter") {
      Tensor in = tensor(count), out = tensor(q);
      t.fill = [=, this]() mutable { put(in, [&](int64_t i) { return value(r, i); }); };
      t.run = [=, this]() mutable { c_.reduce_scatter(out, in); };
      t.wrong = [=, this]() mutable { return differ(out, [&](int64_t i) { return sum_over_ranks(int64_t(r) * q + i); }); };
    } else if (op == "all_to_all") {
      Tensor in = tensor(count), out = tensor(count);
      t.fill = [=, this]() mutable { put(in, [&](int64_t i) { return value(r, i); }); };
      t.run = [=, this]() mutable { c_.all_to_all(out, in); };
      // block j of the output came from rank j's block r
      t.wrong = [=, this]() mutable { return differ(out, [&](int64_t i) { return double(value(int(i / q), r * q + i % q)); }); };
    } else if (op == "broadcast") {
      Tensor buf = tensor(count);
      t.fill = [=, this]() mutable { put(buf, [&](int64_t i) { return r == 0 ? value(0, i) : 99.0f; }); };
      t.run = [=, this]() mutable { c_.broadcast(buf, 0); };
      t.wrong = [=, this]() mutable { return differ(buf, [&](int64_t i) { return double(value(0, i)); }); };
    } else {  // send_recv: a ring, to r+1 and from r-1
      Tensor in = tensor(count), out = tensor(count);
      const int to = (r + 1) % n, from = (r + n - 1) % n;
      t.fill = [=, this]() mutable { put(in, [&](int64_t i) { return value(r, i); }); };
      t.run = [=, this]() mutable { c_.batch_p2p({{true, &in, to}, {false, &out, from}}); };
      t.wrong = [=, this]() mutable { return differ(out, [&](int64_t i) { return double(value(from, i)); }); };
    }
    return t;
  }

 private:
  Tensor tensor(int64_t count) const { return Tensor::empty({count}, MemCategory::CommBuffers, dt_, dev_); }
  double sum_over_ranks(int64_t i) const {
    double s = 0;
    for (int k = 0; k < c_.size(); ++k) s += value(k, i);
    return s;
  }
  // Host values into the (device) tensor, through an fp32 host copy cast to its dtype.
  void put(Tensor& t, const std::function<float(int64_t)>& v) const {
    Tensor host = Tensor::empty(t.shape(), MemCategory::Workspace, DType::F32, Device::CPU);
    for (int64_t i = 0; i < t.numel(); ++i) host.f32()[i] = v(i);
    if (corrupt_ && c_.rank() == 0) host.f32()[0] += 1.0f;
    Tensor typed = Tensor::empty(t.shape(), MemCategory::Workspace, dt_, Device::CPU);
    ops::cast(typed, host);
    copy_bytes(t.raw(), t.device(), typed.raw(), Device::CPU, t.bytes());
  }
  int64_t differ(const Tensor& t, const std::function<double(int64_t)>& want) const {
    Tensor typed = Tensor::empty(t.shape(), MemCategory::Workspace, dt_, Device::CPU);
    copy_bytes(typed.raw(), Device::CPU, t.raw(), t.device(), t.bytes());
    Tensor host = Tensor::empty(t.shape(), MemCategory::Workspace, DType::F32, Device::CPU);
    ops::cast(host, typed);
    int64_t bad = 0;
    for (int64_t i = 0; i < t.numel(); ++i) bad += double(host.f32()[i]) != want(i);
    return bad;
  }

  Communicator& c_;
  Device dev_;
  DType dt_;
  bool corrupt_;
};

struct Row {
  std::string op;
  int64_t size = 0, count = 0, wrong = 0;
  double time_us = 0, algbw = 0, busbw = 0, factor = 0;
};

// Times one trial: warm-up, then each timed iteration refilled, started after a barrier,
// ended once its result is here; the mean over iterations, averaged over the ranks.
Row measure(const std::string& op, Trial& t, int warmup, int iters, int n, Device dev) {
  Row row{op, t.size_bytes, t.count};
  row.factor = bus_factor(ledger_op(op), n);
  for (int k = 0; k < warmup; ++k) t.fill(), t.run();
  double total_ms = 0;
  for (int k = 0; k < iters; ++k) {
    t.fill();
    synchronize(dev);
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
    const double t0 = host_clock_ms();
    t.run();
    synchronize(dev);
    total_ms += host_clock_ms() - t0;
    row.wrong += t.wrong();
  }
  double mean_us = 1e3 * total_ms / iters;
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &mean_us, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &row.wrong, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD));
  row.time_us = mean_us / n;
  row.algbw = row.time_us > 0 ? double(row.size) / row.time_us / 1e3 : 0;  // GB/s
  row.busbw = row.algbw * row.factor;
  return row;
}

}  // namespace

CLI::App* add_collectives_command(CLI::App& app, CollectivesArgs& a) {
  auto* sub = app.add_subcommand("collectives", "nccl-tests-style sweep of the communicator's collectives (under MPI)");
  sub->add_option("-b,--minbytes", a.min_bytes, "smallest size (8, 64K, 1M, ...)")->capture_default_str();
  sub->add_option("-e,--maxbytes", a.max_bytes, "largest size")->capture_default_str();
  sub->add_option("-f,--stepfactor", a.factor, "size multiplier between rows")->capture_default_str();
  sub->add_option("-w,--warmup_iters", a.warmup, "untimed iterations per size")->capture_default_str();
  sub->add_option("-n,--iters", a.iters, "timed iterations per size")->capture_default_str();
  sub->add_option("-d,--datatype", a.dtype, "float | bf16")->capture_default_str();
  sub->add_option("-o,--op", a.redop, "reduction: sum")->capture_default_str();
  sub->add_option("--ops", a.ops, "comma-separated subset")->capture_default_str();
  sub->add_option("--backend", a.backend, "cpu (MPI) | cuda (NCCL where built)")->capture_default_str();
  sub->add_option("--json", a.json, "write the rows as JSON here");
  sub->add_flag("--inject-corruption", a.inject_corruption, "(test) corrupt rank 0's input")->group("");
  return sub;
}

void check_collectives_args(const CollectivesArgs& a) {
  const int64_t lo = parse_bytes(a.min_bytes, "-b"), hi = parse_bytes(a.max_bytes, "-e");
  PB_REQUIRE(lo >= 1 && lo <= hi, "-b ", a.min_bytes, " and -e ", a.max_bytes, ": need 1 <= -b <= -e");
  PB_REQUIRE(std::isfinite(a.factor) && a.factor > 1 && a.factor <= 1024, "-f: a size factor above 1, got ", a.factor);
  PB_REQUIRE(a.warmup >= 0 && a.iters >= 1, "-w >= 0 and -n >= 1, got ", a.warmup, " and ", a.iters);
  PB_REQUIRE(a.dtype == "float" || a.dtype == "bf16", "-d: float or bf16, got '", a.dtype, "'");
  PB_REQUIRE(a.redop == "sum", "-o: only sum, got '", a.redop, "'");
  PB_REQUIRE(a.backend == "cpu" || a.backend == "cuda", "--backend: cpu or cuda, got '", a.backend, "'");
  PB_REQUIRE(a.backend == "cpu" || cuda_built(), "backend cuda: this build has no CUDA backend");
  const auto ops = split(a.ops);
  PB_REQUIRE(!ops.empty(), "--ops: no op named");
  for (const auto& op : ops)
    PB_REQUIRE(std::find(all_ops().begin(), all_ops().end(), op) != all_ops().end(), "--ops: unknown op '", op,
               "' (all_reduce, all_gather, reduce_scatter, all_to_all, broadcast, send_recv)");
}

int cmd_collectives(const CollectivesArgs& a) {
  int n = 1, rank = 0;
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &n));
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  const Device dev = a.backend == "cuda" ? Device::CUDA : Device::CPU;
  const bool nccl = dev == Device::CUDA && select_device(MPI_COMM_WORLD);
  DeviceScope on(dev);
  MPI_Comm dup;
  MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &dup));
  std::unique_ptr<Communicator> comm = nccl ? make_nccl_communicator("world", dup)
                                            : std::unique_ptr<Communicator>(new MpiCommunicator("world", dup));
  if (nccl) MPI_CHECK(MPI_Comm_free(&dup));  // (NCCL keeps its own)
  const DType dt = a.dtype == "bf16" ? DType::BF16 : DType::F32;
  Bench bench(*comm, dev, dt, a.inject_corruption);
  const int64_t lo = parse_bytes(a.min_bytes, "-b"), hi = parse_bytes(a.max_bytes, "-e");
  const char* lib = nccl ? "NCCL" : "MPI";
  if (rank == 0)
    std::printf("# parabench collectives: %d ranks, %s (%s), %s, %s, warm-up %d, iterations %d\n", n, lib,
                a.backend.c_str(), a.dtype.c_str(), a.redop.c_str(), a.warmup, a.iters);
  std::vector<Row> rows;
  for (const auto& op : split(a.ops)) {
    if (rank == 0)
      std::printf("#\n# %s\n# %12s %12s %6s %8s %10s %12s %12s %8s\n", op.c_str(), "size(B)", "count", "type", "redop",
                  "time(us)", "algbw(GB/s)", "busbw(GB/s)", "#wrong");
    for (double b = double(lo); b <= double(hi); b *= a.factor) {
      Trial t = bench.make(op, int64_t(b));
      if (t.count == 0) continue;  // (below one element per rank)
      const Row row = measure(op, t, a.warmup, a.iters, n, dev);
      if (rank == 0)
        std::printf("  %12lld %12lld %6s %8s %10.2f %12.3f %12.3f %8lld\n", (long long)row.size, (long long)row.count,
                    a.dtype.c_str(), op == "all_reduce" || op == "reduce_scatter" ? a.redop.c_str() : "none",
                    row.time_us, row.algbw, row.busbw, (long long)row.wrong);
      rows.push_back(row);
    }
  }
  int64_t wrong = 0;
  for (const Row& r : rows) wrong += r.wrong;
  if (rank == 0) {
    std::printf("# out of bounds values : %lld %s\n", (long long)wrong, wrong ? "ERROR" : "OK");
    if (!a.json.empty()) {
      json out = {{"schema", "parabench-collectives-1"}, {"environment", environment(n)}, {"ranks", n},
                  {"library", lib}, {"backend", a.backend}, {"dtype", a.dtype}, {"redop", a.redop},
                  {"warmup", a.warmup}, {"iters", a.iters}, {"rows", json::array()}};
      for (const Row& r : rows)
        out["rows"].push_back({{"op", r.op}, {"size_bytes", r.size}, {"count", r.count}, {"time_us", r.time_us},
                               {"algbw_gbs", r.algbw}, {"busbw_gbs", r.busbw}, {"bus_factor", r.factor},
                               {"wrong", r.wrong}});
      io::write_file_atomic(a.json, out.dump(1) + "\n");
    }
  }
  if (!nccl) comm.reset();  // (frees the duplicated communicator)
  return wrong ? 1 : 0;
}

}  // namespace pb::harness
