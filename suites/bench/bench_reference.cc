/* Timing of the reference: one training step of the default config (float), and the
 * attention op. Not a performance target: the reference is for reading. */
#include <benchmark/benchmark.h>

#include "reference/model/flops.h"
#include "reference/model/train.h"

namespace {

using namespace pb::ref;

void BM_ReferenceTrainStep(benchmark::State& state) {
  ModelConfig mc;  // parabench-ref's default config
  TrainConfig tc;
  Trainer<float> tr(mc, tc, init_params<float>(mc, tc.seed));
  for (auto _ : state) benchmark::DoNotOptimize(tr.step());
  const double tokens = double(tc.global_batch() * tc.seq_length);
  state.counters["tokens/s"] = benchmark::Counter(tokens, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["FLOP/s"] =
      benchmark::Counter(tokens * train_flops_per_token(mc, tc.seq_length), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_ReferenceTrainStep)->Unit(benchmark::kMillisecond)->MinTime(2.0);

void BM_ReferenceAttentionForward(benchmark::State& state) {
  const Index B = 4, S = state.range(0), A = 8, G = 4, D = 32;
  Mat<float> q = Mat<float>::Random(B * S, A * D), k = Mat<float>::Random(B * S, G * D), v = Mat<float>::Random(B * S, G * D);
  Mat<float> o, lse;
  const auto pos = iota_positions(S);
  for (auto _ : state) {
    attention_forward(o, lse, q, k, v, AttentionShape{B, S, S, A, G, D}, pos, pos);
    benchmark::DoNotOptimize(o.data());
  }
}
BENCHMARK(BM_ReferenceAttentionForward)->Arg(128)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
