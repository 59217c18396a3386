/* CPU RoPE: the reference op (reference/ops/rope.h). */
#include "optimized/kernels/cpu/cpu_kernels.h"
#include "reference/ops/rope.h"

namespace pb::cpu {

void rope_forward(Tensor& y, const Tensor& x, const std::vector<int64_t>& pos, int64_t head_dim, double theta, const Stream&) {
  ref::Mat<float> ym;
  ref::rope_forward(ym, to_ref(x), pos, head_dim, theta);
  from_ref(y, ym);
}

void rope_backward(Tensor& dx, const Tensor& dy, const std::vector<int64_t>& pos, int64_t head_dim, double theta, const Stream&) {
  ref::Mat<float> m;
  ref::rope_backward(m, to_ref(dy), pos, head_dim, theta);
  from_ref(dx, m);
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
