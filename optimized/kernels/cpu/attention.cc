/* CPU causal attention on this rank's heads: the reference op (reference/ops/attention.h),
 * with the shape's key count Sk and the query/key positions passed through, so that the
 * same call serves full causal self-attention (the defaults: positions 0..S-1) and the
 * partial blocks of ring attention (Liu et al., arXiv 2310.01889): key j is visible to
 * query i iff kpos[j] <= qpos[i]; a row that sees no key gets o = 0, lse = -inf.
 *   q, o (B*S, A*D); k, v (B*Sk, G*D); lse (B*A, S) */
#include "optimized/kernels/cpu/cpu_kernels.h"
#include "reference/common/error.h"
#include "reference/ops/attention.h"

namespace pb::cpu {

namespace {

// The reference's shape, after checking the tensors and position lists against s.
ref::AttentionShape checked(const ops::AttnShape& s, const Tensor& q, const Tensor& k, const Tensor& v) {
  const int64_t Sk = s.keys();
  PB_REQUIRE(s.G > 0 && s.A % s.G == 0, "attention: heads ", s.A, " not divisible by kv heads ", s.G);
  PB_REQUIRE(s.qpos.empty() || int64_t(s.qpos.size()) == s.S, "attention: ", s.qpos.size(), " query positions for S = ",
             s.S);
  PB_REQUIRE(s.kpos.empty() || int64_t(s.kpos.size()) == Sk, "attention: ", s.kpos.size(), " key positions for Sk = ",
             Sk);
  PB_REQUIRE(q.numel() == s.B * s.S * s.A * s.D && k.numel() == s.B * Sk * s.G * s.D && v.numel() == k.numel(),
             "attention: q ", q.shape_str(), ", k ", k.shape_str(), ", v ", v.shape_str(), " for B ", s.B, " S ", s.S,
             " Sk ", Sk, " A ", s.A, " G ", s.G, " D ", s.D);
  return ref::AttentionShape{s.B, s.S, Sk, s.A, s.G, s.D};
}

}  // namespace

void attention_forward(Tensor& o, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v, const ops::AttnShape& s, const Stream&) {
  const ref::AttentionShape sh = checked(s, q, k, v);
  ref::Mat<float> om, lm;
  ref::attention_forward(om, lm, to_ref(q), to_ref(k), to_ref(v), sh, s.query_positions(), s.key_positions());
  from_ref(o, om);
  from_ref(lse, lm);
}

void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                        const Tensor& v, const Tensor& o, const Tensor& lse, const ops::AttnShape& s, const Stream&) {
  const ref::AttentionShape sh = checked(s, q, k, v);
  PB_REQUIRE(lse.numel() == s.B * s.A * s.S, "attention backward: lse ", lse.shape_str(), " for B*A ", s.B * s.A,
             " x S ", s.S);
  ref::Mat<float> dqm, dkm, dvm;
  const ref::Mat<float> lm = CMatMap(lse.f32(), s.B * s.A, s.S);
  ref::attention_backward(dqm, dkm, dvm, to_ref(dout), to_ref(q), to_ref(k), to_ref(v), to_ref(o), lm, sh,
                          s.query_positions(), s.key_positions());
  from_ref(dq, dqm);
  from_ref(dk, dkm);
  from_ref(dv, dvm);
}

}  // namespace pb::cpu
