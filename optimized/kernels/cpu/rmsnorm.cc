/* CPU RMSNorm: the reference op (reference/ops/rmsnorm.h) on this rank's rows. */
#include "optimized/kernels/cpu/cpu_kernels.h"
#include "reference/ops/rmsnorm.h"

namespace pb::cpu {

void rmsnorm_forward(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& g, float eps, const Stream&) {
  ref::Mat<float> ym, gm = as_row(g);
  ref::Vec<float> r;
  ref::rmsnorm_forward(ym, r, to_ref(x), gm, eps);
  from_ref(y, ym);
  from_ref(rstd, r.transpose());
}

void rmsnorm_backward(Tensor& dx, Tensor& dg, const Tensor& dy, const Tensor& x, const Tensor& rstd, const Tensor& g, const Stream&) {
  ref::Mat<float> dxm, dgm = as_row(dg), gm = as_row(g);
  const ref::Vec<float> r = as_row(rstd).transpose();
  ref::rmsnorm_backward(dxm, dgm, to_ref(dy), to_ref(x), r, gm);
  from_ref(dx, dxm);
  from_ref(dg, dgm);
}

}  // namespace pb::cpu
