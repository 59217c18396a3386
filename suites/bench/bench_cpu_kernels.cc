/* The optimized CPU kernels (optimized/kernels/cpu) at the default model's shapes
 * (H 256, A 8, G 4, D 32, F 768, V 2048; N = B*S = 4*128 tokens; fp32), for 1 and 2 kernel
 * threads (the argument). Counters: FLOP/s for the products, bytes/s of the compulsory
 * traffic (each input read once, each output written once) for the memory-bound ops.
 *   bench_cpu_kernels [--benchmark_filter=Attention]
 * The per-kernel floors and measurements are in optimized/kernels/cpu/NOTES.md. */
#include <benchmark/benchmark.h>

#include <vector>

#include "optimized/kernels/cpu/parallel.h"
#include "optimized/kernels/ops.h"
#include "reference/common/counter_rng.h"

namespace {

using pb::DType;
using pb::Tensor;
namespace ops = pb::ops;

constexpr int64_t B = 4, S = 128, N = B * S, H = 256, A = 8, G = 4, D = 32, F = 768, V = 2048;

Tensor randn(std::vector<int64_t> shape, uint64_t seed) {
  Tensor t = Tensor::empty(std::move(shape), pb::MemCategory::Workspace, DType::F32, pb::Device::CPU);
  pb::CounterRng rng(seed, "bench");
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = float(rng.normal(uint64_t(i)));
  return t;
}

void counters(benchmark::State& s, double flops, double bytes) {
  if (flops > 0) s.counters["FLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
  if (bytes > 0) s.counters["bytes/s"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate);
}

// Linear, the model's shapes: args (threads, in, out).
void BM_LinearForward(benchmark::State& s) {
  pb::cpu::set_threads(int(s.range(0)));
  const int64_t in = s.range(1), out = s.range(2);
  const Tensor x = randn({N, in}, 1), w = randn({out, in}, 2);
  Tensor y = randn({N, out}, 3);
  for (auto _ : s) ops::linear_forward(y, x, w);
  counters(s, 2.0 * N * in * out, 0);
}
void BM_LinearBackwardInput(benchmark::State& s) {
  pb::cpu::set_threads(int(s.range(0)));
  const int64_t in = s.range(1), out = s.range(2);
  const Tensor dy = randn({N, out}, 1), w = randn({out, in}, 2);
  Tensor dx = randn({N, in}, 3);
  for (auto _ : s) ops::linear_backward_input(dx, dy, w);
  counters(s, 2.0 * N * in * out, 0);
}
void BM_LinearBackwardWeight(benchmark::State& s) {
  pb::cpu::set_threads(int(s.range(0)));
  const int64_t in = s.range(1), out = s.range(2);
  const Tensor dy = randn({N, out}, 1), x = randn({N, in}, 2);
  Tensor dw = randn({out, in}, 3);
  for (auto _ : s) ops::linear_backward_weight(dw, dy, x);
  counters(s, 2.0 * N * in * out, 0);
}
void linear_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"threads", "in", "out"});
  for (int t : {1, 2})
    for (auto [in, out] : {std::pair<int, int>{H, A * D}, {H, G * D}, {H, F}, {F, H}, {H, V}})  // q/o, k/v, up, down, head
      b->Args({t, in, out});
}
BENCHMARK(BM_LinearForward)->Apply(linear_shapes)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_LinearBackwardInput)->Apply(linear_shapes)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_LinearBackwardWeight)->Apply(linear_shapes)->Unit(benchmark::kMicrosecond);

// Causal attention's useful FLOPs, the visible half only: forward 2 products of 2 B A S^2 D
// each, halved; the backward's 5 products (S recomputed, dV, dP, dQ, dK) 2.5x that.
double attention_flops() { return 4.0 * B * A * S * S * D / 2; }

void BM_AttentionForward(benchmark::State& s) {
  pb::cpu::set_threads(int(s.range(0)));
  const Tensor q = randn({N, A * D}, 1), k = randn({N, G * D}, 2), v = randn({N, G * D}, 3);
  Tensor o = randn({N, A * D}, 4), lse = randn({B * A, S}, 5);
  for (auto _ : s) ops::attention_forward(o, lse, q, k, v, ops::AttnShape{B, S, A, G, D});
  counters(s, attention_flops(), 0);
}
void BM_AttentionBackward(benchmark::State& s) {
  pb::cpu::set_threads(int(s.range(0)));
  const Tensor q = randn({N, A * D}, 1), k = randn({N, G * D}, 2), v = randn({N, G * D}, 3), dout = randn({N, A * D}, 6);
  Tensor o = randn({N, A * D}, 4), lse = randn({B * A, S}, 5);
  const ops::AttnShape sh{B, S, A, G, D};
  ops::attention_forward(o, lse, q, k, v, sh);
  Tensor dq = randn({N, A * D}, 7), dk = randn({N, G * D}, 8), dv = randn({N, G * D}, 9);
  for (auto _ : s) ops::attention_backward(dq, dk, dv, dout, q, k, v, o, lse, sh);
  counters(s, 2.5 * attention_flops(), 0);
}

constexpr double f4 = 4.0;  // bytes per fp32

void BM_RmsNormForward(benchmark::State& s) {
  pb::cpu::set_threads(int(s.range(0)));
  const Tensor x = randn({N, H}, 1), g = randn({H}, 2);
  Tensor y = randn({N, H}, 3), rstd = randn({N}, 4);
  for (auto _ : s) ops::rmsnorm_forward(y, rstd, x, g, 1e-5f);
  counters(s, 0, f4 * 2 * N * H);
}
void BM_RmsNormBackward(benchmark::State& s) {
  pb::cpu::set_threads(int(s.range(0)));
  const Tensor x = randn({N, H}, 1), g = randn({H}, 2), dy = randn({N, H}, 3);
  Tensor y = randn({N, H}, 4), rstd = randn({N}, 5), dx = randn({N, H}, 6), dg = randn({H}, 7);
  ops::rmsnorm_forward(y, rstd, x, g, 1e-5f);
  for (auto _ : s) ops::rmsnorm_backward(dx, dg, dy, x, rstd, g);
  counters(s, 0, f4 * 3 * N * H);
}
void BM_RopeForward(benchmark::State& s) {
  pb::cpu::set_threads(int(s.range(0)));
  const Tensor x = randn({N, A * D}, 1);
  Tensor y = randn({N, A * D}, 2);
  std::vector<int64_t> pos;
  for (int64_t t = 0; t < N; ++t) pos.push_back(t % S);
  for (auto _ : s) ops::rope_forward(y, x, pos, D, 10000.0);
  counters(s, 0, f4 * 2 * N * A * D);
}
void BM_SwiGluForward(benchmark::State& s) {
  pb::cpu::set_threads(int(s.range(0)));
  const Tensor a = randn({N, F}, 1), u = randn({N, F}, 2);
  Tensor y = randn({N, F}, 3);
  for (auto _ : s) ops::swiglu_forward(y, a, u);
  counters(s, 0, f4 * 3 * N * F);
}
void BM_SwiGluBackward(benchmark::State& s) {
  pb::cpu::set_threads(int(s.range(0)));
  const Tensor a = randn({N, F}, 1), u = randn({N, F}, 2), dy = randn({N, F}, 3);
  Tensor da = randn({N, F}, 4), du = randn({N, F}, 5);
  for (auto _ : s) ops::swiglu_backward(da, du, dy, a, u);
  counters(s, 0, f4 * 5 * N * F);
}
// The cross-entropy over (N, V) logits: forward (row max, sum of exp, target logit) and
// backward, as the head runs them on one rank.
void BM_CrossEntropy(benchmark::State& s) {
  pb::cpu::set_threads(int(s.range(0)));
  const Tensor z = randn({N, V}, 1);
  Tensor mx = randn({N}, 2), se = randn({N}, 3), tl = randn({N}, 4), dz = randn({N, V}, 5);
  std::vector<int64_t> labels;
  for (int64_t t = 0; t < N; ++t) labels.push_back((t * 389) % V);
  for (auto _ : s) {
    ops::ce_row_max(mx, z);
    ops::ce_target_logit(tl, z, labels, 0);
    ops::ce_sum_exp(se, z, mx);
    ops::ce_backward(dz, z, mx, se, labels, 0, 1.0f / float(N));
  }
  counters(s, 0, f4 * 2 * N * V);
}
// AdamW over the default model's 4.2 M parameters as one tensor: w, g, m, v read, w, m, v written.
void BM_AdamW(benchmark::State& s) {
  pb::cpu::set_threads(int(s.range(0)));
  const int64_t n = 4 * (H * (A * D + 2 * G * D) + A * D * H + 3 * H * F) + 2 * V * H;
  Tensor w = randn({n}, 1), m = randn({n}, 3), v = randn({n}, 4);
  const Tensor g = randn({n}, 2);
  for (int64_t i = 0; i < n; ++i) v.f32()[i] = v.f32()[i] * v.f32()[i];
  const ops::AdamHyper h{1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.1f, 0.05f, 1.0f};
  for (auto _ : s) ops::adamw(w, g, m, v, h);
  counters(s, 0, f4 * 7 * double(n));
}
#define PB_THREADS(bm) BENCHMARK(bm)->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond)
PB_THREADS(BM_AttentionForward);
PB_THREADS(BM_AttentionBackward);
PB_THREADS(BM_RmsNormForward);
PB_THREADS(BM_RmsNormBackward);
PB_THREADS(BM_RopeForward);
PB_THREADS(BM_SwiGluForward);
PB_THREADS(BM_SwiGluBackward);
PB_THREADS(BM_CrossEntropy);
PB_THREADS(BM_AdamW);

}  // namespace

BENCHMARK_MAIN();
