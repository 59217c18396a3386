/* ops.h -> the kernel of the tensors' device: kernels/cpu, or kernels/cuda in a CUDA
 * build, on the op's stream.
 *
 * Streams: each op first makes its stream (the argument, by default the current stream)
 * the current stream of its device for the op's scope, so the bf16 emulation's casts,
 * the backends' temporaries and nested ops all follow it. Then:
 *   CPU, default stream   the kernel runs inline, as before streams;
 *   CPU, worker stream    the kernel is queued as a closure holding copies of its
 *                         arguments (Tensor copies share storage and keep it alive);
 *   CUDA                  the kernel launches on the stream.
 * Ops that return a value synchronize the op's stream only. */
#include "optimized/kernels/dispatch_util.h"
#include "optimized/kernels/shape_checks.h"

namespace pb::ops {

// bf16 tensors: "compute in fp32, store in bf16", the semantics of mixed-precision
// training -- bf16 inputs, fp32 math and accumulation, bf16 outputs rounded to nearest
// even; the statistics (RMSNorm's rstd, attention's LSE, the cross-entropy pieces) and the
// accumulated outputs (weight, norm and embedding gradients: fp32 main grads) stay fp32.
//  - On CUDA, when every bf16-capable operand of the op is bf16 (the model's case), the
//    CUDA kernel reads and writes bf16 itself (kernels/cuda: fp32 registers, cuBLAS bf16
//    GEMMs with fp32 accumulation), with no promoted copies.
//  - Otherwise (the CPU backend, or mixed fp32/bf16 operands) the op runs in fp32 on
//    promoted copies and its bf16 outputs are rounded back: the emulation, which computes
//    the same thing and is the CPU's bf16 path.
// The helpers (emulate_bf16, up, Out, OnStream) and the PB_DISPATCH macros are in
// dispatch_util.h, shared with the other dispatch files.

void linear_forward(Tensor& y, const Tensor& x, const Tensor& w, const Stream& stream) {
  const OnStream on(stream, x.device());
  if (emulate_bf16(x.device(), {&y, &x, &w})) {
    Out o(y);
    return linear_forward(o.f(), up(x), up(w));
  }
  PB_DISPATCH(x.device(), linear_forward, y, x, w);
}
void linear_backward_input(Tensor& dx, const Tensor& dy, const Tensor& w, const Stream& stream) {
  const OnStream on(stream, dy.device());
  if (emulate_bf16(dy.device(), {&dx, &dy, &w})) {
    Out o(dx);
    return linear_backward_input(o.f(), up(dy), up(w));
  }
  PB_DISPATCH(dy.device(), linear_backward_input, dx, dy, w);
}
void linear_backward_weight(Tensor& dw, const Tensor& dy, const Tensor& x, const Stream& stream) {
  const OnStream on(stream, dy.device());
  PB_DISPATCH(dy.device(), linear_backward_weight, dw, dy, x);
}
void linear_weight_product(Tensor& p, const Tensor& dy, const Tensor& x, const Stream& stream) {
  const OnStream on(stream, dy.device());
  if (emulate_bf16(dy.device(), {&p, &dy, &x})) {
    Out o(p);
    return linear_weight_product(o.f(), up(dy), up(x));
  }
  PB_DISPATCH(dy.device(), linear_weight_product, p, dy, x);
}
// A copy between devices is a transfer (on the GPU side's stream: the given one if it is a
// CUDA stream); a conversion between devices is refused (checks::copy_route).
static bool between_devices(const char* op, Tensor& dst, const Tensor& src, const Stream& stream) {
  switch (checks::copy_route(dst.device(), dst.dtype(), src.device(), src.dtype())) {
    case checks::CopyRoute::SameDevice: return false;
    case checks::CopyRoute::Transfer:
      transfer(dst, src, stream.defined() && stream.device() == Device::CUDA ? stream : Stream{});
      return true;
    case checks::CopyRoute::Refused: break;
  }
  throw Error(detail::concat(op, ": ", dtype_name(src.dtype()), " ", src.shape_str(), " into ", dtype_name(dst.dtype()),
                             " ", dst.shape_str(), " on another device (cast on one device, then ops::transfer)"));
}

void copy(Tensor& dst, const Tensor& src, const Stream& stream) {
  if (between_devices("copy", dst, src, stream)) return;
  const OnStream on(stream, src.device());
  if (dst.dtype() != src.dtype()) return cast(dst, src);
  PB_DISPATCH(src.device(), copy, dst, src);
}
void swap(Tensor& a, Tensor& b, const Stream& stream) {
  PB_REQUIRE(a.dtype() == b.dtype() && a.numel() == b.numel() && a.device() == b.device(), "swap: ", a.shape_str(),
             " and ", b.shape_str(), " (same dtype, size and device)");
  const OnStream on(stream, a.device());
  PB_DISPATCH(a.device(), swap, a, b);
}
void transfer(Tensor& dst, const Tensor& src, const Stream& stream) {
  PB_REQUIRE(dst.dtype() == src.dtype() && dst.numel() == src.numel(), "transfer: ", src.shape_str(), " into ",
             dst.shape_str(), " (same dtype and size)");
  const Device dev = src.device() == Device::CUDA ? Device::CUDA : dst.device();
  const OnStream on(stream, dev);
  PB_DISPATCH(dev, copy, dst, src);
}
void zero(Tensor& t, const Stream& stream) {
  const OnStream on(stream, t.device());
  PB_DISPATCH(t.device(), zero, t);
}
void add(Tensor& y, const Tensor& a, const Tensor& b, const Stream& stream) {
  const OnStream on(stream, a.device());
  if (emulate_bf16(a.device(), {&y, &a, &b})) {
    const Tensor af = up(a), bf = up(b);
    Out o(y);
    return add(o.f(), af, bf);
  }
  PB_DISPATCH(a.device(), add, y, a, b);
}
void add_(Tensor& y, const Tensor& x, const Stream& stream) { add(y, y, x, stream); }
void scale_(Tensor& y, float s, const Stream& stream) {
  const OnStream on(stream, y.device());
  if (emulate_bf16(y.device(), {&y})) {
    Tensor f = up(y);
    scale_(f, s);
    return cast(y, f);
  }
  PB_DISPATCH(y.device(), scale_, y, s);
}
// Both 2-D, the block inside both (written as differences: no int64 overflow), one dtype.
// Checked here once for every backend, on the caller's thread.
void copy_block(Tensor& dst, const Tensor& src, int64_t rows, int64_t cols, int64_t sr0, int64_t sc0, int64_t dr0,
                int64_t dc0, bool accumulate, const Stream& stream) {
  PB_REQUIRE(src.shape().size() == 2 && dst.shape().size() == 2 && rows >= 0 && cols >= 0 && sr0 >= 0 && sc0 >= 0 &&
                 dr0 >= 0 && dc0 >= 0 && rows <= src.rows() - sr0 && cols <= src.cols() - sc0 &&
                 rows <= dst.rows() - dr0 && cols <= dst.cols() - dc0,
             "copy_block: block ", rows, "x", cols, " at (", sr0, ", ", sc0, ") of src ", src.shape_str(), " to (", dr0,
             ", ", dc0, ") of dst ", dst.shape_str(), " does not fit (2-D tensors, non-negative sizes and offsets)");
  PB_REQUIRE(dst.dtype() == src.dtype(), "copy_block: src is ", dtype_name(src.dtype()), ", dst is ",
             dtype_name(dst.dtype()), " (one dtype on both sides)");
  if (!rows || !cols) return;
  const OnStream on(stream, dst.device());
  PB_DISPATCH(dst.device(), copy_block, dst, src, rows, cols, sr0, sc0, dr0, dc0, accumulate);
}
double sum_squares(const Tensor& x, const Stream& stream) {
  const OnStream on(stream, x.device());
  if (emulate_bf16(x.device(), {&x})) return sum_squares(up(x));
  PB_DISPATCH_VALUE(x.device(), sum_squares, x);
}
double sum_squares_segments(const Tensor& buf, const std::vector<int64_t>& seg_ends, const Stream& stream) {
  int64_t prev = 0;
  for (int64_t e : seg_ends) {
    PB_REQUIRE(e >= prev && e <= buf.numel(), "sum_squares_segments: segment end ", e, " after ", prev,
               " in a buffer of ", buf.numel());
    prev = e;
  }
  const OnStream on(stream, buf.device());
  if (emulate_bf16(buf.device(), {&buf})) return sum_squares_segments(up(buf), seg_ends);
  PB_DISPATCH_VALUE(buf.device(), sum_squares_segments, buf, seg_ends);
}

// The ops with index lists, for host vectors and IndexTensors alike.
namespace {

template <class Index>
void embedding_forward_t(Tensor& y, const Index& tok, const Tensor& table, int64_t vocab_start, const Stream& stream) {
  const OnStream on(stream, table.device());
  if (emulate_bf16(table.device(), {&y, &table})) {
    Out o(y);
    return embedding_forward(o.f(), tok, up(table), vocab_start);
  }
  PB_DISPATCH(table.device(), embedding_forward, y, tok, table, vocab_start);
}
template <class Index>
void embedding_backward_t(Tensor& dtable, const Tensor& dy, const Index& tok, int64_t vocab_start,
                          const Stream& stream) {
  const OnStream on(stream, dy.device());
  if (emulate_bf16(dy.device(), {&dy})) return embedding_backward(dtable, up(dy), tok, vocab_start);
  PB_DISPATCH(dy.device(), embedding_backward, dtable, dy, tok, vocab_start);
}
template <class Index>
void rope_forward_t(Tensor& y, const Tensor& x, const Index& pos, int64_t head_dim, double theta,
                    const Stream& stream) {
  const OnStream on(stream, x.device());
  if (emulate_bf16(x.device(), {&y, &x})) {
    Out o(y);
    return rope_forward(o.f(), up(x), pos, head_dim, theta);
  }
  PB_DISPATCH(x.device(), rope_forward, y, x, pos, head_dim, theta);
}
template <class Index>
void rope_backward_t(Tensor& dx, const Tensor& dy, const Index& pos, int64_t head_dim, double theta,
                     const Stream& stream) {
  const OnStream on(stream, dy.device());
  if (emulate_bf16(dy.device(), {&dx, &dy})) {
    Out o(dx);
    return rope_backward(o.f(), up(dy), pos, head_dim, theta);
  }
  PB_DISPATCH(dy.device(), rope_backward, dx, dy, pos, head_dim, theta);
}
template <class Index>
void ce_target_logit_t(Tensor& tl, const Tensor& logits, const Index& labels, int64_t vocab_start,
                       const Stream& stream) {
  const OnStream on(stream, logits.device());
  if (emulate_bf16(logits.device(), {&logits})) return ce_target_logit(tl, up(logits), labels, vocab_start);
  PB_DISPATCH(logits.device(), ce_target_logit, tl, logits, labels, vocab_start);
}
template <class Index>
void ce_backward_t(Tensor& dlogits, const Tensor& logits, const Tensor& mx, const Tensor& se, const Index& labels,
                   int64_t vocab_start, float scale, const Stream& stream) {
  const OnStream on(stream, logits.device());
  if (emulate_bf16(logits.device(), {&dlogits, &logits})) {
    Out o(dlogits);
    return ce_backward(o.f(), up(logits), mx, se, labels, vocab_start, scale);
  }
  PB_DISPATCH(logits.device(), ce_backward, dlogits, logits, mx, se, labels, vocab_start, scale);
}

}  // namespace

void embedding_forward(Tensor& y, const std::vector<int64_t>& tok, const Tensor& table, int64_t vocab_start,
                       const Stream& stream) {
  embedding_forward_t(y, tok, table, vocab_start, stream);
}
void embedding_forward(Tensor& y, const IndexTensor& tok, const Tensor& table, int64_t vocab_start,
                       const Stream& stream) {
  embedding_forward_t(y, tok, table, vocab_start, stream);
}
void embedding_backward(Tensor& dtable, const Tensor& dy, const std::vector<int64_t>& tok, int64_t vocab_start,
                        const Stream& stream) {
  embedding_backward_t(dtable, dy, tok, vocab_start, stream);
}
void embedding_backward(Tensor& dtable, const Tensor& dy, const IndexTensor& tok, int64_t vocab_start,
                        const Stream& stream) {
  embedding_backward_t(dtable, dy, tok, vocab_start, stream);
}
void rmsnorm_forward(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& g, float eps, const Stream& stream) {
  const OnStream on(stream, x.device());
  if (emulate_bf16(x.device(), {&y, &x, &g})) {
    Out o(y);
    return rmsnorm_forward(o.f(), rstd, up(x), up(g), eps);
  }
  PB_DISPATCH(x.device(), rmsnorm_forward, y, rstd, x, g, eps);
}
void rmsnorm_backward(Tensor& dx, Tensor& dg, const Tensor& dy, const Tensor& x, const Tensor& rstd, const Tensor& g,
                      const Stream& stream) {
  const OnStream on(stream, x.device());
  if (emulate_bf16(x.device(), {&dx, &dy, &x, &g})) {
    Out o(dx);
    return rmsnorm_backward(o.f(), dg, up(dy), up(x), rstd, up(g));
  }
  PB_DISPATCH(x.device(), rmsnorm_backward, dx, dg, dy, x, rstd, g);
}
void row_dot(Tensor& out, const Tensor& a, const Tensor& b, const Tensor& g, const Stream& stream) {
  const OnStream on(stream, a.device());
  if (emulate_bf16(a.device(), {&a, &b}) || (g.defined() && emulate_bf16(a.device(), {&g})))
    return row_dot(out, up(a), up(b), g.defined() ? up(g) : g);
  PB_DISPATCH(a.device(), row_dot, out, a, b, g);
}
void rmsnorm_forward_stats(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& g, const Tensor& ss, int64_t H,
                           float eps, const Stream& stream) {
  const OnStream on(stream, x.device());
  if (emulate_bf16(x.device(), {&y, &x, &g})) {
    Out o(y);
    return rmsnorm_forward_stats(o.f(), rstd, up(x), up(g), ss, H, eps);
  }
  PB_DISPATCH(x.device(), rmsnorm_forward_stats, y, rstd, x, g, ss, H, eps);
}
void rmsnorm_backward_stats(Tensor& dx, Tensor& dg, const Tensor& dy, const Tensor& x, const Tensor& rstd,
                            const Tensor& g, const Tensor& dot, int64_t H, const Stream& stream) {
  const OnStream on(stream, x.device());
  if (emulate_bf16(x.device(), {&dx, &dy, &x, &g})) {
    Out o(dx);
    return rmsnorm_backward_stats(o.f(), dg, up(dy), up(x), rstd, up(g), dot, H);
  }
  PB_DISPATCH(x.device(), rmsnorm_backward_stats, dx, dg, dy, x, rstd, g, dot, H);
}
void rope_forward(Tensor& y, const Tensor& x, const std::vector<int64_t>& pos, int64_t head_dim, double theta,
                  const Stream& stream) {
  rope_forward_t(y, x, pos, head_dim, theta, stream);
}
void rope_forward(Tensor& y, const Tensor& x, const IndexTensor& pos, int64_t head_dim, double theta,
                  const Stream& stream) {
  rope_forward_t(y, x, pos, head_dim, theta, stream);
}
void rope_backward(Tensor& dx, const Tensor& dy, const std::vector<int64_t>& pos, int64_t head_dim, double theta,
                   const Stream& stream) {
  rope_backward_t(dx, dy, pos, head_dim, theta, stream);
}
void rope_backward(Tensor& dx, const Tensor& dy, const IndexTensor& pos, int64_t head_dim, double theta,
                   const Stream& stream) {
  rope_backward_t(dx, dy, pos, head_dim, theta, stream);
}
void attention_forward(Tensor& o, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v, const AttnShape& s,
                       const Stream& stream) {
  const OnStream on(stream, q.device());
  if (emulate_bf16(q.device(), {&o, &q, &k, &v})) {
    Out out(o);
    return attention_forward(out.f(), lse, up(q), up(k), up(v), s);
  }
  PB_DISPATCH(q.device(), attention_forward, o, lse, q, k, v, s);
}
void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                        const Tensor& v, const Tensor& o, const Tensor& lse, const AttnShape& s, const Stream& stream) {
  const OnStream on(stream, q.device());
  if (emulate_bf16(q.device(), {&dq, &dk, &dv, &dout, &q, &k, &v, &o})) {
    Out a(dq), b(dk), c(dv);
    return attention_backward(a.f(), b.f(), c.f(), up(dout), up(q), up(k), up(v), up(o), lse, s);
  }
  PB_DISPATCH(q.device(), attention_backward, dq, dk, dv, dout, q, k, v, o, lse, s);
}
void attention_merge(Tensor& o, Tensor& lse, const Tensor& o_blk, const Tensor& lse_blk, int64_t B, int64_t A,
                     int64_t D, const Stream& stream) {
  const OnStream on(stream, o.device());
  if (emulate_bf16(o.device(), {&o, &o_blk})) {
    Out out(o);  // in place: the fp32 stand-in starts from o
    if (o.dtype() == DType::BF16) cast(out.f(), o);
    return attention_merge(out.f(), lse, up(o_blk), lse_blk, B, A, D);
  }
  PB_DISPATCH(o.device(), attention_merge, o, lse, o_blk, lse_blk, B, A, D);
}
void swiglu_forward(Tensor& y, const Tensor& gate, const Tensor& u, const Stream& stream) {
  const OnStream on(stream, gate.device());
  if (emulate_bf16(gate.device(), {&y, &gate, &u})) {
    Out o(y);
    return swiglu_forward(o.f(), up(gate), up(u));
  }
  PB_DISPATCH(gate.device(), swiglu_forward, y, gate, u);
}
void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dy, const Tensor& gate, const Tensor& u,
                     const Stream& stream) {
  const OnStream on(stream, gate.device());
  if (emulate_bf16(gate.device(), {&dgate, &dup, &dy, &gate, &u})) {
    Out a(dgate), b(dup);
    return swiglu_backward(a.f(), b.f(), up(dy), up(gate), up(u));
  }
  PB_DISPATCH(gate.device(), swiglu_backward, dgate, dup, dy, gate, u);
}
void ce_row_max(Tensor& mx, const Tensor& logits, const Stream& stream) {
  const OnStream on(stream, logits.device());
  if (emulate_bf16(logits.device(), {&logits})) return ce_row_max(mx, up(logits));
  PB_DISPATCH(logits.device(), ce_row_max, mx, logits);
}
void ce_sum_exp(Tensor& se, const Tensor& logits, const Tensor& mx, const Stream& stream) {
  const OnStream on(stream, logits.device());
  if (emulate_bf16(logits.device(), {&logits})) return ce_sum_exp(se, up(logits), mx);
  PB_DISPATCH(logits.device(), ce_sum_exp, se, logits, mx);
}
void ce_target_logit(Tensor& tl, const Tensor& logits, const std::vector<int64_t>& labels, int64_t vocab_start,
                     const Stream& stream) {
  ce_target_logit_t(tl, logits, labels, vocab_start, stream);
}
void ce_target_logit(Tensor& tl, const Tensor& logits, const IndexTensor& labels, int64_t vocab_start,
                     const Stream& stream) {
  ce_target_logit_t(tl, logits, labels, vocab_start, stream);
}
double ce_loss_sum(const Tensor& mx, const Tensor& se, const Tensor& tl, const Stream& stream) {
  const OnStream on(stream, mx.device());
  PB_DISPATCH_VALUE(mx.device(), ce_loss_sum, mx, se, tl);
}
void ce_backward(Tensor& dlogits, const Tensor& logits, const Tensor& mx, const Tensor& se,
                 const std::vector<int64_t>& labels, int64_t vocab_start, float scale, const Stream& stream) {
  ce_backward_t(dlogits, logits, mx, se, labels, vocab_start, scale, stream);
}
void ce_backward(Tensor& dlogits, const Tensor& logits, const Tensor& mx, const Tensor& se, const IndexTensor& labels,
                 int64_t vocab_start, float scale, const Stream& stream) {
  ce_backward_t(dlogits, logits, mx, se, labels, vocab_start, scale, stream);
}
void adamw(Tensor& w, const Tensor& g, Tensor& m, Tensor& v, const AdamHyper& h, const Stream& stream) {
  const OnStream on(stream, w.device());
  PB_DISPATCH(w.device(), adamw, w, g, m, v, h);
}

void adamw_reuse(Tensor& hi, Tensor& lo, const Tensor& g, Tensor& m, Tensor& v, const AdamHyper& h,
                 const Stream& stream) {
  PB_REQUIRE(hi.dtype() == DType::BF16 && lo.dtype() == DType::BF16 && hi.numel() == lo.numel() &&
                 g.numel() == hi.numel() && m.numel() == hi.numel() && v.numel() == hi.numel(),
             "adamw_reuse: hi, lo (bf16) and g, m, v (fp32) of one size");
  const OnStream on(stream, hi.device());
  PB_DISPATCH(hi.device(), adamw_reuse, hi, lo, g, m, v, h);
}

void cast(Tensor& dst, const Tensor& src, const Stream& stream) {
  if (between_devices("cast", dst, src, stream)) return;
  const OnStream on(stream, src.device());
  PB_DISPATCH(src.device(), cast, dst, src);
}
void fp32_to_bf16_residual(Tensor& master, const Stream& stream) {
  const OnStream on(stream, master.device());
  PB_DISPATCH(master.device(), fp32_to_bf16_residual, master);
}
void bf16_residual_to_fp32(Tensor& master, const Stream& stream) {
  const OnStream on(stream, master.device());
  PB_DISPATCH(master.device(), bf16_residual_to_fp32, master);
}
// Group sizes must be non-negative and cover the rows of x; W is (E, H, F). Checked here
// once for every backend.
static void check_groups(const Tensor& x, const Tensor& w, const std::vector<int64_t>& sizes) {
  PB_REQUIRE(w.shape().size() == 3 && int64_t(sizes.size()) == w.dim(0) && w.dim(1) == x.cols(),
             "grouped_gemm: x ", x.shape_str(), ", w ", w.shape_str(), ", ", sizes.size(), " group sizes");
  int64_t m = 0;
  for (int64_t s : sizes) {
    PB_REQUIRE(s >= 0, "grouped_gemm: negative group size ", s);
    m += s;
  }
  PB_REQUIRE(m == x.rows(), "grouped_gemm: group sizes sum to ", m, ", x has ", x.rows(), " rows");
}

void grouped_gemm_forward(Tensor& y, const Tensor& x, const Tensor& w, const std::vector<int64_t>& group_sizes,
                          const Stream& stream) {
  check_groups(x, w, group_sizes);
  const OnStream on(stream, x.device());
  PB_DISPATCH(x.device(), grouped_gemm_forward, y, x, w, group_sizes);
}
void grouped_gemm_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                           const std::vector<int64_t>& group_sizes, const Stream& stream) {
  check_groups(x, w, group_sizes);
  const OnStream on(stream, x.device());
  PB_DISPATCH(x.device(), grouped_gemm_backward, dx, dw, dy, x, w, group_sizes);
}

}  // namespace pb::ops
