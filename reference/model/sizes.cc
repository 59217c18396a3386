/* Size bounds and memory figures (see sizes.h). */
#include "reference/model/sizes.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "reference/common/error.h"
#include "reference/model/flops.h"

namespace pb::ref {

namespace {

std::string sci(long double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2Le", v);
  return buf;
}

}  // namespace

void check_size_bounds(const ModelConfig& mc, const TrainConfig& tc, int64_t dp, const std::string& who) {
  using LD = long double;
  const LD B = LD(tc.micro_batch_size), S = LD(tc.seq_length), L = LD(mc.num_hidden_layers);
  const LD H = LD(mc.hidden_size), F = LD(mc.intermediate_size), V = LD(mc.vocab_size);
  const LD A = LD(mc.num_attention_heads), G = LD(mc.num_key_value_heads), D = LD(mc.head_dim());
  const LD EF = LD(mc.num_local_experts) * LD(mc.expert_ffn());
  const LD m = LD(tc.num_micro_batches) * LD(dp), steps = LD(std::max<int64_t>(tc.steps, 1));
  const LD W = std::max({H, F, V, A * D, G * D, EF});
  const LD limit = std::ldexp(1.0L, 63);
  const LD act = steps * m * (L + 2) * B * S * W * 64, par = steps * (L + 2) * W * W * 512;
  PB_REQUIRE(act < limit, who, "sizes too large to count in 64 bits: steps * m * dp * (L+2) * B * S * ",
             "max(H, F, V, A*D) * 64 = ", sci(act), " >= 2^63 (B micro_batch_size ", tc.micro_batch_size,
             ", S seq_length ", tc.seq_length, ")");
  PB_REQUIRE(par < limit, who, "sizes too large to count in 64 bits: steps * (L+2) * max(H, F, V, A*D)^2 * 512 = ",
             sci(par), " >= 2^63 (hidden_size ", mc.hidden_size, ", intermediate_size ", mc.intermediate_size,
             ", vocab_size ", mc.vocab_size, ")");
  PB_REQUIRE(mc.num_hidden_layers <= 100000, who, "num_hidden_layers ", mc.num_hidden_layers,
             " is more than 100000");
  PB_REQUIRE(tc.num_micro_batches <= 1000000, who, "num_micro_batches ", tc.num_micro_batches,
             " is more than 1000000 per step");
  PB_REQUIRE(steps * m <= 1e7L, who, "steps * num_micro_batches", dp > 1 ? " * dp" : "", " = ", sci(steps * m),
             " micro-batch passes is more than 10^7 per run");
}

double reference_bytes_lower_bound(const ModelConfig& mc, const TrainConfig& tc, int64_t bytes_per_element) {
  const double tokens = double(tc.micro_batch_size) * double(tc.seq_length);
  const double rows = double(mc.vocab_size) + double(mc.num_hidden_layers) * double(mc.hidden_size);
  return (4.0 * double(analytic_param_count(mc)) + tokens * rows) * double(bytes_per_element);
}

int64_t host_memory_available() {
  std::ifstream in("/proc/meminfo");
  for (std::string line; std::getline(in, line);) {
    std::istringstream ss(line);
    std::string key;
    int64_t kib = 0;
    if (ss >> key >> kib && key == "MemAvailable:") return kib * 1024;
  }
  const long pages = ::sysconf(_SC_AVPHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? int64_t(pages) * page : -1;
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (b >= 1024 && u < 6) b /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", b, units[u]);
  return buf;
}

}  // namespace pb::ref
