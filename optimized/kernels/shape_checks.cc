/* Shape checks shared by the backends, GEMM edge plans and cross-device copy routes (see
 * shape_checks.h). Host code only: compiled by the C++ compiler, called from the .cu files. */
#include "optimized/kernels/shape_checks.h"

#include <climits>

#include "reference/common/error.h"

namespace pb::checks {

namespace {

const char* device_str(Device d) { return d == Device::CUDA ? "cuda" : "cpu"; }

}  // namespace

void attention_inputs(const char* op, const ops::AttnShape& s, const Tensor& q, const Tensor& k, const Tensor& v) {
  const int64_t Sk = s.keys();
  PB_REQUIRE(s.B >= 0 && s.S >= 0 && Sk >= 0 && s.D > 0, op, ": B ", s.B, " S ", s.S, " Sk ", Sk, " D ", s.D,
             " (sizes >= 0, D > 0)");
  PB_REQUIRE(s.G > 0 && s.A % s.G == 0, op, ": heads ", s.A, " not divisible by kv heads ", s.G);
  PB_REQUIRE(s.qpos.empty() || int64_t(s.qpos.size()) == s.S, op, ": ", s.qpos.size(), " query positions for S = ",
             s.S);
  PB_REQUIRE(s.kpos.empty() || int64_t(s.kpos.size()) == Sk, op, ": ", s.kpos.size(), " key positions for Sk = ", Sk);
  PB_REQUIRE(q.numel() == s.B * s.S * s.A * s.D && k.numel() == s.B * Sk * s.G * s.D && v.numel() == k.numel(), op,
             ": q ", q.shape_str(), ", k ", k.shape_str(), ", v ", v.shape_str(), " for B ", s.B, " S ", s.S, " Sk ",
             Sk, " A ", s.A, " G ", s.G, " D ", s.D);
}

void attention_forward_outputs(const char* op, const ops::AttnShape& s, const Tensor& o, const Tensor& lse,
                               const Tensor& q) {
  PB_REQUIRE(o.numel() == q.numel() && lse.numel() == s.B * s.A * s.S, op, ": o ", o.shape_str(), ", lse ",
             lse.shape_str(), " for q ", q.shape_str(), " (o like q, lse B*A x S = ", s.B * s.A, " x ", s.S, ")");
  PB_REQUIRE(lse.dtype() == DType::F32, op, ": lse is ", dtype_name(lse.dtype()), " (fp32 expected)");
}

void attention_backward_operands(const char* op, const ops::AttnShape& s, const Tensor& dq, const Tensor& dk,
                                 const Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                                 const Tensor& o, const Tensor& lse) {
  PB_REQUIRE(lse.numel() == s.B * s.A * s.S && lse.dtype() == DType::F32, op, ": lse ", lse.shape_str(), " ",
             dtype_name(lse.dtype()), " for B*A ", s.B * s.A, " x S ", s.S, " (fp32)");
  PB_REQUIRE(dq.numel() == q.numel() && dout.numel() == q.numel() && o.numel() == q.numel() &&
                 dk.numel() == k.numel() && dv.numel() == k.numel(),
             op, ": dq ", dq.shape_str(), ", dk ", dk.shape_str(), ", dv ", dv.shape_str(), ", dout ",
             dout.shape_str(), ", o ", o.shape_str(), " for q ", q.shape_str(), ", k ", k.shape_str());
}

void grouped_gemm_forward_outputs(const char* op, const Tensor& y, const Tensor& x, const Tensor& w) {
  PB_REQUIRE(w.shape().size() == 3 && x.numel() == x.rows() * w.dim(1), op, ": x ", x.shape_str(), ", w ",
             w.shape_str(), " (x (M, H), w (E, H, F))");
  PB_REQUIRE(y.numel() == x.rows() * w.dim(2), op, ": y ", y.shape_str(), " for x ", x.shape_str(), " and w ",
             w.shape_str(), " (y (M, F) expected)");
}

void grouped_gemm_backward_operands(const char* op, const Tensor& dx, const Tensor& dw, const Tensor& dy,
                                    const Tensor& x, const Tensor& w) {
  grouped_gemm_forward_outputs(op, dy, x, w);
  PB_REQUIRE(dx.numel() == x.numel() && dw.numel() == w.numel(), op, ": dx ", dx.shape_str(), ", dw ",
             dw.shape_str(), " for x ", x.shape_str(), " and w ", w.shape_str(), " (dx like x, dw like w)");
}

void ce_row_stats(const char* op, const Tensor& logits, std::initializer_list<const Tensor*> per_row) {
  for (const Tensor* t : per_row)
    PB_REQUIRE(t->numel() == logits.rows() && t->dtype() == DType::F32, op, ": ", t->shape_str(), " ",
               dtype_name(t->dtype()), " for logits ", logits.shape_str(), " (one fp32 value per row)");
}

void ce_labels(const char* op, const Tensor& logits, int64_t labels) {
  PB_REQUIRE(labels == logits.rows(), op, ": ", labels, " labels for logits ", logits.shape_str(),
             " (one per row)");
}

void ce_backward_operands(const char* op, const Tensor& dlogits, const Tensor& logits, const Tensor& mx,
                          const Tensor& se, int64_t labels) {
  PB_REQUIRE(dlogits.numel() == logits.numel(), op, ": dlogits ", dlogits.shape_str(), " for logits ",
             logits.shape_str());
  ce_row_stats(op, logits, {&mx, &se});
  ce_labels(op, logits, labels);
}

void ce_loss_operands(const char* op, const Tensor& mx, const Tensor& se, const Tensor& tl) {
  PB_REQUIRE(se.numel() == mx.numel() && tl.numel() == mx.numel(), op, ": mx ", mx.shape_str(), ", se ",
             se.shape_str(), ", tl ", tl.shape_str(), " (one length)");
}

void adamw_operands(const char* op, const Tensor& w, const Tensor& g, const Tensor& m, const Tensor& v) {
  PB_REQUIRE(g.numel() == w.numel() && m.numel() == w.numel() && v.numel() == w.numel(), op, ": weights ",
             w.shape_str(), ", gradients ", g.shape_str(), ", moments ", m.shape_str(), " and ", v.shape_str());
}

void embedding_backward_operands(const char* op, const Tensor& dtable, const Tensor& dy, int64_t tokens) {
  PB_REQUIRE(dy.numel() == tokens * dtable.cols() && dtable.dtype() == DType::F32, op, ": dtable ",
             dtable.shape_str(), " ", dtype_name(dtable.dtype()), ", dy ", dy.shape_str(), " for ", tokens,
             " tokens (dy (tokens, H), an fp32 dtable (V, H))");
}

void rope_operands(const char* op, const Tensor& y, const Tensor& x, int64_t positions, int64_t D) {
  PB_REQUIRE(D > 0 && D % 2 == 0 && x.cols() % D == 0 && y.numel() == x.numel() && positions >= x.rows(), op, ": x ",
             x.shape_str(), " into y ", y.shape_str(), " for ", positions, " positions and head dim ", D,
             " (D even, rows of whole heads, one position per row)");
}

void blas_dims(const char* op, std::initializer_list<int64_t> dims) {
  for (int64_t d : dims) PB_REQUIRE(d >= 0 && d <= INT_MAX, op, ": dimension ", d, " outside cuBLAS's int");
}

GemmPlan gemm_plan(int64_t m, int64_t n, int64_t k, float beta) {
  PB_REQUIRE(m >= 0 && n >= 0 && k >= 0, "gemm: negative dimension (", m, ", ", n, ", ", k, ")");
  PB_REQUIRE(beta == 0.0f || beta == 1.0f, "gemm: beta ", beta, " (0 or 1)");
  if (m == 0 || n == 0) return GemmPlan::Nothing;
  if (k == 0) return beta == 0.0f ? GemmPlan::ZeroC : GemmPlan::Nothing;
  return GemmPlan::Run;
}

CopyRoute copy_route(Device dst, DType dst_dtype, Device src, DType src_dtype) {
  if (dst == src) return CopyRoute::SameDevice;
  return dst_dtype == src_dtype ? CopyRoute::Transfer : CopyRoute::Refused;
}

void same_device(const char* op, Device dev, std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    PB_REQUIRE(t->device() == dev, op, ": ", t->shape_str(), " is on ", device_str(t->device()), ", the op runs on ",
               device_str(dev), " (ops::transfer moves tensors between devices)");
}

}  // namespace pb::checks
