/* CPU (fp32) kernels behind ops.h, same names and signatures. The math of the bigger
 * ops reuses the reference (DESIGN.md allows it: what the CPU path tests is the
 * distribution); the GEMMs map the tensors straight into Eigen. */
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

void linear_forward(Tensor& y, const Tensor& x, const Tensor& w);
void linear_backward_input(Tensor& dx, const Tensor& dy, const Tensor& w);
void linear_backward_weight(Tensor& dw, const Tensor& dy, const Tensor& x);
void copy(Tensor& dst, const Tensor& src);
void zero(Tensor& t);
void add(Tensor& y, const Tensor& a, const Tensor& b);
void add_(Tensor& y, const Tensor& x);
void scale_(Tensor& y, float s);
double sum_squares(const Tensor& x);
void embedding_forward(Tensor& y, const std::vector<int64_t>& tok, const Tensor& table, int64_t vocab_start);
void embedding_backward(Tensor& dtable, const Tensor& dy, const std::vector<int64_t>& tok, int64_t vocab_start);
void rmsnorm_forward(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& g, float eps);
void rmsnorm_backward(Tensor& dx, Tensor& dg, const Tensor& dy, const Tensor& x, const Tensor& rstd, const Tensor& g);
void rope_forward(Tensor& y, const Tensor& x, const std::vector<int64_t>& pos, int64_t head_dim, double theta);
void rope_backward(Tensor& dx, const Tensor& dy, const std::vector<int64_t>& pos, int64_t head_dim, double theta);
void attention_forward(Tensor& o, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v, const ops::AttnShape& s);
void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                        const Tensor& v, const Tensor& o, const Tensor& lse, const ops::AttnShape& s);
void swiglu_forward(Tensor& y, const Tensor& gate, const Tensor& up);
void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dy, const Tensor& gate, const Tensor& up);
void ce_row_max(Tensor& mx, const Tensor& logits);
void ce_sum_exp(Tensor& se, const Tensor& logits, const Tensor& mx);
void ce_target_logit(Tensor& tl, const Tensor& logits, const std::vector<int64_t>& labels, int64_t vocab_start);
double ce_loss_sum(const Tensor& mx, const Tensor& se, const Tensor& tl);
void ce_backward(Tensor& dlogits, const Tensor& logits, const Tensor& mx, const Tensor& se,
                 const std::vector<int64_t>& labels, int64_t vocab_start, float scale);
void adamw(Tensor& w, const Tensor& g, Tensor& m, Tensor& v, const ops::AdamHyper& h);

}  // namespace pb::cpu
