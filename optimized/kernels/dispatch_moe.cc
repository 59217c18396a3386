/* ops.h -> the kernels of the MoE router and token permutation (kernels/cpu/moe_router.cc,
 * kernels/cpu/permute.cc, kernels/cuda/moe_router.cu, kernels/cuda/permute.cu), on the op's
 * stream (the rules of dispatch.cc). Formulas in op_signatures.inc: Megatron-LM's TopKRouter
 * and token permute / unpermute; Fedus et al., "Switch Transformers" (arXiv 2101.03961).
 *
 * The shapes, dtypes and index ranges are checked here once for every backend, on the
 * caller's thread, each failure one line naming the op (index ranges on the host values
 * of the IndexTensor). The router is fp32 only. gather_rows / sum_rows / scale_rows /
 * row_dot take fp32 or bf16 rows: native bf16 on CUDA when every bf16-capable operand is
 * bf16, otherwise the promote-and-round emulation (fp32 math, bf16 outputs rounded once;
 * a gathered bf16 row round-trips exactly). */
#include "optimized/kernels/dispatch_util.h"

namespace pb::ops {

namespace {

// A matrix (rows, ...) and its row width: the product of its trailing dims (kept for 0 rows,
// where Tensor::cols() is 0).
bool is_matrix(const Tensor& t) { return t.shape().size() >= 2; }
int64_t width(const Tensor& t) {
  int64_t c = 1;
  for (size_t i = 1; i < t.shape().size(); ++i) c *= t.shape()[i];
  return c;
}

void require_f32(const char* op, const char* name, const Tensor& t) {
  PB_REQUIRE(t.dtype() == DType::F32, op, ": ", name, " is ", dtype_name(t.dtype()), " (fp32 expected)");
}

void require_device(const char* op, Device dev, std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    PB_REQUIRE(t->device() == dev, op, ": operands on different devices (", t->shape_str(), ")");
}

// Every index in [lo, n): the first one outside, named.
void require_indices(const char* op, const char* name, const std::vector<int64_t>& v, int64_t lo, int64_t n) {
  for (size_t i = 0; i < v.size(); ++i)
    PB_REQUIRE(v[i] >= lo && v[i] < n, op, ": ", name, "[", i, "] = ", v[i], " outside [", lo, ", ", n, ")");
}

}  // namespace

void moe_router_forward(Tensor& probs, Tensor& weights, std::vector<int64_t>& idx, std::vector<double>& prob_sums,
                        const Tensor& logits, int64_t K, bool renormalize, const Stream& stream) {
  const char* op = "moe_router_forward";
  PB_REQUIRE(logits.shape().size() == 2 && logits.dim(1) >= 1, op, ": logits ", logits.shape_str(),
             " (T, E with E >= 1 expected)");
  const int64_t T = logits.dim(0), E = logits.dim(1);
  PB_REQUIRE(K >= 1 && K <= E, op, ": K = ", K, " outside [1, E = ", E, "]");
  const std::vector<int64_t> TK{T, K};
  PB_REQUIRE(probs.shape() == logits.shape() && weights.shape() == TK, op, ": probs ",
             probs.shape_str(), ", weights ", weights.shape_str(), " for logits ", logits.shape_str(), " and K = ", K,
             " ((T, E) and (T, K) expected)");
  require_f32(op, "logits", logits);
  require_f32(op, "probs", probs);
  require_f32(op, "weights", weights);
  require_device(op, logits.device(), {&probs, &weights});
  const OnStream on(stream, logits.device());
  PB_DISPATCH_VALUE(logits.device(), moe_router_forward, probs, weights, idx, prob_sums, logits, K, renormalize);
}

void moe_router_backward(Tensor& dlogits, const Tensor& dweights, const Tensor& probs, const Tensor& weights,
                         const IndexTensor& idx, const std::vector<double>& aux_grad, int64_t K, bool renormalize,
                         const Stream& stream) {
  const char* op = "moe_router_backward";
  PB_REQUIRE(probs.shape().size() == 2 && probs.dim(1) >= 1, op, ": probs ", probs.shape_str(),
             " (T, E with E >= 1 expected)");
  const int64_t T = probs.dim(0), E = probs.dim(1);
  PB_REQUIRE(K >= 1 && K <= E, op, ": K = ", K, " outside [1, E = ", E, "]");
  const std::vector<int64_t> TK{T, K};
  PB_REQUIRE(dlogits.shape() == probs.shape() && weights.shape() == TK && dweights.shape() == TK, op, ": dlogits ",
             dlogits.shape_str(), ", dweights ", dweights.shape_str(), ", weights ", weights.shape_str(), " for probs ",
             probs.shape_str(), " and K = ", K, " ((T, E) and (T, K) expected)");
  require_f32(op, "dlogits", dlogits);
  require_f32(op, "dweights", dweights);
  require_f32(op, "probs", probs);
  require_f32(op, "weights", weights);
  require_device(op, probs.device(), {&dlogits, &dweights, &weights});
  PB_REQUIRE(idx.defined() && idx.size() == T * K, op, ": ", idx.defined() ? idx.size() : 0,
             " expert indices for T * K = ", T * K);
  require_indices(op, "idx", idx.host(), 0, E);
  PB_REQUIRE(int64_t(aux_grad.size()) == E, op, ": ", aux_grad.size(), " aux gradients for E = ", E);
  const OnStream on(stream, probs.device());
  PB_DISPATCH(probs.device(), moe_router_backward, dlogits, dweights, probs, weights, idx, aux_grad, K, renormalize);
}

void gather_rows(Tensor& out, const Tensor& in, const IndexTensor& rows, const Stream& stream) {
  const char* op = "gather_rows";
  PB_REQUIRE(is_matrix(in) && is_matrix(out) && width(out) == width(in), op, ": out ", out.shape_str(), ", in ",
             in.shape_str(), " (matrices of one row width expected)");
  PB_REQUIRE(rows.defined() && rows.size() == out.dim(0), op, ": ", rows.defined() ? rows.size() : 0,
             " row indices for out ", out.shape_str());
  PB_REQUIRE(out.dtype() == in.dtype(), op, ": out is ", dtype_name(out.dtype()), ", in is ", dtype_name(in.dtype()),
             " (one dtype on both sides)");
  require_device(op, in.device(), {&out});
  require_indices(op, "rows", rows.host(), 0, in.dim(0));
  if (!out.numel()) return;
  const OnStream on(stream, in.device());
  if (emulate_bf16(in.device(), {&out, &in})) {
    Out o(out);
    return gather_rows(o.f(), up(in), rows);
  }
  PB_DISPATCH(in.device(), gather_rows, out, in, rows);
}

void sum_rows(Tensor& out, const Tensor& in, const IndexTensor& slots, int64_t K, const Stream& stream) {
  const char* op = "sum_rows";
  PB_REQUIRE(is_matrix(in) && is_matrix(out) && width(out) == width(in), op, ": out ", out.shape_str(), ", in ",
             in.shape_str(), " (matrices of one row width expected)");
  PB_REQUIRE(K >= 1, op, ": K = ", K, " (at least 1)");
  PB_REQUIRE(slots.defined() && slots.size() == out.dim(0) * K, op, ": ", slots.defined() ? slots.size() : 0,
             " slots for out ", out.shape_str(), " and K = ", K, " (T * K expected)");
  PB_REQUIRE(out.dtype() == in.dtype(), op, ": out is ", dtype_name(out.dtype()), ", in is ", dtype_name(in.dtype()),
             " (one dtype on both sides)");
  require_device(op, out.device(), {&in});
  for (size_t i = 0; i < slots.host().size(); ++i)  // negative: skipped
    PB_REQUIRE(slots.host()[i] < in.dim(0), op, ": slots[", i, "] = ", slots.host()[i], " beyond the ", in.dim(0),
               " rows of in");
  if (!out.numel()) return;
  const OnStream on(stream, out.device());
  if (emulate_bf16(out.device(), {&out, &in})) {
    Out o(out);
    return sum_rows(o.f(), up(in), slots, K);
  }
  PB_DISPATCH(out.device(), sum_rows, out, in, slots, K);
}

void scale_rows(Tensor& y, const Tensor& x, const Tensor& s, const Stream& stream) {
  const char* op = "scale_rows";
  PB_REQUIRE(is_matrix(x) && y.shape() == x.shape() && s.numel() == x.dim(0), op, ": y ", y.shape_str(), ", x ",
             x.shape_str(), ", s ", s.shape_str(), " ((R, C), (R, C) and (R) expected)");
  PB_REQUIRE(y.dtype() == x.dtype(), op, ": y is ", dtype_name(y.dtype()), ", x is ", dtype_name(x.dtype()),
             " (one dtype on both sides)");
  require_f32(op, "s", s);
  require_device(op, x.device(), {&y, &s});
  if (!x.numel()) return;
  const OnStream on(stream, x.device());
  if (emulate_bf16(x.device(), {&y, &x})) {
    const Tensor xf = up(x);  // read before y (which may be x) is written
    Out o(y);
    return scale_rows(o.f(), xf, s);
  }
  PB_DISPATCH(x.device(), scale_rows, y, x, s);
}

void row_dot(Tensor& out, const Tensor& a, const Tensor& b, const Stream& stream) {
  const char* op = "row_dot";
  PB_REQUIRE(is_matrix(a) && b.shape() == a.shape() && out.numel() == a.dim(0), op, ": out ", out.shape_str(), ", a ",
             a.shape_str(), ", b ", b.shape_str(), " ((R), (R, C) and (R, C) expected)");
  require_f32(op, "out", out);
  require_device(op, a.device(), {&out, &b});
  if (!out.numel()) return;
  const OnStream on(stream, a.device());
  if (emulate_bf16(a.device(), {&a, &b})) return row_dot(out, up(a), up(b));
  PB_DISPATCH(a.device(), row_dot, out, a, b);
}

}  // namespace pb::ops
