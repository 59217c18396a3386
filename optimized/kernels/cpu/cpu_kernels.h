/* CPU (fp32) kernels behind ops.h, same names and signatures. The math of the bigger
 * ops reuses the reference (DESIGN.md allows it: what the CPU path tests is the
 * distribution); the GEMMs map the tensors straight into Eigen. The kernels ignore their
 * stream argument: the dispatch already runs them where the stream runs its work (inline
 * on the default stream, in the queue of a worker stream). */
#pragma once

#include <Eigen/Dense>

#include "optimized/kernels/ops.h"
#include "reference/common/tensor.h"

namespace pb::cpu {

using MatMap = Eigen::Map<Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;
using CMatMap = Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;
inline MatMap as_mat(Tensor& t) { return MatMap(t.f32(), t.rows(), t.cols()); }
inline CMatMap as_mat(const Tensor& t) { return CMatMap(t.f32(), t.rows(), t.cols()); }
inline MatMap as_row(Tensor& t) { return MatMap(t.f32(), 1, t.numel()); }
inline CMatMap as_row(const Tensor& t) { return CMatMap(t.f32(), 1, t.numel()); }
// Copies into / out of the reference's matrix type.
inline ref::Mat<float> to_ref(const Tensor& t) { return as_mat(t); }
void from_ref(Tensor& t, const ref::Mat<float>& m);

#include "optimized/kernels/op_signatures.inc"

}  // namespace pb::cpu
