/* CPU element-wise ops: copy, zero, add, sum of squares; and the copies between
 * tensors and reference matrices. */
#include <cstring>

#include "optimized/kernels/cpu/cpu_kernels.h"
#include "reference/common/error.h"

namespace pb::cpu {

void from_ref(Tensor& t, const ref::Mat<float>& m) {
  PB_REQUIRE(t.numel() == m.size(), "from_ref: tensor ", t.shape_str(), " vs matrix ", m.rows(), "x", m.cols());
  if (m.size()) std::memcpy(t.f32(), m.data(), size_t(m.size()) * sizeof(float));
}

void copy(Tensor& dst, const Tensor& src) {
  PB_REQUIRE(dst.numel() == src.numel(), "copy: ", src.shape_str(), " into ", dst.shape_str());
  if (src.numel() && dst.raw() != src.raw()) std::memcpy(dst.raw(), src.raw(), src.bytes());
}

void zero(Tensor& t) {
  if (t.numel()) std::memset(t.raw(), 0, t.bytes());
}

void add(Tensor& y, const Tensor& a, const Tensor& b) {
  PB_REQUIRE(y.numel() == a.numel() && a.numel() == b.numel(), "add: ", a.shape_str(), " + ", b.shape_str());
  as_row(y) = as_row(a) + as_row(b);
}

void add_(Tensor& y, const Tensor& x) {
  PB_REQUIRE(y.numel() == x.numel(), "add_: ", y.shape_str(), " += ", x.shape_str());
  as_row(y) += as_row(x);
}

void scale_(Tensor& y, float s) { as_row(y) *= s; }

double sum_squares(const Tensor& x) { return as_row(x).cast<double>().squaredNorm(); }

}  // namespace pb::cpu
