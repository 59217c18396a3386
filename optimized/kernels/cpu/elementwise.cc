/* CPU element-wise ops: copy, zero, add, sum of squares (per tensor and over the segments
 * of one buffer); and the copies between tensors and reference matrices. */
#include <algorithm>
#include <cstring>

#include "optimized/kernels/cpu/cpu_kernels.h"
#include "reference/common/error.h"

namespace pb::cpu {

void from_ref(Tensor& t, const ref::Mat<float>& m) {
  PB_REQUIRE(t.numel() == m.size(), "from_ref: tensor ", t.shape_str(), " vs matrix ", m.rows(), "x", m.cols());
  if (m.size()) std::memcpy(t.f32(), m.data(), size_t(m.size()) * sizeof(float));
}

void copy(Tensor& dst, const Tensor& src, const Stream&) {
  PB_REQUIRE(dst.numel() == src.numel(), "copy: ", src.shape_str(), " into ", dst.shape_str());
  if (src.numel() && dst.raw() != src.raw()) std::memcpy(dst.raw(), src.raw(), src.bytes());
}

void swap(Tensor& a, Tensor& b, const Stream&) {
  PB_REQUIRE(a.bytes() == b.bytes(), "swap: ", a.shape_str(), " and ", b.shape_str());
  auto* x = static_cast<unsigned char*>(a.raw());
  std::swap_ranges(x, x + a.bytes(), static_cast<unsigned char*>(b.raw()));
}

void zero(Tensor& t, const Stream&) {
  if (t.numel()) std::memset(t.raw(), 0, t.bytes());
}

void add(Tensor& y, const Tensor& a, const Tensor& b, const Stream&) {
  PB_REQUIRE(y.numel() == a.numel() && a.numel() == b.numel(), "add: ", a.shape_str(), " + ", b.shape_str());
  as_row(y) = as_row(a) + as_row(b);
}

void add_(Tensor& y, const Tensor& x, const Stream&) {
  PB_REQUIRE(y.numel() == x.numel(), "add_: ", y.shape_str(), " += ", x.shape_str());
  as_row(y) += as_row(x);
}

void scale_(Tensor& y, float s, const Stream&) { as_row(y) *= s; }

double sum_squares(const Tensor& x, const Stream&) { return as_row(x).cast<double>().squaredNorm(); }

// The per-tensor loop of the gradient norm over views of the buffer: each segment is the
// same Eigen expression on the same memory as sum_squares of the tensor, added in order,
// so the result is bitwise the loop's.
double sum_squares_segments(const Tensor& buf, const std::vector<int64_t>& seg_ends, const Stream&) {
  double sq = 0;
  int64_t start = 0;
  for (int64_t end : seg_ends) {
    sq += sum_squares(buf.view(start, {end - start}));
    start = end;
  }
  return sq;
}

}  // namespace pb::cpu
