/* The Ulysses attention core (see attention_ulysses.h). */
#include "optimized/model/attention_ulysses.h"

#include <algorithm>

#include "optimized/parallel/cp_ring.h"
#include "optimized/parallel/cp_ulysses.h"

namespace pb {

namespace {
struct UlyssesSaved final : AttentionCore::Saved {
  Tensor q, k, v, o, lse, out;  // whole sequence q (B*S, a/c D), k, v (B*S, g'/c D), o, lse (B*a/c, S); out (N, a D)
  std::vector<Tensor*> tensors() override { return {&q, &k, &v, &o, &lse, &out}; }
};
}  // namespace

UlyssesAttention::UlyssesAttention(const BlockEnv& env, Communicator& cp)
    : cp_(cp), x_(cp, env.B, 1, env.S / cp.size(), env.D), B_(env.B), S_(env.S), A_(env.Aq), G_(env.Gk), D_(env.D),
      rep_(ulysses_kv_heads(env.Gk, cp.size()) / env.Gk), dtype_(env.dtype) {}

Tensor HeadExchange::to_heads(const Tensor& x, int64_t heads, int64_t rep, MemCategory cat) const {
  const int64_t u = g_.size(), N = x.rows(), h = heads * rep / u, w = h * D_;  // heads per rank, their columns
  Tensor send = Tensor::empty({u * N, w}, MemCategory::CommBuffers, x.dtype());
  for (int64_t j = 0; j < u; ++j)  // block j: the heads of rank j (a repeated head from its source)
    for (int64_t i = 0; i < h; ++i) ops::copy_block(send, x, N, D_, 0, ((j * h + i) / rep) * D_, j * N, i * D_);
  Tensor recv = Tensor::empty({u * N, w}, MemCategory::CommBuffers, x.dtype());
  g_.all_to_all(recv, send);
  send = Tensor();
  const int64_t T = nseg_ * u * len_;
  Tensor y = Tensor::empty({B_ * T, w}, cat, x.dtype());
  for (int64_t j = 0; j < u; ++j)  // rank j's segments of each sequence, in place in the sequence
    for (int64_t b = 0; b < B_; ++b)
      for (int64_t s = 0; s < nseg_; ++s)
        ops::copy_block(y, recv, len_, w, j * N + (b * nseg_ + s) * len_, 0, b * T + s * u * len_ + j * len_, 0);
  return y;
}

void HeadExchange::to_sequence(Tensor& x, const Tensor& y, int64_t heads, int64_t rep) const {
  const int64_t u = g_.size(), N = x.rows(), h = heads * rep / u, w = h * D_, T = nseg_ * u * len_;
  Tensor send = Tensor::empty({u * N, w}, MemCategory::CommBuffers, y.dtype());
  for (int64_t j = 0; j < u; ++j)
    for (int64_t b = 0; b < B_; ++b)
      for (int64_t s = 0; s < nseg_; ++s)
        ops::copy_block(send, y, len_, w, b * T + s * u * len_ + j * len_, 0, j * N + (b * nseg_ + s) * len_, 0);
  Tensor recv = Tensor::empty({u * N, w}, MemCategory::CommBuffers, y.dtype());
  g_.all_to_all(recv, send);
  send = Tensor();
  if (rep > 1) ops::zero(x);
  for (int64_t j = 0; j < u; ++j)
    for (int64_t i = 0; i < h; ++i)
      ops::copy_block(x, recv, N, D_, j * N, i * D_, 0, ((j * h + i) / rep) * D_, rep > 1);
}

void HeadExchange::backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, int64_t A, int64_t G, int64_t rep,
                            const CoreBackward& core) const {
  const int64_t u = g_.size(), rows = B_ * nseg_ * u * len_, a = A / u, g = G * rep / u;
  Tensor dout_h = to_heads(dout, A, 1, MemCategory::Workspace);
  Tensor dq_h = Tensor::empty({rows, a * D_}, MemCategory::Workspace, dout.dtype());
  Tensor dk_h = Tensor::empty({rows, g * D_}, MemCategory::Workspace, dout.dtype());
  Tensor dv_h = Tensor::empty({rows, g * D_}, MemCategory::Workspace, dout.dtype());
  core(dq_h, dk_h, dv_h, dout_h);
  dout_h = Tensor();
  to_sequence(dq, dq_h, A, 1);
  dq_h = Tensor();
  to_sequence(dk, dk_h, G, rep);
  dk_h = Tensor();
  to_sequence(dv, dv_h, G, rep);
}

std::unique_ptr<AttentionCore::Saved> UlyssesAttention::forward(Tensor& o, const Tensor& q, const Tensor& k,
                                                                const Tensor& v, int) {
  auto s = std::make_unique<UlyssesSaved>();
  const int64_t c = cp_.size(), a = A_ / c, g = G_ * rep_ / c;
  s->q = x_.to_heads(q, A_, 1, MemCategory::Activations);
  s->k = x_.to_heads(k, G_, rep_, MemCategory::Activations);
  s->v = x_.to_heads(v, G_, rep_, MemCategory::Activations);
  s->o = Tensor::empty({B_ * S_, a * D_}, MemCategory::Activations, dtype_);
  s->lse = Tensor::empty({B_ * a, S_}, MemCategory::Activations, DType::F32);
  ops::attention_forward(s->o, s->lse, s->q, s->k, s->v, ops::AttnShape{B_, S_, a, g, D_});
  add_cp_attention_pairs(B_ * a * S_ * (S_ + 1) / 2);
  o = Tensor::empty({q.rows(), q.cols()}, MemCategory::Activations, dtype_);
  x_.to_sequence(o, s->o, A_, 1);
  s->out = o;
  return s;
}

void UlyssesAttention::backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, Saved& saved) {
  auto& s = static_cast<UlyssesSaved&>(saved);
  const int64_t a = A_ / cp_.size(), g = G_ * rep_ / cp_.size();
  x_.backward(dq, dk, dv, dout, A_, G_, rep_, [&](Tensor& dq_h, Tensor& dk_h, Tensor& dv_h, const Tensor& dout_h) {
    ops::attention_backward(dq_h, dk_h, dv_h, dout_h, s.q, s.k, s.v, s.o, s.lse, ops::AttnShape{B_, S_, a, g, D_});
    add_cp_attention_pairs(B_ * a * S_ * (S_ + 1) / 2);
  });
  s = UlyssesSaved{};
}

int64_t ulysses_attention_saved_bytes(const Dims& d, int64_t u) {
  const int64_t gp = ulysses_kv_heads(d.g, u);
  return d.e * d.N * (3 * d.a + 2 * gp) * d.D + Dims::fp * d.a * d.N;
}

BlockWorkspace ulysses_attention_workspace(const Dims& d, int64_t u) {
  const int64_t gp = ulysses_kv_heads(d.g, u);
  return {0, d.e * d.N * (2 * d.a + 2 * gp) * d.D};
}

BlockWorkspace ulysses_attention_comm_buffers(const Dims& d, int64_t u) {
  const int64_t x = 2 * d.e * d.N * std::max(d.a, ulysses_kv_heads(d.g, u)) * d.D;
  return {x, x};
}

}  // namespace pb
