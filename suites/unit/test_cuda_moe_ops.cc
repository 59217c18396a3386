/* The CUDA MoE router and token permutation (kernels/cuda/moe_router.cu, permute.cu)
 * against the CPU ops (which equal the reference, test_moe_ops.cc):
 *  - router forward: probs and weights to 2e-6, the same top-K (rows of exact ties pick the
 *    lower id on both), prob_sums to 1e-6; E below and above a warp (6, 40, 64); K = 1, 2;
 *    with and without renormalization; also on a created stream (the host results wait
 *    for it);
 *  - router backward: dlogits to 1e-5, aux_grad zero and nonzero, the expert indices as a
 *    CUDA IndexTensor and as a host-only one;
 *  - gather_rows, sum_rows (K = 2, dropped copies), scale_rows (in place too): bit-equal
 *    to the CPU in fp32 and native bf16 (one fp32 multiply / an fp32 sum in k order,
 *    rounded once, as the CPU's emulation); row_dot to 1e-5 (a warp tree sum); no rows.
 * Device outputs are pre-filled with NaN (every element must be written). Part of
 * test_cuda_kernels (gtest_main); skipped with a message where no GPU is visible. */
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "optimized/core/device.h"
#include "optimized/core/stream.h"
#include "optimized/kernels/ops.h"
#include "reference/common/counter_rng.h"
#include "suites/unit/cuda_test_util.h"

namespace pb::test {

class CudaMoeOps : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device visible: GPU kernel tests skipped";
    cuda_select_device(0);
  }
};

namespace {

Tensor host(std::vector<int64_t> shape, DType dt = DType::F32) {
  return Tensor::empty(std::move(shape), MemCategory::Workspace, dt, Device::CPU);
}

Tensor randn(std::vector<int64_t> shape, const std::string& name, DType dt = DType::F32) {
  Tensor f = host(shape);
  CounterRng rng(23, name);
  for (int64_t i = 0; i < f.numel(); ++i) f.f32()[i] = float(rng.normal(uint64_t(i)));
  if (dt == DType::F32) return f;
  Tensor b = host(shape, DType::BF16);
  ops::cast(b, f);
  return b;
}

Tensor dev(const Tensor& h) { return to_device(h, Device::CUDA); }

Tensor nan_host(std::vector<int64_t> shape, DType dt = DType::F32) {
  Tensor h = host(std::move(shape), dt);
  if (dt == DType::F32)
    std::fill_n(h.f32(), h.numel(), std::numeric_limits<float>::quiet_NaN());
  else
    std::fill_n(h.bf16_bits(), h.numel(), uint16_t(0x7fc0));
  return h;
}

Tensor nan_dev(std::vector<int64_t> shape, DType dt = DType::F32) { return dev(nan_host(std::move(shape), dt)); }

// The same bytes (a GPU result on the host against the CPU's).
bool same_bytes(const Tensor& gpu, const Tensor& cpu) {
  const Tensor g = to_device(gpu, Device::CPU);
  return g.bytes() == cpu.bytes() && g.dtype() == cpu.dtype() && std::memcmp(g.raw(), cpu.raw(), g.bytes()) == 0;
}

// Logits (T, E) with exact ties: row 0 all equal, row 1 with experts 2 and 4 best (equal).
Tensor router_logits(int64_t T, int64_t E) {
  Tensor z = randn({T, E}, "cuda_router_logits_" + std::to_string(E));
  for (int64_t e = 0; e < E; ++e) z.f32()[e] = -0.5f;
  for (int64_t e = 0; e < E; ++e) z.f32()[E + e] = (e == 2 || e == 4) ? 4.0f : float(e % 3) * 0.5f;
  return z;
}

// Top-2 copies of T tokens sorted by expert (E experts), `drop` copies with slot -1.
void route(int64_t T, int64_t K, int64_t E, const std::vector<int64_t>& drop, std::vector<int64_t>& rows,
           std::vector<int64_t>& slots) {
  rows.clear();
  slots.assign(size_t(T * K), -1);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t c = 0; c < T * K; ++c) {
      const int64_t t = c / K, k = c % K, ex = (t * 5 + k * 3) % E;
      if (ex == e && std::find(drop.begin(), drop.end(), c) == drop.end()) {
        slots[size_t(c)] = int64_t(rows.size());
        rows.push_back(t);
      }
    }
}

}  // namespace

TEST_F(CudaMoeOps, RouterForwardMatchesCpu) {
  const int64_t T = 37;
  for (int64_t E : {6, 40, 64})
    for (int64_t K : {1, 2})
      for (bool renorm : {false, true}) {
        const std::string what = "E " + std::to_string(E) + " K " + std::to_string(K) + (renorm ? " renorm" : "");
        const Tensor z = router_logits(T, E);
        Tensor p = nan_host({T, E}), w = nan_host({T, K});
        std::vector<int64_t> idx;
        std::vector<double> sums;
        ops::moe_router_forward(p, w, idx, sums, z, K, renorm);
        Tensor gp = nan_dev({T, E}), gw = nan_dev({T, K});
        std::vector<int64_t> gidx;
        std::vector<double> gsums;
        ops::moe_router_forward(gp, gw, gidx, gsums, dev(z), K, renorm);
        EXPECT_LT(rel(gp, p), 2e-6) << what;
        EXPECT_LT(rel(gw, w), 2e-6) << what;
        EXPECT_EQ(gidx, idx) << what;
        EXPECT_EQ(gidx[0], 0) << what;               // all tied: expert 0 first
        EXPECT_EQ(gidx[size_t(K)], 2) << what;       // 2 and 4 tied: 2 first
        if (K == 2) {
          EXPECT_EQ(gidx[1], 1) << what;
          EXPECT_EQ(gidx[size_t(K + 1)], 4) << what;
        }
        ASSERT_EQ(gsums.size(), size_t(E)) << what;
        for (int64_t e = 0; e < E; ++e)
          EXPECT_NEAR(gsums[size_t(e)], sums[size_t(e)], 1e-6 * (1 + sums[size_t(e)])) << what << " expert " << e;
      }
}

TEST_F(CudaMoeOps, RouterForwardOnACreatedStream) {
  const int64_t T = 300, E = 40, K = 2;
  const Tensor z = router_logits(T, E);
  Tensor p = nan_host({T, E}), w = nan_host({T, K});
  std::vector<int64_t> idx;
  std::vector<double> sums;
  ops::moe_router_forward(p, w, idx, sums, z, K, true);
  const Stream s = Stream::create(Device::CUDA);
  Tensor gz = nan_dev({T, E}), gp = nan_dev({T, E}), gw = nan_dev({T, K});
  const Tensor zd = dev(z);
  ops::copy(gz, zd, s);  // queued on s: the router must see it
  std::vector<int64_t> gidx;
  std::vector<double> gsums;
  ops::moe_router_forward(gp, gw, gidx, gsums, gz, K, true, s);
  EXPECT_EQ(gidx, idx);
  for (int64_t e = 0; e < E; ++e) EXPECT_NEAR(gsums[size_t(e)], sums[size_t(e)], 1e-6 * (1 + sums[size_t(e)]));
  s.synchronize();
  EXPECT_LT(rel(gp, p), 2e-6);
  EXPECT_LT(rel(gw, w), 2e-6);
}

TEST_F(CudaMoeOps, RouterBackwardMatchesCpu) {
  const int64_t T = 37;
  for (int64_t E : {6, 40})
    for (int64_t K : {1, 2})
      for (bool renorm : {false, true})
        for (double a : {0.0, 1e-3}) {
          const std::string what = "E " + std::to_string(E) + " K " + std::to_string(K) +
                                   (renorm ? " renorm" : "") + (a != 0 ? " aux" : "");
          const Tensor z = router_logits(T, E);
          Tensor p = host({T, E}), w = host({T, K});
          std::vector<int64_t> idx;
          std::vector<double> sums;
          ops::moe_router_forward(p, w, idx, sums, z, K, renorm);
          std::vector<double> aux(static_cast<size_t>(E));
          for (int64_t e = 0; e < E; ++e) aux[size_t(e)] = a * double(1 + e % 3);
          const Tensor dw = randn({T, K}, "cuda_router_dw");
          Tensor dl = nan_host({T, E});
          ops::moe_router_backward(dl, dw, p, w, IndexTensor(idx, Device::CPU), aux, K, renorm);
          const Tensor gp = dev(p), gw = dev(w), gdw = dev(dw);
          Tensor gdl = nan_dev({T, E}), gdl2 = nan_dev({T, E});
          ops::moe_router_backward(gdl, gdw, gp, gw, IndexTensor(idx, Device::CUDA), aux, K, renorm);
          ops::moe_router_backward(gdl2, gdw, gp, gw, IndexTensor(idx, Device::CPU), aux, K, renorm);  // host-only
          EXPECT_LT(rel(gdl, dl), 1e-5) << what;
          EXPECT_TRUE(same_bytes(gdl2, to_device(gdl, Device::CPU))) << what;
        }
}

TEST_F(CudaMoeOps, PermuteMatchesCpu) {
  const int64_t T = 37, C = 129, K = 2, E = 7;
  std::vector<int64_t> rows, slots;
  route(T, K, E, {0, 1, 9, 30, 73}, rows, slots);  // token 0 loses both copies
  const int64_t R = int64_t(rows.size());
  const IndexTensor hrows(rows, Device::CPU), hslots(slots, Device::CPU);
  const IndexTensor drows(rows, Device::CUDA), dslots(slots, Device::CUDA);
  const Tensor s = randn({R}, "cuda_perm_s");
  const Tensor gs = dev(s);
  for (DType dt : {DType::F32, DType::BF16}) {
    const std::string what = dtype_name(dt);
    const Tensor x = randn({T, C}, "cuda_perm_x", dt);
    const Tensor gx = dev(x);
    // gather: exact copies
    Tensor p = nan_host({R, C}, dt), gp = nan_dev({R, C}, dt);
    ops::gather_rows(p, x, hrows);
    ops::gather_rows(gp, gx, drows);
    EXPECT_TRUE(same_bytes(gp, p)) << what << " gather_rows";
    Tensor gp2 = nan_dev({R, C}, dt);
    ops::gather_rows(gp2, gx, hrows);  // host-only indices, uploaded by the op
    EXPECT_TRUE(same_bytes(gp2, p)) << what << " gather_rows (host indices)";
    // scale: out of place and in place
    Tensor q = nan_host({R, C}, dt), gq = nan_dev({R, C}, dt);
    ops::scale_rows(q, p, s);
    ops::scale_rows(gq, gp, gs);
    EXPECT_TRUE(same_bytes(gq, q)) << what << " scale_rows";
    ops::scale_rows(gp, gp, gs);
    EXPECT_TRUE(same_bytes(gp, q)) << what << " scale_rows in place";
    // sum: the combine, every row overwritten (token 0: zeros)
    Tensor y = nan_host({T, C}, dt), gy = nan_dev({T, C}, dt);
    ops::sum_rows(y, q, hslots, K);
    ops::sum_rows(gy, gq, dslots, K);
    EXPECT_TRUE(same_bytes(gy, y)) << what << " sum_rows";
    const Tensor yf = f32_host(gy);
    for (int64_t c = 0; c < C; ++c) EXPECT_EQ(yf.f32()[c], 0.0f) << what << " token 0";
    // row dot against the fp32 CPU op on the same values
    Tensor d = nan_host({R}), gd = nan_dev({R});
    ops::row_dot(d, p, q);
    ops::row_dot(gd, dev(p), gq);
    EXPECT_LT(rel(gd, d), 1e-5) << what << " row_dot";
  }
}

TEST_F(CudaMoeOps, NoRows) {
  const int64_t T = 5, C = 8;
  const Tensor gx = dev(randn({T, C}, "cuda_empty_x"));
  Tensor gp = Tensor::empty({0, C}, MemCategory::Workspace, DType::F32, Device::CUDA);
  ops::gather_rows(gp, gx, IndexTensor({}, Device::CUDA));
  Tensor gy = nan_dev({T, C});
  ops::sum_rows(gy, gp, IndexTensor(std::vector<int64_t>(size_t(2 * T), -1), Device::CUDA), 2);
  const Tensor y = f32_host(gy);
  for (int64_t i = 0; i < T * C; ++i) EXPECT_EQ(y.f32()[i], 0.0f);
  Tensor z = Tensor::empty({0, 4}, MemCategory::Workspace, DType::F32, Device::CUDA);
  Tensor p = Tensor::empty({0, 4}, MemCategory::Workspace, DType::F32, Device::CUDA);
  Tensor w = Tensor::empty({0, 2}, MemCategory::Workspace, DType::F32, Device::CUDA);
  std::vector<int64_t> idx{3};
  std::vector<double> sums;
  ops::moe_router_forward(p, w, idx, sums, z, 2, true);
  EXPECT_TRUE(idx.empty());
  EXPECT_EQ(sums, std::vector<double>(4, 0.0));
}

}  // namespace pb::test
