/* The distributed training run (see train_step.h). */
#include "optimized/train/train_step.h"

#include "optimized/train/registry.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <thread>

#include "optimized/comm/ledger.h"
#include "optimized/core/fatal.h"
#include "optimized/kernels/ops.h"
#include "optimized/model/dist_model.h"
#include "optimized/model/dist_optimizer.h"
#include "optimized/parallel/cp_ring.h"
#include "optimized/parallel/moe_routing.h"
#include "optimized/parallel/process_grid.h"
#include "optimized/train/pp_async.h"
#include "optimized/train/pp_schedule.h"
#include "reference/common/error.h"
#include "reference/model/train.h"

namespace pb {

namespace {

using Clock = std::chrono::steady_clock;
using BatchOf = std::function<ref::Batch(int64_t j)>;

int world_rank() {
  int r = 0;
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &r));
  return r;
}

// NCCL matches point-to-point by order: the pp group uses NCCL only for schedules whose
// order agrees (pp::check_channel_order); the others send through MPI, matched by tag.
bool pp_on_nccl(const pp::Schedule& sched, bool nccl_pipeline) {
  if (!nccl_pipeline) return true;
  try {
    pp::check_channel_order(sched);
    return true;
  } catch (const Error& e) {
    static bool said = false;
    if (!said && world_rank() == 0)
      std::fprintf(stderr, "backend cuda: %s; its pipeline transfers go through MPI (matched by tag), staged "
                           "through host memory\n", e.what());
    said = true;
    return false;
  }
}

// The test hooks of the first step: a hang on every rank, a failure on one.
void first_step_hooks(const TrainStepConfig& c) {
  if (c.inject_delay_s > 0) std::this_thread::sleep_for(std::chrono::duration<double>(c.inject_delay_s));
  const int w = world_rank();
  if (w == c.inject_failure_rank) throw std::runtime_error("injected failure (--inject-failure " + std::to_string(w) + ")");
}

// The test hook of a non-finite gradient (TrainConfig::inject_nan_step): a NaN in the first
// gradient element of the last pipeline stage's first rank (TP, DP, CP rank 0); the DP sum
// carries it to the stage's other replicas, the norm to every rank.
void inject_nan(DistModel& model, ProcessGrid& grid) {
  if (grid.pp_rank() != grid.layout().pp - 1 || grid.tp_rank() != 0 || grid.dp_rank() != 0 || grid.cp_rank() != 0)
    return;
  Tensor g = model.params().grad_buffer().view(0, {1});
  ops::scale_(g, std::nanf(""));  // x * NaN = NaN, on any device
}

// One step's m micro-batches through the pipeline; returns the mean loss (every rank).
double pipelined_micro_batches(const pp::Schedule& sched, DistModel& model, ProcessGrid& grid, const BatchOf& batch_of,
                               Clock::time_point t0, bool timed, TrainRun& r, WeightVersions* versions) {
  r.last_pipeline_step = run_pipeline(sched, model, grid, [&](int mb) { return batch_of(mb); }, t0, versions);
  if (timed) {  // step 1 warms up, as for the step times
    r.pp_busy_us += r.last_pipeline_step.busy_us;
    r.pp_total_us += r.last_pipeline_step.total_us;
  }
  PhaseScope phase(Phase::Optimizer);
  return grid.pp().all_reduce_scalar(r.last_pipeline_step.loss);  // from the last stage
}

// One step's m micro-batches without PP; returns this rank's mean loss.
double plain_micro_batches(DistModel& model, int64_t m, const BatchOf& batch_of) {
  double loss = 0;
  for (int64_t j = 0; j < m; ++j) loss += model.forward_backward(batch_of(j), 1.0f / float(m), int(j)) / double(m);
  return loss;
}

// The token rows `rows` of b (row t = sequence * S + position), tokens and labels alike.
ref::Batch rows_of(const ref::Batch& b, const std::vector<int64_t>& rows) {
  ref::Batch out;
  for (const int64_t r : rows) out.tokens.push_back(b.tokens[size_t(r)]), out.labels.push_back(b.labels[size_t(r)]);
  return out;
}

// TeraPipe's unit: slice i of K of every one of B sequences of S tokens.
std::vector<int64_t> slice_rows(int64_t B, int64_t S, int64_t i, int64_t K) {
  std::vector<int64_t> rows;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = i * S / K; t < (i + 1) * S / K; ++t) rows.push_back(b * S + t);
  return rows;
}

// The slowest rank's milliseconds since t0.
double step_ms(Clock::time_point t0, MPI_Comm comm) {
  double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &ms, 1, MPI_DOUBLE, MPI_MAX, comm));
  return ms;
}

}  // namespace

// The distributed optimizer with one DP x CP rank has nothing to shard: it runs, and says so
// once per process.
void note_unsharded(const TrainStepConfig& c) {
  static bool said = false;
  if (said || !c.features.distributed_optimizer || c.layout.dp * c.layout.cp > 1) return;
  said = true;
  if (world_rank() == 0)
    std::fprintf(stderr, "distributed_optimizer: dp x cp = 1, nothing to shard (the optimizer state stays whole)\n");
}

TrainRun train_distributed(const TrainStepConfig& c, MPI_Comm comm, const AfterStep& after_step) {
  note_unsharded(c);
  DeviceScope on(c.device);  // every tensor the model allocates lives on c.device
  const bool pipelined = c.layout.pp > 1;
  const int64_t m = c.train.num_micro_batches;
  const CaseSpec spec{c.model, c.train, c.layout, c.features, c.schedule};
  const pp::Schedule sched = pipelined ? schedule_for(spec) : pp::Schedule{};
  ProcessGrid grid(comm, c.layout, c.nccl, pp_on_nccl(sched, c.nccl && pipelined), c.features.cp_ulysses,
                   TpGrid::of(c.features.tp_kind, c.layout.tp, c.features.tp_depth));
  const Strategies strategies = strategies_for(spec);
  const int64_t slices = pipelined ? sched.slices : 0;  // TeraPipe: the units are slices of sequences
  DistModel model({c.model, c.train.micro_batch_size, c.train.seq_length, strategies, c.train.seed, c.dtype,
                   pipelined && sched.vshape, c.features.cp_contiguous, c.features.cp_ulysses,
                   c.features.reuse_fp32_param, c.features.distributed_optimizer, c.features.offload_optimizer,
                   c.features.zero_stage, c.features.bucket_size, pipelined && sched.bidir,
                   pipelined ? sched.bounds : std::vector<int64_t>{}, slices},
                  grid);
  // Under CP each rank takes its chunks of every sequence: tokens and labels alike.
  const std::vector<int64_t> rows = c.layout.cp > 1 ? cp_rows(c.train.micro_batch_size, c.train.seq_length, c.layout.cp,
                                                              grid.cp_rank(), c.features.cp_contiguous, c.features.cp_ulysses)
                                                     : std::vector<int64_t>{};
  auto local = [&rows](ref::Batch b) { return rows.empty() ? b : rows_of(b, rows); };
  DistOptimizer optim(model, grid, c.train, c.features.post_validation);
  ref::TrainConfig global = c.train;  // the reference's view: all DP ranks' micro-batches
  global.num_micro_batches = m * c.layout.dp;
  TrainRun r;
  RoutingLog::get().clear();
  const bool aux_loss = c.model.num_local_experts > 0 && c.model.router_aux_loss_coef > 0;
  struct TimelineOn {  // for this run only
    TimelineOn() { Timeline::get().enable(true); }
    ~TimelineOn() { Timeline::get().enable(false); }
  } timeline_on;
  for (int64_t n = 0; n < c.train.steps; ++n) {
    MPI_CHECK(MPI_Barrier(comm));
    RoutingLog::get().set_step(n);
    Timeline::get().take();  // (the set-up's and the last step's after-step reads)
    const double t0_ms = host_clock_ms();
    const auto t0 = Clock::now();
    model.params().zero_grads();
    if (n == 0) first_step_hooks(c);
    const BatchOf batch_of = [&](int64_t j) {
      if (slices > 0)  // TeraPipe's unit j: slice j % K of micro-batch j / K
        return rows_of(ref::train_batch(c.model, global, n, grid.dp_rank() * m + j / slices),
                       slice_rows(c.train.micro_batch_size, c.train.seq_length, j % slices, slices));
      return local(ref::train_batch(c.model, global, n, grid.dp_rank() * m + j));
    };
    // The asynchronous kinds update each stage during the schedule (pp_async.h); their step's
    // norm is the root of the squares of every stage's updates, summed over the pipeline.
    double async_sq = 0;
    std::optional<WeightVersions> versions;
    if (pipelined && sched.update_every > 0)
      versions.emplace(model.params().weight_buffer(), sched.update_every, [&] { async_sq += optim.step_stage(); },
                       [&] { model.params().zero_grads(); });
    const double loss = pipelined ? pipelined_micro_batches(sched, model, grid, batch_of, t0, n > 0 || c.train.steps == 1,
                                                            r, versions ? &*versions : nullptr)
                                  : plain_micro_batches(model, m, batch_of);
    if (n == c.train.inject_nan_step) inject_nan(model, grid);
    double step_loss = optim.average_loss(loss);
    if (aux_loss) {  // the load-balancing losses: every rank's share, the mean over DP
      PhaseScope phase(Phase::Optimizer);
      step_loss += grid.world().all_reduce_scalar(model.take_aux_loss()) / double(c.layout.dp);
    }
    r.losses.push_back(step_loss);
    if (versions) {
      PhaseScope phase(Phase::Optimizer);
      r.grad_norms.push_back(std::sqrt(grid.pp().all_reduce_scalar(async_sq)));
    } else {
      const TimedSpan span(SpanKind::Compute, "optimizer step");
      r.grad_norms.push_back(optim.step());
      synchronize(c.device);  // the step's last kernels (the bf16 weight refresh) have run
    }
    std::vector<TimeSpan> spans = Timeline::get().take();
    if (n > 0 || c.train.steps == 1) {  // the timed steps, as for the step times
      const CommTime t = comm_time(spans);
      r.comm.total_ms += t.total_ms, r.comm.exposed_ms += t.exposed_ms;
    }
    for (auto& sp : spans) sp.start_ms -= t0_ms, sp.end_ms -= t0_ms;
    r.last_timeline = std::move(spans);
    r.step_ms.push_back(step_ms(t0, comm));
    if (after_step) after_step(n, model.params(), grid);
  }
  r.post_validation = optim.post_validation_log();
  return r;
}

}  // namespace pb
