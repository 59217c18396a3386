/* CPU pieces of the vocab-parallel cross-entropy (Megatron-LM's
 * VocabParallelCrossEntropy): local row max, local sum of exp, the target logit where
 * this rank owns the label, and the backward softmax - onehot with the global max and sum.
 *   logits, dlogits (N, V/tp); mx, se, tl (N)
 * Each is one pass over the logits, rows in fixed blocks on the kernel threads (every row on
 * its own: bitwise the same for any thread count). The forward is two passes, max then sum
 * of exp, because under TP the max is all-reduced between them (as Megatron-LM does); the
 * backward's softmax, scale and one-hot are one. */
#include <cmath>

#include "optimized/kernels/cpu/cpu_kernels.h"
#include "optimized/kernels/cpu/parallel.h"
#include "optimized/kernels/shape_checks.h"

namespace pb::cpu {

namespace {
constexpr int64_t kRows = 16;  // rows per block
}  // namespace

void ce_row_max(Tensor& mx, const Tensor& logits, const Stream&) {
  checks::ce_row_stats("ce_row_max", logits, {&mx});
  const auto z = as_mat(logits);
  parallel_blocks(z.rows(), kRows, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) mx.f32()[t] = z.row(t).maxCoeff();
  });
}

void ce_sum_exp(Tensor& se, const Tensor& logits, const Tensor& mx, const Stream&) {
  checks::ce_row_stats("ce_sum_exp", logits, {&se, &mx});
  const auto z = as_mat(logits);
  parallel_blocks(z.rows(), kRows, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) se.f32()[t] = (z.row(t).array() - mx.f32()[t]).exp().sum();
  });
}

void ce_target_logit(Tensor& tl, const Tensor& logits, const std::vector<int64_t>& labels, int64_t vocab_start, const Stream&) {
  checks::ce_row_stats("ce_target_logit", logits, {&tl});
  checks::ce_labels("ce_target_logit", logits, int64_t(labels.size()));
  const auto z = as_mat(logits);
  for (int64_t t = 0; t < z.rows(); ++t) {
    const int64_t c = labels[size_t(t)] - vocab_start;
    tl.f32()[t] = (c >= 0 && c < z.cols()) ? z(t, c) : 0.0f;
  }
}

double ce_loss_sum(const Tensor& mx, const Tensor& se, const Tensor& tl, const Stream&) {
  checks::ce_loss_operands("ce_loss_sum", mx, se, tl);
  double loss = 0;  // in row order, in double, identically on every TP rank
  for (int64_t t = 0; t < mx.numel(); ++t) loss += std::log(double(se.f32()[t])) + mx.f32()[t] - tl.f32()[t];
  return loss;
}

void ce_backward(Tensor& dlogits, const Tensor& logits, const Tensor& mx, const Tensor& se,
                 const std::vector<int64_t>& labels, int64_t vocab_start, float scale, const Stream&) {
  checks::ce_backward_operands("ce_backward", dlogits, logits, mx, se, int64_t(labels.size()));
  const auto z = as_mat(logits);
  auto d = as_mat(dlogits);
  parallel_blocks(z.rows(), kRows, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      d.row(t) = ((z.row(t).array() - mx.f32()[t]).exp() / se.f32()[t] * scale).matrix();
      const int64_t c = labels[size_t(t)] - vocab_start;
      if (c >= 0 && c < z.cols()) d(t, c) -= scale;
    }
  });
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
