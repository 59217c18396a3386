/* CPU pieces of the vocab-parallel cross-entropy (Megatron-LM's
 * VocabParallelCrossEntropy): local row max, local sum of exp, the target logit where
 * this rank owns the label, and the backward softmax - onehot with the global max and sum. */
#include <cmath>

#include "optimized/kernels/cpu/cpu_kernels.h"

namespace pb::cpu {

void ce_row_max(Tensor& mx, const Tensor& logits, const Stream&) {
  const auto z = as_mat(logits);
  for (int64_t t = 0; t < z.rows(); ++t) mx.f32()[t] = z.row(t).maxCoeff();
}

void ce_sum_exp(Tensor& se, const Tensor& logits, const Tensor& mx, const Stream&) {
  const auto z = as_mat(logits);
  for (int64_t t = 0; t < z.rows(); ++t) se.f32()[t] = (z.row(t).array() - mx.f32()[t]).exp().sum();
}

void ce_target_logit(Tensor& tl, const Tensor& logits, const std::vector<int64_t>& labels, int64_t vocab_start, const Stream&) {
  const auto z = as_mat(logits);
  for (int64_t t = 0; t < z.rows(); ++t) {
    const int64_t c = labels[size_t(t)] - vocab_start;
    tl.f32()[t] = (c >= 0 && c < z.cols()) ? z(t, c) : 0.0f;
  }
}

double ce_loss_sum(const Tensor& mx, const Tensor& se, const Tensor& tl, const Stream&) {
  double loss = 0;  // in row order, in double, identically on every TP rank
  for (int64_t t = 0; t < mx.numel(); ++t) loss += std::log(double(se.f32()[t])) + mx.f32()[t] - tl.f32()[t];
  return loss;
}

void ce_backward(Tensor& dlogits, const Tensor& logits, const Tensor& mx, const Tensor& se,
                 const std::vector<int64_t>& labels, int64_t vocab_start, float scale, const Stream&) {
  const auto z = as_mat(logits);
  auto d = as_mat(dlogits);
  for (int64_t t = 0; t < z.rows(); ++t) {
    d.row(t) = ((z.row(t).array() - mx.f32()[t]).exp() / se.f32()[t] * scale).matrix();
    const int64_t c = labels[size_t(t)] - vocab_start;
    if (c >= 0 && c < z.cols()) d(t, c) -= scale;
  }
}

// Index tensors: their host values.
void ce_target_logit(Tensor& tl, const Tensor& logits, const IndexTensor& labels, int64_t vocab_start,
                     const Stream& s) {
  ce_target_logit(tl, logits, labels.host(), vocab_start, s);
}

void ce_backward(Tensor& dlogits, const Tensor& logits, const Tensor& mx, const Tensor& se, const IndexTensor& labels,
                 int64_t vocab_start, float scale, const Stream& s) {
  ce_backward(dlogits, logits, mx, se, labels.host(), vocab_start, scale, s);
}

}  // namespace pb::cpu
