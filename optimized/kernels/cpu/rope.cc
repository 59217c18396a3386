/* CPU RoPE (Su et al., RoFormer, arXiv 2104.09864), Hugging Face's rotate_half layout:
 *   inv_freq_i = theta^(-2i/D),  phi_ti = pos_t inv_freq_i,  i < D/2
 *   forward   y1 = x1 cos - x2 sin,  y2 = x2 cos + x1 sin   (x1, x2 the halves of a head)
 *   backward  the transpose: sin -> -sin
 *   x, y (N, heads*D); pos (N)
 * The angles' cos and sin are computed as the reference computes them (reference/ops/rope.h,
 * in fp32 from the fp32 inverse frequency), once per (row, i) instead of once per head, and
 * kept for the next call with the same positions (the q and k of a layer, every layer of a
 * step). Rows in fixed blocks on the kernel threads; the result is bitwise the reference's. */
#include <cmath>
#include <vector>

#include "optimized/kernels/cpu/cpu_kernels.h"
#include "optimized/kernels/cpu/parallel.h"
#include "reference/common/error.h"

namespace pb::cpu {

namespace {

struct Table {
  std::vector<int64_t> pos;
  int64_t D = 0;
  double theta = 0;
  std::vector<float> cos, sin;  // (N, D/2)
};

// The table for (pos, D, theta); the last one is kept (one per thread: a worker stream's
// kernels run on their own thread).
const Table& table_for(const std::vector<int64_t>& pos, int64_t D, double theta) {
  thread_local Table tab;
  if (tab.D == D && tab.theta == theta && tab.pos == pos) return tab;
  const int64_t half = D / 2, N = int64_t(pos.size());
  std::vector<float> inv(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) inv[size_t(i)] = float(std::pow(theta, -2.0 * double(i) / double(D)));
  tab.cos.resize(size_t(N * half));
  tab.sin.resize(size_t(N * half));
  for (int64_t t = 0; t < N; ++t)
    for (int64_t i = 0; i < half; ++i) {
      const float phi = float(pos[size_t(t)]) * inv[size_t(i)];
      tab.cos[size_t(t * half + i)] = std::cos(phi);
      tab.sin[size_t(t * half + i)] = std::sin(phi);
    }
  tab.pos = pos, tab.D = D, tab.theta = theta;
  return tab;
}

void rotate(Tensor& y, const Tensor& x, const std::vector<int64_t>& pos, int64_t D, double theta, float sign,
            const char* op) {
  const int64_t N = int64_t(pos.size());
  PB_REQUIRE(D > 0 && D % 2 == 0 && N > 0 && x.numel() % (N * D) == 0 && y.numel() == x.numel(), op, ": x ",
             x.shape_str(), " into y ", y.shape_str(), " for ", N, " positions and head dim ", D);
  const Table& tab = table_for(pos, D, theta);
  const int64_t half = D / 2, W = x.numel() / N, heads = W / D;
  const float* X = x.f32();
  float* Y = y.f32();
  parallel_blocks(N, 64, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const float* c = tab.cos.data() + t * half;
      const float* s = tab.sin.data() + t * half;
      for (int64_t h = 0; h < heads; ++h) {
        const float* x1 = X + t * W + h * D;
        const float* x2 = x1 + half;
        float* y1 = Y + t * W + h * D;
        float* y2 = y1 + half;
        for (int64_t i = 0; i < half; ++i) {  // y may alias x: read both halves first
          const float a = x1[i], bb = x2[i], si = sign * s[i];
          y1[i] = a * c[i] - bb * si;
          y2[i] = bb * c[i] + a * si;
        }
      }
    }
  });
}

}  // namespace

void rope_forward(Tensor& y, const Tensor& x, const std::vector<int64_t>& pos, int64_t head_dim, double theta,
                  const Stream&) {
  rotate(y, x, pos, head_dim, theta, 1.0f, "rope_forward");
}

void rope_backward(Tensor& dx, const Tensor& dy, const std::vector<int64_t>& pos, int64_t head_dim, double theta,
                   const Stream&) {
  rotate(dx, dy, pos, head_dim, theta, -1.0f, "rope_backward");
}

// Index tensors: their host values.
void rope_forward(Tensor& y, const Tensor& x, const IndexTensor& pos, int64_t head_dim, double theta, const Stream& s) {
  rope_forward(y, x, pos.host(), head_dim, theta, s);
}

void rope_backward(Tensor& dx, const Tensor& dy, const IndexTensor& pos, int64_t head_dim, double theta,
                   const Stream& s) {
  rope_backward(dx, dy, pos.host(), head_dim, theta, s);
}

}  // namespace pb::cpu
