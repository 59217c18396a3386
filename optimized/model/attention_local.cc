/* The local attention core (see attention_core.h). */
#include "optimized/model/attention_core.h"

#include "optimized/model/block.h"

namespace pb {

namespace {
struct LocalSaved final : AttentionCore::Saved {
  Tensor q, k, v, o, lse;  // (N, Aq*D), (N, Gk*D) x 2, (N, Aq*D), (B*Aq, S) fp32
  std::vector<Tensor*> tensors() override { return {&q, &k, &v, &o, &lse}; }
};
}  // namespace

LocalAttention::LocalAttention(const BlockEnv& env)
    : shape_{env.B, env.S, env.Aq, env.Gk, env.D}, dtype_(env.dtype) {}

std::unique_ptr<AttentionCore::Saved> LocalAttention::forward(Tensor& o, const Tensor& q, const Tensor& k,
                                                              const Tensor& v, int) {
  auto s = std::make_unique<LocalSaved>();
  o = Tensor::empty({q.rows(), q.cols()}, MemCategory::Activations, dtype_);
  s->lse = Tensor::empty({shape_.B * shape_.A, shape_.S}, MemCategory::Activations, DType::F32);
  ops::attention_forward(o, s->lse, q, k, v, shape_);
  s->q = q, s->k = k, s->v = v, s->o = o;
  return s;
}

void LocalAttention::backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, Saved& saved) {
  auto& s = static_cast<LocalSaved&>(saved);
  ops::attention_backward(dq, dk, dv, dout, s.q, s.k, s.v, s.o, s.lse, shape_);
  s = LocalSaved{};
}

int64_t local_attention_saved_bytes(const Dims& d) { return d.e * d.N * d.a * d.D + Dims::fp * d.a * d.N; }

}  // namespace pb
