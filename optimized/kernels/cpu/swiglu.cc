/* CPU SwiGLU on this rank's F/TP columns: the reference op (reference/ops/swiglu.h). */
#include "optimized/kernels/cpu/cpu_kernels.h"
#include "reference/ops/swiglu.h"

namespace pb::cpu {

void swiglu_forward(Tensor& y, const Tensor& gate, const Tensor& up, const Stream&) {
  ref::Mat<float> ym;
  ref::swiglu_forward(ym, to_ref(gate), to_ref(up));
  from_ref(y, ym);
}

void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dy, const Tensor& gate, const Tensor& up, const Stream&) {
  ref::Mat<float> dg, du;
  ref::swiglu_backward(dg, du, to_ref(dy), to_ref(gate), to_ref(up));
  from_ref(dgate, dg);
  from_ref(dup, du);
}

}  // namespace pb::cpu
