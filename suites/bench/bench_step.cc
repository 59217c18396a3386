/* The optimized backend's whole training step on one rank, on the CPU: the default model
 * (H 256, A 8, G 4, F 768, V 2048, L 4; B 4, S 128; fp32), forward, backward, global-norm
 * clip and AdamW, as `parabench run` times it (optimized/train/train_step.h: from a barrier
 * to the last kernel). The peer is scripts/bench_torch_cpu.py; scripts/bench_cpu.sh runs
 * both in one go and prints the ratio (README "CPU speed").
 *
 * One benchmark iteration is one step: each repetition trains a fresh model for two steps
 * and reports the second (the first warms up: the allocator's cache, the RoPE table), so
 * the aggregates over repetitions are over independent steps. The argument is the kernel
 * thread count (kernels/cpu/parallel.h).
 *   bench_step --benchmark_repetitions=9 [--benchmark_filter=threads:1/] */
#include <benchmark/benchmark.h>
#include <mpi.h>

#include "optimized/kernels/cpu/parallel.h"
#include "optimized/kernels/cpu/sgemm.h"
#include "optimized/train/train_step.h"
#include "reference/model/flops.h"

namespace {

void BM_TrainStep(benchmark::State& state) {
  pb::cpu::set_threads(int(state.range(0)));
  pb::TrainStepConfig c;  // the default model and batch, one rank, fp32, CPU
  c.train.steps = 2;
  for (auto _ : state) {
    const pb::TrainRun r = pb::train_distributed(c, MPI_COMM_WORLD);
    state.SetIterationTime(r.step_ms.back() / 1e3);
  }
  const double tokens = double(c.train.global_batch() * c.train.seq_length);
  state.counters["tokens/s"] = benchmark::Counter(tokens, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["FLOP/s"] = benchmark::Counter(tokens * pb::ref::train_flops_per_token(c.model, c.train.seq_length),
                                                benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = double(state.range(0));
}
BENCHMARK(BM_TrainStep)
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("cpu_gemm", pb::cpu::sgemm_backend());  // which SGEMM kernel ran
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  pb::cpu::set_threads(1);
  MPI_Finalize();
  return 0;
}
