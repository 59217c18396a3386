/* The hybrid CP attention core (see attention_hybrid.h). */
#include "optimized/model/attention_hybrid.h"

#include <algorithm>

#include "optimized/parallel/cp_ulysses.h"

namespace pb {

namespace {
struct HybridSaved final : AttentionCore::Saved {
  std::unique_ptr<AttentionCore::Saved> ring;  // the ring's q, k, v, o, LSE (whole chunks, a/u heads)
  Tensor out;                                  // o (N, a*D)
  std::vector<Tensor*> tensors() override {
    std::vector<Tensor*> t = ring ? ring->tensors() : std::vector<Tensor*>{};
    t.push_back(&out);
    return t;
  }
};
}  // namespace

HybridAttention::HybridAttention(const BlockEnv& env, Communicator& ulysses, Communicator& ring)
    : x_(ulysses, env.B, 2, env.N / env.B / 2, env.D),
      ring_(ring, env.B, env.N / env.B / 2 * ulysses.size(), env.Aq / ulysses.size(),
            ulysses_kv_heads(env.Gk, ulysses.size()) / ulysses.size(), env.D, env.dtype, false),
      A_(env.Aq), G_(env.Gk), rep_(ulysses_kv_heads(env.Gk, ulysses.size()) / env.Gk), dtype_(env.dtype) {}

std::unique_ptr<AttentionCore::Saved> HybridAttention::forward(Tensor& o, const Tensor& q, const Tensor& k,
                                                               const Tensor& v, int mb) {
  auto s = std::make_unique<HybridSaved>();
  const Tensor qh = x_.to_heads(q, A_, 1, MemCategory::Activations);
  const Tensor kh = x_.to_heads(k, G_, rep_, MemCategory::Activations);
  const Tensor vh = x_.to_heads(v, G_, rep_, MemCategory::Activations);
  Tensor oh;
  s->ring = ring_.forward(oh, qh, kh, vh, mb);
  o = Tensor::empty({q.rows(), q.cols()}, MemCategory::Activations, dtype_);
  x_.to_sequence(o, oh, A_, 1);
  s->out = o;
  return s;
}

void HybridAttention::backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, Saved& saved) {
  auto& s = static_cast<HybridSaved&>(saved);
  x_.backward(dq, dk, dv, dout, A_, G_, rep_, [&](Tensor& dq_h, Tensor& dk_h, Tensor& dv_h, const Tensor& dout_h) {
    ring_.backward(dq_h, dk_h, dv_h, dout_h, *s.ring);
  });
  s = HybridSaved{};
}

Dims hybrid_ring_dims(const Dims& d, int64_t u) {
  Dims r = d;
  r.N = d.N * u, r.a = d.a / u, r.g = ulysses_kv_heads(d.g, u) / u, r.c = d.c / u;
  return r;
}

BlockWorkspace hybrid_attention_workspace(const Dims& d, int64_t u) {
  const BlockWorkspace ring = ring_attention_workspace(hybrid_ring_dims(d, u)), around = ulysses_attention_workspace(d, u);
  return {around.forward + ring.forward, around.backward + ring.backward};
}

BlockWorkspace hybrid_attention_comm_buffers(const Dims& d, int64_t u) {
  const BlockWorkspace ring = ring_attention_comm_buffers(hybrid_ring_dims(d, u));
  const BlockWorkspace a2a = ulysses_attention_comm_buffers(d, u);  // an all-to-all's two buffers
  return {std::max(a2a.forward, ring.forward), std::max(a2a.backward, ring.backward)};
}

}  // namespace pb
