/* The opt-in tensor-core flash attention (optimized/kernels/cuda/flash_attention.cu,
 * UNVERIFIED until this test has passed on a GPU) against the fp32 CPU op (the oracle) and
 * against the warp-per-row CUDA kernels on the same bf16 inputs. Part of test_cuda_kernels
 * (ctest gpu.cuda_kernels); skipped where no GPU is visible. The path is switched with
 * cuda::set_flash_attention, not the environment, and restored after each test.
 *
 * Shapes: causal self-attention at B 2, S 37/128/257 (one partial tile, two full tiles,
 * four full and a one-row tile), A 8, G 2 (GQA, 4 query heads per kv head), D 64 and 128;
 * ring-attention steps with explicit positions: load-balanced CP chunks with Sk != S and
 * rows that see no key, unsorted keys with Sk = 130 (a partial key tile and masks inside
 * tiles), a block where no row sees anything; backward also from merged-like statistics
 * (another o, an lse larger than the block's own and finite where it sees nothing).
 * Outputs are pre-filled with NaN, so an element the kernels never write fails.
 *
 * Tolerances (relative error in norm, ||x - ref|| / ||ref||, against the fp32 op on the
 * same bf16-valued inputs):
 *   o, dq, dk, dv: 2e-2. The warp-per-row kernel only rounds its fp32 result to bf16
 *     (about 1e-3 here); the flash kernels also round P and dS to bf16 (8 bits, 2^-9
 *     relative per element) as tensor-core operands, errors that mostly cancel in the sums:
 *     expect a few 1e-3. 2e-2 leaves margin for that and still catches any layout, masking
 *     or rescaling bug, which gives errors of order 1.
 *   lse: 1e-4. It is fp32 throughout (fp32 scores from exact bf16 products, l summed from
 *     fp32 P), so only fp32 rounding remains (about 1e-6); a wrong scale or mask moves it
 *     by far more. Infinite entries (rows that see nothing) must match exactly.
 * Rows that see no key must come out exactly 0 in o and dq, and two runs must agree bit for
 * bit (no atomics). Each case prints both paths' errors, for the notes of the GPU session. */
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iostream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "optimized/core/device.h"
#include "optimized/kernels/cuda/flash_attention.h"
#include "optimized/kernels/ops.h"
#include "reference/common/counter_rng.h"
#include "suites/unit/cuda_test_util.h"

namespace pb::test {

namespace {

constexpr double kTolOut = 2e-2, kTolLse = 1e-4;

class CudaFlash : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device visible: GPU kernel tests skipped";
    cuda_select_device(0);
    was_on_ = cuda::flash_attention_enabled();
  }
  void TearDown() override { cuda::set_flash_attention(was_on_); }

 private:
  bool was_on_ = false;
};

Tensor randn(std::vector<int64_t> shape, const std::string& name, float scale = 1.0f) {
  Tensor t = Tensor::empty(std::move(shape), MemCategory::Workspace, DType::F32, Device::CPU);
  CounterRng rng(23, name);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = scale * float(rng.normal(uint64_t(i)));
  return t;
}

Tensor nan_f32(std::vector<int64_t> shape, Device d) {
  Tensor h = Tensor::empty(std::move(shape), MemCategory::Workspace, DType::F32, Device::CPU);
  std::fill_n(h.f32(), h.numel(), std::numeric_limits<float>::quiet_NaN());
  return d == Device::CPU ? h : to_device(h, d);
}

Tensor nan_bf16_dev(std::vector<int64_t> shape) {
  Tensor h = Tensor::empty(std::move(shape), MemCategory::Workspace, DType::BF16, Device::CPU);
  std::fill_n(h.bf16_bits(), h.numel(), uint16_t(0x7fc0));  // quiet NaN
  return to_device(h, Device::CUDA);
}

Tensor dev(const Tensor& h) { return to_device(h, Device::CUDA); }

// Where gpu and ref differ most, as "row r col c: gpu x ref y" (cols: the row width) —
// for a layout bug, the pattern of the bad columns says which fragment is wrong.
std::string worst(const Tensor& gpu, const Tensor& ref, int64_t cols) {
  const Tensor g = f32_host(gpu), c = f32_host(ref);
  double w = -1;
  int64_t at = 0;
  for (int64_t i = 0; i < c.numel() && i < g.numel(); ++i) {
    const double a = g.f32()[i], b = c.f32()[i];
    const double e = std::isnan(a) ? INFINITY : (std::isinf(a) || std::isinf(b)) ? (a == b ? 0 : INFINITY) : std::fabs(a - b);
    if (e > w) w = e, at = i;
  }
  std::ostringstream s;
  s << "worst at row " << at / cols << " col " << at % cols << ": gpu " << g.f32()[at] << " ref " << c.f32()[at];
  return s.str();
}

bool same_bits(const Tensor& x, const Tensor& y) {
  const Tensor a = to_device(x, Device::CPU), b = to_device(y, Device::CPU);
  return a.bytes() == b.bytes() && std::memcmp(a.raw(), b.raw(), size_t(a.bytes())) == 0;
}

// Rows (b*S + i, head a) whose lse is -inf in `lse` (B*A, S) must be exactly 0 in x (B*S, A*D).
int64_t nonzero_in_masked_rows(const Tensor& x, const Tensor& lse, int64_t B, int64_t S, int64_t A, int64_t D) {
  const Tensor h = f32_host(x), l = f32_host(lse);
  int64_t bad = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t a = 0; a < A; ++a)
      for (int64_t i = 0; i < S; ++i) {
        if (!std::isinf(l.f32()[(b * A + a) * S + i])) continue;
        for (int64_t d = 0; d < D; ++d) bad += h.f32()[(b * S + i) * A * D + a * D + d] != 0.0f;
      }
  return bad;
}

struct Case {
  int64_t B, A, G, D, S, Sk;  // Sk 0: S
  std::vector<int64_t> qpos, kpos;
  std::string name;
};

std::vector<int64_t> span(int64_t a, int64_t b) {
  std::vector<int64_t> p;
  for (int64_t i = a; i < b; ++i) p.push_back(i);
  return p;
}
std::vector<int64_t> join(std::vector<int64_t> a, const std::vector<int64_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::vector<Case> self_cases() {
  std::vector<Case> c;
  for (int64_t D : {64, 128})
    for (int64_t S : {37, 128, 257}) c.push_back({2, 8, 2, D, S, 0, {}, {}, "causal"});
  return c;
}

std::vector<Case> ring_cases() {
  std::vector<int64_t> perm;  // 130 key positions, unsorted: 37 j mod 130
  for (int64_t j = 0; j < 130; ++j) perm.push_back(j * 37 % 130);
  std::vector<Case> c;
  for (int64_t D : {64, 128}) {
    // CP = 2 over T = 192, rank 0's queries (chunks 0 and 3) against rank 1's keys: queries
    // 0..47 see nothing, 144..191 see everything; S 96, Sk 80.
    c.push_back({2, 8, 2, D, 96, 80, join(span(0, 48), span(144, 192)), span(60, 140), "ring chunks"});
    // Unsorted keys, Sk 130 (a partial key tile), masks inside every tile.
    c.push_back({1, 8, 2, D, 70, 130, span(60, 130), perm, "unsorted keys"});
  }
  // No row sees anything.
  c.push_back({2, 4, 2, 64, 5, 7, span(0, 5), span(10, 17), "nothing visible"});
  return c;
}

ops::AttnShape shape_of(const Case& c) {
  return ops::AttnShape{.B = c.B, .S = c.S, .A = c.A, .G = c.G, .D = c.D, .Sk = c.Sk, .qpos = c.qpos, .kpos = c.kpos};
}

std::string name_of(const Case& c) {
  std::ostringstream s;
  s << c.name << " B" << c.B << " S" << c.S << " Sk" << (c.Sk ? c.Sk : c.S) << " A" << c.A << " G" << c.G << " D"
    << c.D;
  return s.str();
}

// Statistics as a ring step's backward gets them: the merged lse is at least the block's
// own, and finite where the block sees nothing.
Tensor merged_lse(const Tensor& lse) {
  Tensor m = f32_host(lse);
  Tensor out = Tensor::empty(m.shape(), MemCategory::Workspace, DType::F32, Device::CPU);
  for (int64_t i = 0; i < m.numel(); ++i) out.f32()[i] = std::isinf(m.f32()[i]) ? 0.5f : m.f32()[i] + 0.25f;
  return out;
}

struct Fwd {
  Tensor o, lse;
};
struct Bwd {
  Tensor dq, dk, dv;
};

Fwd gpu_forward(bool flash, const Tensor& q, const Tensor& k, const Tensor& v, const ops::AttnShape& sh) {
  cuda::set_flash_attention(flash);
  Fwd r{nan_bf16_dev({sh.B * sh.S, sh.A * sh.D}), nan_f32({sh.B * sh.A, sh.S}, Device::CUDA)};
  ops::attention_forward(r.o, r.lse, dev(q), dev(k), dev(v), sh);
  return r;
}

Bwd gpu_backward(bool flash, const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o,
                 const Tensor& lse, const ops::AttnShape& sh) {
  cuda::set_flash_attention(flash);
  const int64_t Sk = sh.keys();
  Bwd r{nan_bf16_dev({sh.B * sh.S, sh.A * sh.D}), nan_bf16_dev({sh.B * Sk, sh.G * sh.D}),
        nan_bf16_dev({sh.B * Sk, sh.G * sh.D})};
  ops::attention_backward(r.dq, r.dk, r.dv, dev(dout), dev(q), dev(k), dev(v), dev(o), dev(lse), sh);
  return r;
}

void check_output(const Tensor& flash, const Tensor& warp, const Tensor& ref, int64_t cols, const std::string& what) {
  const double ef = rel(flash, ref), ew = rel(warp, ref);
  std::cout << "[flash] " << what << ": flash " << ef << ", warp-per-row " << ew << "\n";
  EXPECT_LT(ef, kTolOut) << what << " (warp-per-row " << ew << "); " << worst(flash, ref, cols);
  EXPECT_LT(rel(flash, warp), kTolOut) << what << " against the warp-per-row kernel; " << worst(flash, warp, cols);
}

void run_case(const Case& c, bool merged_too) {
  const ops::AttnShape sh = shape_of(c);
  const int64_t B = c.B, S = c.S, Sk = sh.keys(), A = c.A, G = c.G, D = c.D;
  const std::string what = name_of(c);
  const Tensor q = bf16_of(randn({B * S, A * D}, "q")), k = bf16_of(randn({B * Sk, G * D}, "k"));
  const Tensor v = bf16_of(randn({B * Sk, G * D}, "v")), dout = bf16_of(randn({B * S, A * D}, "do"));

  // Forward: the fp32 op on the bf16 values, the warp-per-row kernel, the flash kernel.
  Tensor ro = nan_f32({B * S, A * D}, Device::CPU), rlse = nan_f32({B * A, S}, Device::CPU);
  ops::attention_forward(ro, rlse, f32_host(q), f32_host(k), f32_host(v), sh);
  const Fwd w = gpu_forward(false, q, k, v, sh), f = gpu_forward(true, q, k, v, sh);
  check_output(f.o, w.o, ro, A * D, "o " + what);
  const double el = rel(f.lse, rlse, true);
  EXPECT_LT(el, kTolLse) << "lse " << what << "; " << worst(f.lse, rlse, S);
  std::cout << "[flash] lse " << what << ": flash " << el << ", warp-per-row " << rel(w.lse, rlse, true) << "\n";
  EXPECT_EQ(nonzero_in_masked_rows(f.o, rlse, B, S, A, D), 0) << "o of rows that see nothing, " << what;
  const Fwd f2 = gpu_forward(true, q, k, v, sh);
  EXPECT_TRUE(same_bits(f.o, f2.o) && same_bits(f.lse, f2.lse)) << "flash forward not deterministic, " << what;

  // Backward from the oracle's statistics (o rounded to bf16), and from merged-like ones.
  std::vector<std::pair<Tensor, Tensor>> stats = {{bf16_of(ro), rlse}};
  if (merged_too) stats.emplace_back(bf16_of(randn({B * S, A * D}, "om")), merged_lse(rlse));
  for (size_t t = 0; t < stats.size(); ++t) {
    const auto& [so, sl] = stats[t];
    const std::string w2 = what + (t ? " (merged statistics)" : "");
    Tensor rdq = nan_f32({B * S, A * D}, Device::CPU), rdk = nan_f32({B * Sk, G * D}, Device::CPU),
           rdv = nan_f32({B * Sk, G * D}, Device::CPU);
    ops::attention_backward(rdq, rdk, rdv, f32_host(dout), f32_host(q), f32_host(k), f32_host(v), f32_host(so), sl, sh);
    const Bwd wb = gpu_backward(false, dout, q, k, v, so, sl, sh), fb = gpu_backward(true, dout, q, k, v, so, sl, sh);
    check_output(fb.dq, wb.dq, rdq, A * D, "dq " + w2);
    check_output(fb.dk, wb.dk, rdk, G * D, "dk " + w2);
    check_output(fb.dv, wb.dv, rdv, G * D, "dv " + w2);
    if (t == 0) {
      EXPECT_EQ(nonzero_in_masked_rows(fb.dq, rlse, B, S, A, D), 0) << "dq of rows that see nothing, " << w2;
    }
    const Bwd fb2 = gpu_backward(true, dout, q, k, v, so, sl, sh);
    EXPECT_TRUE(same_bits(fb.dq, fb2.dq) && same_bits(fb.dk, fb2.dk) && same_bits(fb.dv, fb2.dv))
        << "flash backward not deterministic, " << w2;
  }
}

}  // namespace

// The switch: on only for bf16 operands with D 64 or 128; off by default in the test.
TEST_F(CudaFlash, Dispatch) {
  const ops::AttnShape sh{2, 37, 8, 2, 64};
  const Tensor qb = dev(bf16_of(randn({2 * 37, 8 * 64}, "q")));
  const Tensor qf = dev(randn({2 * 37, 8 * 64}, "q"));
  cuda::set_flash_attention(false);
  EXPECT_FALSE(cuda::flash_attention_applies(sh, {&qb}));
  cuda::set_flash_attention(true);
  EXPECT_TRUE(cuda::flash_attention_applies(sh, {&qb}));
  EXPECT_FALSE(cuda::flash_attention_applies(sh, {&qf}));  // fp32: the warp-per-row kernel
  EXPECT_FALSE(cuda::flash_attention_applies(ops::AttnShape{2, 37, 8, 2, 32}, {&qb}));
}

TEST_F(CudaFlash, CausalSelfAttention) {
  for (const Case& c : self_cases()) run_case(c, false);
}

TEST_F(CudaFlash, RingPositionsAndKeyBlocks) {
  for (const Case& c : ring_cases()) run_case(c, true);
}

}  // namespace pb::test
