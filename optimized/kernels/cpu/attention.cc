/* CPU causal attention on this rank's heads: the reference op (reference/ops/attention.h). */
#include "optimized/kernels/cpu/cpu_kernels.h"
#include "reference/ops/attention.h"

namespace pb::cpu {

void attention_forward(Tensor& o, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v, const ops::AttnShape& s) {
  const auto pos = ref::iota_positions(s.S);
  ref::Mat<float> om, lm;
  ref::attention_forward(om, lm, to_ref(q), to_ref(k), to_ref(v), ref::AttentionShape{s.B, s.S, s.S, s.A, s.G, s.D},
                         pos, pos);
  from_ref(o, om);
  from_ref(lse, lm);
}

void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                        const Tensor& v, const Tensor& o, const Tensor& lse, const ops::AttnShape& s) {
  const auto pos = ref::iota_positions(s.S);
  ref::Mat<float> dqm, dkm, dvm;
  const ref::Mat<float> lm = CMatMap(lse.f32(), s.B * s.A, s.S);
  ref::attention_backward(dqm, dkm, dvm, to_ref(dout), to_ref(q), to_ref(k), to_ref(v), to_ref(o), lm,
                          ref::AttentionShape{s.B, s.S, s.S, s.A, s.G, s.D}, pos, pos);
  from_ref(dq, dqm);
  from_ref(dk, dkm);
  from_ref(dv, dvm);
}

}  // namespace pb::cpu
