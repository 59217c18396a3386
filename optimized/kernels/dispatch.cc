/* ops.h -> the kernel of the tensors' device: kernels/cpu, or kernels/cuda in a CUDA
 * build. */
#include "optimized/kernels/cpu/cpu_kernels.h"
#include "optimized/kernels/ops.h"
#include "reference/common/error.h"
#ifdef PB_WITH_CUDA
#include "optimized/kernels/cuda/cuda_kernels.h"
#define PB_CUDA_CASE(fn, ...) return ::pb::cuda::fn(__VA_ARGS__)
#else
#define PB_CUDA_CASE(fn, ...) throw ::pb::Error("op " #fn ": this build has no CUDA backend")
#endif

#define PB_DISPATCH(dev, fn, ...)                                \
  do {                                                           \
    switch (dev) {                                               \
      case ::pb::Device::CPU: return ::pb::cpu::fn(__VA_ARGS__); \
      case ::pb::Device::CUDA: PB_CUDA_CASE(fn, __VA_ARGS__);    \
    }                                                            \
    throw ::pb::Error("op " #fn ": unknown device");             \
  } while (0)

namespace pb::ops {

void linear_forward(Tensor& y, const Tensor& x, const Tensor& w) { PB_DISPATCH(x.device(), linear_forward, y, x, w); }
void linear_backward_input(Tensor& dx, const Tensor& dy, const Tensor& w) {
  PB_DISPATCH(dy.device(), linear_backward_input, dx, dy, w);
}
void linear_backward_weight(Tensor& dw, const Tensor& dy, const Tensor& x) {
  PB_DISPATCH(dy.device(), linear_backward_weight, dw, dy, x);
}
void copy(Tensor& dst, const Tensor& src) { PB_DISPATCH(src.device(), copy, dst, src); }
void zero(Tensor& t) { PB_DISPATCH(t.device(), zero, t); }
void add(Tensor& y, const Tensor& a, const Tensor& b) { PB_DISPATCH(a.device(), add, y, a, b); }
void add_(Tensor& y, const Tensor& x) { PB_DISPATCH(x.device(), add_, y, x); }
void scale_(Tensor& y, float s) { PB_DISPATCH(y.device(), scale_, y, s); }
double sum_squares(const Tensor& x) { PB_DISPATCH(x.device(), sum_squares, x); }
void embedding_forward(Tensor& y, const std::vector<int64_t>& tok, const Tensor& table, int64_t vocab_start) {
  PB_DISPATCH(table.device(), embedding_forward, y, tok, table, vocab_start);
}
void embedding_backward(Tensor& dtable, const Tensor& dy, const std::vector<int64_t>& tok, int64_t vocab_start) {
  PB_DISPATCH(dy.device(), embedding_backward, dtable, dy, tok, vocab_start);
}
void rmsnorm_forward(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& g, float eps) {
  PB_DISPATCH(x.device(), rmsnorm_forward, y, rstd, x, g, eps);
}
void rmsnorm_backward(Tensor& dx, Tensor& dg, const Tensor& dy, const Tensor& x, const Tensor& rstd, const Tensor& g) {
  PB_DISPATCH(x.device(), rmsnorm_backward, dx, dg, dy, x, rstd, g);
}
void rope_forward(Tensor& y, const Tensor& x, const std::vector<int64_t>& pos, int64_t head_dim, double theta) {
  PB_DISPATCH(x.device(), rope_forward, y, x, pos, head_dim, theta);
}
void rope_backward(Tensor& dx, const Tensor& dy, const std::vector<int64_t>& pos, int64_t head_dim, double theta) {
  PB_DISPATCH(dy.device(), rope_backward, dx, dy, pos, head_dim, theta);
}
void attention_forward(Tensor& o, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v, const AttnShape& s) {
  PB_DISPATCH(q.device(), attention_forward, o, lse, q, k, v, s);
}
void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                        const Tensor& v, const Tensor& o, const Tensor& lse, const AttnShape& s) {
  PB_DISPATCH(q.device(), attention_backward, dq, dk, dv, dout, q, k, v, o, lse, s);
}
void swiglu_forward(Tensor& y, const Tensor& gate, const Tensor& up) { PB_DISPATCH(gate.device(), swiglu_forward, y, gate, up); }
void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dy, const Tensor& gate, const Tensor& up) {
  PB_DISPATCH(gate.device(), swiglu_backward, dgate, dup, dy, gate, up);
}
void ce_row_max(Tensor& mx, const Tensor& logits) { PB_DISPATCH(logits.device(), ce_row_max, mx, logits); }
void ce_sum_exp(Tensor& se, const Tensor& logits, const Tensor& mx) { PB_DISPATCH(logits.device(), ce_sum_exp, se, logits, mx); }
void ce_target_logit(Tensor& tl, const Tensor& logits, const std::vector<int64_t>& labels, int64_t vocab_start) {
  PB_DISPATCH(logits.device(), ce_target_logit, tl, logits, labels, vocab_start);
}
double ce_loss_sum(const Tensor& mx, const Tensor& se, const Tensor& tl) { PB_DISPATCH(mx.device(), ce_loss_sum, mx, se, tl); }
void ce_backward(Tensor& dlogits, const Tensor& logits, const Tensor& mx, const Tensor& se,
                 const std::vector<int64_t>& labels, int64_t vocab_start, float scale) {
  PB_DISPATCH(logits.device(), ce_backward, dlogits, logits, mx, se, labels, vocab_start, scale);
}
void adamw(Tensor& w, const Tensor& g, Tensor& m, Tensor& v, const AdamHyper& h) { PB_DISPATCH(w.device(), adamw, w, g, m, v, h); }

void cast(Tensor& dst, const Tensor& src) { PB_DISPATCH(src.device(), cast, dst, src); }
void fp32_to_bf16_residual(Tensor& master) { PB_DISPATCH(master.device(), fp32_to_bf16_residual, master); }
void bf16_residual_to_fp32(Tensor& master) { PB_DISPATCH(master.device(), bf16_residual_to_fp32, master); }
void grouped_gemm_forward(Tensor& y, const Tensor& x, const Tensor& w, const std::vector<int64_t>& group_sizes) {
  PB_DISPATCH(x.device(), grouped_gemm_forward, y, x, w, group_sizes);
}
void grouped_gemm_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                           const std::vector<int64_t>& group_sizes) {
  PB_DISPATCH(x.device(), grouped_gemm_backward, dx, dw, dy, x, w, group_sizes);
}

}  // namespace pb::ops
