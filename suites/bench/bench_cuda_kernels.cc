/* Our CUDA kernels through the ops API (optimized/kernels/ops.h) on device tensors, at the
 * issue-19 shapes (bf16, batch 1; H 4096, S 4096 and 8192, D 128, A 32, G 8, F 14336; MoE
 * E 8, K 2), next to the two ceilings of the same run. scripts/device/peer_pytorch.py runs
 * the same ops through PyTorch; scripts/device/join_gpu_bench.py puts both side by side
 * (scripts/device/bench-gpu.sh runs all three on the GPU machine).
 *
 *   ceiling_copy          cudaMemcpyAsync device to device, 1 GiB: bytes read + written
 *   ceiling_gemm          ops::linear_forward bf16 8192^3 (cuBLAS, fp32 accumulation)
 *   attention_{fwd,bwd,fwdbwd}/S4096, /S8192   causal GQA (FlashAttention's recurrences,
 *                         Dao et al., arXiv 2205.14135 / 2307.08691), bf16, lse fp32
 *   rmsnorm_{fwd,bwd}     (S, H), bf16 x, g, y, dx; fp32 rstd and dg (Zhang & Sennrich 2019)
 *   swiglu_{fwd,bwd}      (S, F), bf16 (Shazeer, arXiv 2002.05202)
 *   rope_{fwd,bwd}        (S, H) = (S, A*D), rotate_half (Su et al., arXiv 2104.09864)
 *   moe_up_{fwd,bwd_input,bwd_weight}, moe_down_fwd   the MoE expert GEMMs through
 *                         ops::grouped_linear_*: M = S*K rows in E balanced groups, bf16,
 *                         dW an fp32 main grad (PyTorch's peer writes a bf16 dW)
 *   dense_up_fwd          the same FLOPs as moe_up_fwd as one dense GEMM (ops::linear_forward)
 *
 * Conventions (the same as peer_pytorch.py's header):
 *   timing   per call: the L2 flushed (cudaMemsetAsync of 256 MiB), CUDA events around the
 *            call on its stream (UseManualTime); --warmup=N untimed calls first (3), then
 *            --reps=N timed calls (20): the counters ms_median, ms_min, ms_max.
 *   FLOPs    GEMM 2 m n k; causal attention forward 2*2*B*A*S^2*D/2 (two GEMMs, half the
 *            scores masked), backward 2.5x, fwd+bwd 3.5x.
 *   bytes    the principal tensors, each read or written once, 2 bytes per bf16 element
 *            (vectors such as g, rstd, positions left out): rmsnorm fwd 2 S H, bwd 3 S H;
 *            swiglu fwd 3 S F, bwd 5 S F; rope 2 S H; the copy 2x its size.
 *   counters FLOP/s or bytes/s at the median time; the label is the shape.
 *
 *   bench_cuda_kernels [--reps=N] [--warmup=N] [--benchmark_filter=attention]
 *                      [--benchmark_out=ours.json --benchmark_out_format=json]
 * With no GPU visible it prints "no CUDA device visible" and exits 0.
 */
#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "optimized/core/cuda_check.h"
#include "optimized/core/device.h"
#include "optimized/core/index_tensor.h"
#include "optimized/kernels/ops.h"

namespace {

using pb::Device;
using pb::DType;
using pb::Tensor;
namespace ops = pb::ops;

constexpr int64_t B = 1, H = 4096, D = 128, A = 32, G = 8, F = 14336, E = 8, K = 2;
constexpr int64_t S0 = 4096;  // the sequence of the element-wise ops and the MoE tokens
constexpr double kBf16 = 2;   // bytes per element
constexpr size_t kFlushBytes = size_t(256) << 20;
constexpr size_t kCopyBytes = size_t(1) << 30;
constexpr int64_t kGemmN = 8192;

int g_reps = 20, g_warmup = 3;
void* g_flush = nullptr;

// ---- device data -------------------------------------------------------------------------

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform in [-scale, scale), a pure function of (seed, i): never zeros (DESIGN.md).
float uniform(uint64_t seed, int64_t i, float scale) {
  const uint64_t r = splitmix64(seed * 0x100000001b3ull + uint64_t(i));
  return scale * (float(r >> 40) * (2.0f / 16777216.0f) - 1.0f);
}

Tensor host_uniform(const std::vector<int64_t>& shape, DType dt, uint64_t seed, float scale) {
  Tensor t = Tensor::empty(shape, pb::MemCategory::Workspace, dt, Device::CPU);
  const int64_t n = t.numel();
  if (dt == DType::BF16)
    for (int64_t i = 0; i < n; ++i) t.bf16_bits()[i] = pb::float_to_bf16(uniform(seed, i, scale));
  else
    for (int64_t i = 0; i < n; ++i) t.f32()[i] = uniform(seed, i, scale);
  return t;
}

// Device tensors by name, made once and shared by the benchmarks of one shape (the S 8192
// attention inputs are 64 MiB each; the MoE weights about 1 GiB).
std::map<std::string, Tensor>& cache() {
  static std::map<std::string, Tensor> c;
  return c;
}

Tensor& dev(const std::string& name, const std::vector<int64_t>& shape, DType dt = DType::BF16, float scale = 1.0f) {
  auto it = cache().find(name);
  if (it == cache().end())
    it = cache().emplace(name, pb::to_device(host_uniform(shape, dt, std::hash<std::string>{}(name), scale),
                                             Device::CUDA)).first;
  return it->second;
}

// ---- timing ------------------------------------------------------------------------------

cudaStream_t stream() { return static_cast<cudaStream_t>(pb::current_stream(Device::CUDA).cuda_stream()); }

struct EventPair {
  cudaEvent_t start{}, stop{};
  EventPair() {
    CUDA_CHECK(cudaEventCreate(&start));
    CUDA_CHECK(cudaEventCreate(&stop));
  }
  ~EventPair() {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
  }
  EventPair(const EventPair&) = delete;
  EventPair& operator=(const EventPair&) = delete;
};

// One call timed on the device: L2 written first, events around the call.
double timed_call_ms(const std::function<void()>& call, EventPair& ev) {
  CUDA_CHECK(cudaMemsetAsync(g_flush, 0, kFlushBytes, stream()));
  CUDA_CHECK(cudaEventRecord(ev.start, stream()));
  call();
  CUDA_CHECK(cudaEventRecord(ev.stop, stream()));
  CUDA_CHECK(cudaEventSynchronize(ev.stop));
  float ms = 0;
  CUDA_CHECK(cudaEventElapsedTime(&ms, ev.start, ev.stop));
  return ms;
}

// Median, min and max of the samples and the rate at the median.
void report(benchmark::State& st, std::vector<double> ms, double flops, double bytes) {
  if (ms.empty()) return;
  std::sort(ms.begin(), ms.end());
  const size_t n = ms.size();
  const double med = n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
  st.counters["ms_median"] = med;
  st.counters["ms_min"] = ms.front();
  st.counters["ms_max"] = ms.back();
  if (flops > 0) st.counters["FLOP/s"] = flops / (med * 1e-3);
  if (bytes > 0) st.counters["bytes/s"] = bytes / (med * 1e-3);
}

// The benchmark loop: warm-up, then one flushed, event-timed call per iteration.
void time_calls(benchmark::State& st, const std::function<void()>& call, double flops, double bytes) {
  for (int i = 0; i < g_warmup; ++i) call();
  CUDA_CHECK(cudaStreamSynchronize(stream()));
  EventPair ev;
  std::vector<double> ms;
  for (auto _ : st) {
    const double t = timed_call_ms(call, ev);
    ms.push_back(t);
    st.SetIterationTime(t * 1e-3);
  }
  report(st, std::move(ms), flops, bytes);
}

// A benchmark body: sets the label, builds its tensors, times its call. An op's error
// (a shape check) skips the row with its one line.
using Body = std::function<void(benchmark::State&)>;

void add(const std::string& name, Body body) {
  benchmark::RegisterBenchmark(name.c_str(), [body](benchmark::State& st) {
    try {
      body(st);
    } catch (const std::exception& e) {
      st.SkipWithError(e.what());
    }
  })->UseManualTime()->Iterations(g_reps)->Unit(benchmark::kMillisecond);
}

// ---- the ceilings --------------------------------------------------------------------------

void ceiling_copy(benchmark::State& st) {
  st.SetLabel("1 GiB, cudaMemcpyAsync device to device");
  const int64_t n = int64_t(kCopyBytes / 2);
  Tensor& src = dev("copy_src", {n});
  Tensor& dst = dev("copy_dst", {n});
  const auto copy = [&] {
    CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), kCopyBytes, cudaMemcpyDeviceToDevice, stream()));
  };
  time_calls(st, copy, 0, 2.0 * double(kCopyBytes));
}

void ceiling_gemm(benchmark::State& st) {
  st.SetLabel("8192x8192x8192 bf16, ops::linear_forward (cuBLAS)");
  const int64_t n = kGemmN;
  const Tensor& x = dev("gemm_x", {n, n});
  const Tensor& w = dev("gemm_w", {n, n});
  Tensor& y = dev("gemm_y", {n, n});
  time_calls(st, [&] { ops::linear_forward(y, x, w); }, 2.0 * double(n) * double(n) * double(n), 0);
}

// ---- attention ---------------------------------------------------------------------------------

double attention_fwd_flops(int64_t S) { return 2.0 * 2.0 * double(B * A) * double(S) * double(S) * double(D) / 2; }

struct AttnData {
  ops::AttnShape shape;
  Tensor q, k, v, o, lse, dout, dq, dk, dv;
};

AttnData attention_data(int64_t S) {
  const std::string s = "attn" + std::to_string(S) + "_";
  const int64_t N = B * S;
  return AttnData{ops::AttnShape{B, S, A, G, D},
                  dev(s + "q", {N, A * D}), dev(s + "k", {N, G * D}), dev(s + "v", {N, G * D}),
                  dev(s + "o", {N, A * D}), dev(s + "lse", {B * A, S}, DType::F32),
                  dev(s + "do", {N, A * D}), dev(s + "dq", {N, A * D}), dev(s + "dk", {N, G * D}),
                  dev(s + "dv", {N, G * D})};
}

std::string attention_label(int64_t S) {
  return "B 1, S " + std::to_string(S) + ", A 32, G 8, D 128, causal, bf16";
}

void attention_fwd(benchmark::State& st, int64_t S) {
  st.SetLabel(attention_label(S));
  AttnData d = attention_data(S);
  time_calls(st, [&] { ops::attention_forward(d.o, d.lse, d.q, d.k, d.v, d.shape); }, attention_fwd_flops(S), 0);
}

void attention_bwd(benchmark::State& st, int64_t S) {
  st.SetLabel(attention_label(S));
  AttnData d = attention_data(S);
  ops::attention_forward(d.o, d.lse, d.q, d.k, d.v, d.shape);  // the saved o and lse
  time_calls(st, [&] { ops::attention_backward(d.dq, d.dk, d.dv, d.dout, d.q, d.k, d.v, d.o, d.lse, d.shape); },
             2.5 * attention_fwd_flops(S), 0);
}

void attention_fwdbwd(benchmark::State& st, int64_t S) {
  st.SetLabel(attention_label(S));
  AttnData d = attention_data(S);
  time_calls(st, [&] {
    ops::attention_forward(d.o, d.lse, d.q, d.k, d.v, d.shape);
    ops::attention_backward(d.dq, d.dk, d.dv, d.dout, d.q, d.k, d.v, d.o, d.lse, d.shape);
  }, 3.5 * attention_fwd_flops(S), 0);
}

// ---- the memory-bound ops ---------------------------------------------------------------------

const std::string kRowsH = "(4096, 4096) bf16";
const std::string kRowsF = "(4096, 14336) bf16";

void rmsnorm_fwd(benchmark::State& st) {
  st.SetLabel(kRowsH);
  const Tensor& x = dev("x_SH", {S0, H});
  const Tensor& g = dev("g_H", {H});
  Tensor& y = dev("y_SH", {S0, H});
  Tensor& rstd = dev("rstd_S", {S0}, DType::F32);
  time_calls(st, [&] { ops::rmsnorm_forward(y, rstd, x, g, 1e-5f); }, 0, kBf16 * 2 * S0 * H);
}

void rmsnorm_bwd(benchmark::State& st) {
  st.SetLabel(kRowsH);
  const Tensor& x = dev("x_SH", {S0, H});
  const Tensor& g = dev("g_H", {H});
  const Tensor& dy = dev("dy_SH", {S0, H});
  Tensor& y = dev("y_SH", {S0, H});
  Tensor& rstd = dev("rstd_S", {S0}, DType::F32);
  Tensor& dx = dev("dx_SH", {S0, H});
  Tensor& dg = dev("dg_H", {H}, DType::F32);
  ops::rmsnorm_forward(y, rstd, x, g, 1e-5f);  // the saved rstd
  time_calls(st, [&] { ops::rmsnorm_backward(dx, dg, dy, x, rstd, g); }, 0, kBf16 * 3 * S0 * H);
}

void swiglu_fwd(benchmark::State& st) {
  st.SetLabel(kRowsF);
  const Tensor& gate = dev("gate_SF", {S0, F}, DType::BF16, 3.0f);
  const Tensor& up = dev("up_SF", {S0, F});
  Tensor& y = dev("y_SF", {S0, F});
  time_calls(st, [&] { ops::swiglu_forward(y, gate, up); }, 0, kBf16 * 3 * S0 * F);
}

void swiglu_bwd(benchmark::State& st) {
  st.SetLabel(kRowsF);
  const Tensor& gate = dev("gate_SF", {S0, F}, DType::BF16, 3.0f);
  const Tensor& up = dev("up_SF", {S0, F});
  const Tensor& dy = dev("dy_SF", {S0, F});
  Tensor& dgate = dev("dgate_SF", {S0, F});
  Tensor& dup = dev("dup_SF", {S0, F});
  time_calls(st, [&] { ops::swiglu_backward(dgate, dup, dy, gate, up); }, 0, kBf16 * 5 * S0 * F);
}

pb::IndexTensor positions() {
  auto p = std::vector<int64_t>(size_t(S0));
  for (int64_t i = 0; i < S0; ++i) p[size_t(i)] = i;
  return pb::IndexTensor(std::move(p), Device::CUDA);
}

void rope(benchmark::State& st, bool backward) {
  st.SetLabel("(4096, 32 x 128) bf16, theta 1e4");
  const pb::IndexTensor pos = positions();
  const Tensor& x = dev("x_SH", {S0, H});
  Tensor& y = dev("y_SH", {S0, H});
  time_calls(st, [&] {
    if (backward)
      ops::rope_backward(y, x, pos, D, 10000.0);
    else
      ops::rope_forward(y, x, pos, D, 10000.0);
  }, 0, kBf16 * 2 * S0 * H);
}

// ---- the MoE expert GEMMs ----------------------------------------------------------------------

constexpr int64_t kMoeRows = S0 * K;  // 8192 token copies

std::vector<int64_t> balanced_groups() { return std::vector<int64_t>(size_t(E), kMoeRows / E); }

std::string moe_label(int64_t in, int64_t out) {
  return "M 8192 in 8 groups of 1024, " + std::to_string(in) + " -> " + std::to_string(out) + ", bf16";
}

double moe_flops(int64_t in, int64_t out) { return 2.0 * double(kMoeRows) * double(in) * double(out); }

// Projection "up" (H -> F) or "down" (F -> H): x (M, in), w (E, out, in), y (M, out).
void moe_fwd(benchmark::State& st, int64_t in, int64_t out) {
  st.SetLabel(moe_label(in, out));
  const std::string p = "moe" + std::to_string(in) + "_";
  const Tensor& x = dev(p + "x", {kMoeRows, in});
  const Tensor& w = dev(p + "w", {E, out, in}, DType::BF16, 0.02f);
  Tensor& y = dev(p + "y", {kMoeRows, out});
  const auto sizes = balanced_groups();
  time_calls(st, [&] { ops::grouped_linear_forward(y, x, w, sizes); }, moe_flops(in, out), 0);
}

void moe_up_bwd_input(benchmark::State& st) {
  st.SetLabel(moe_label(H, F));
  const Tensor& w = dev("moe4096_w", {E, F, H}, DType::BF16, 0.02f);
  const Tensor& dy = dev("moe4096_dy", {kMoeRows, F});
  Tensor& dx = dev("moe4096_dx", {kMoeRows, H});
  const auto sizes = balanced_groups();
  time_calls(st, [&] { ops::grouped_linear_backward_input(dx, dy, w, sizes); }, moe_flops(H, F), 0);
}

void moe_up_bwd_weight(benchmark::State& st) {
  st.SetLabel(moe_label(H, F) + ", dW fp32 +=");
  const Tensor& x = dev("moe4096_x", {kMoeRows, H});
  const Tensor& dy = dev("moe4096_dy", {kMoeRows, F});
  Tensor& dw = dev("moe4096_dw", {E, F, H}, DType::F32, 0.01f);
  const auto sizes = balanced_groups();
  time_calls(st, [&] { ops::grouped_linear_backward_weight(dw, dy, x, sizes); }, moe_flops(H, F), 0);
}

void dense_up_fwd(benchmark::State& st) {
  st.SetLabel("(8192, 4096) x (14336, 4096)^T bf16, ops::linear_forward");
  const Tensor& x = dev("moe4096_x", {kMoeRows, H});
  const Tensor& w = dev("dense_w", {F, H}, DType::BF16, 0.02f);
  Tensor& y = dev("moe4096_y", {kMoeRows, F});
  time_calls(st, [&] { ops::linear_forward(y, x, w); }, moe_flops(H, F), 0);
}

// ---- registration and main --------------------------------------------------------------------

void register_all() {
  add("ceiling_copy", ceiling_copy);
  add("ceiling_gemm", ceiling_gemm);
  for (int64_t S : {int64_t(4096), int64_t(8192)}) {
    const std::string s = "/S" + std::to_string(S);
    add("attention_fwd" + s, [S](benchmark::State& st) { attention_fwd(st, S); });
    add("attention_bwd" + s, [S](benchmark::State& st) { attention_bwd(st, S); });
    add("attention_fwdbwd" + s, [S](benchmark::State& st) { attention_fwdbwd(st, S); });
  }
  add("rmsnorm_fwd", rmsnorm_fwd);
  add("rmsnorm_bwd", rmsnorm_bwd);
  add("swiglu_fwd", swiglu_fwd);
  add("swiglu_bwd", swiglu_bwd);
  add("rope_fwd", [](benchmark::State& st) { rope(st, false); });
  add("rope_bwd", [](benchmark::State& st) { rope(st, true); });
  add("moe_up_fwd", [](benchmark::State& st) { moe_fwd(st, H, F); });
  add("moe_up_bwd_input", moe_up_bwd_input);
  add("moe_up_bwd_weight", moe_up_bwd_weight);
  add("moe_down_fwd", [](benchmark::State& st) { moe_fwd(st, F, H); });
  add("dense_up_fwd", dense_up_fwd);
}

// --reps=N / --warmup=N (removed from argv before google-benchmark reads it). false with
// one line on stderr for a bad value.
bool take_int_flag(std::string_view arg, std::string_view flag, int lo, int& value, bool& taken) {
  taken = arg.substr(0, flag.size()) == flag;
  if (!taken) return true;
  const std::string_view v = arg.substr(flag.size());
  int x = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
  if (ec != std::errc() || end != v.data() + v.size() || x < lo) {
    std::fprintf(stderr, "bench_cuda_kernels: %.*s needs an integer >= %d, got '%.*s'\n", int(flag.size() - 1),
                 flag.data(), lo, int(v.size()), v.data());
    return false;
  }
  value = x;
  return true;
}

bool parse_own_flags(int& argc, char** argv) {
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    bool reps = false, warm = false;
    if (!take_int_flag(argv[i], "--reps=", 1, g_reps, reps) || !take_int_flag(argv[i], "--warmup=", 0, g_warmup, warm))
      return false;
    if (!reps && !warm) argv[out++] = argv[i];
  }
  argc = out;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (!parse_own_flags(argc, argv)) return 2;
  if (pb::cuda_device_count() == 0) {
    std::puts("no CUDA device visible");
    return 0;
  }
  pb::cuda_select_device(0);
  CUDA_CHECK(cudaMalloc(&g_flush, kFlushBytes));
  benchmark::AddCustomContext("device", pb::cuda_device_name());
  benchmark::AddCustomContext("cuda", pb::cuda_versions());
  benchmark::AddCustomContext("reps", std::to_string(g_reps));
  benchmark::AddCustomContext("warmup", std::to_string(g_warmup));
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  cache().clear();  // device memory back before the CUDA runtime unloads
  CUDA_CHECK(cudaFree(g_flush));
  return 0;
}
