/* Vocab-parallel embedding and cross-entropy (see tp_vocab.h). */
#include "optimized/parallel/tp_vocab.h"

#include "optimized/kernels/ops.h"

namespace pb {

void vocab_embedding_forward(Tensor& x, const IndexTensor& tokens, const Tensor& table, int64_t vocab_start,
                             TpLinear& tp) {
  Tensor partial = Tensor::empty({tokens.size(), table.cols()}, MemCategory::Workspace, x.dtype());  // (N, H)
  ops::embedding_forward(partial, tokens, table, vocab_start);
  tp.reduce(x, partial);
}

void vocab_embedding_backward(Tensor& dtable, const Tensor& dx, const IndexTensor& tokens,
                              int64_t vocab_start, TpLinear& tp) {
  const Tensor dx_full = tp.gather(dx);  // (N, H)
  ops::embedding_backward(dtable, dx_full, tokens, vocab_start);
}

double vocab_ce_forward(CeState& st, const Tensor& logits, const IndexTensor& labels, int64_t vocab_start,
                        Communicator& group) {
  const int64_t N = logits.rows();
  st.mx = Tensor::empty({N}, MemCategory::Activations, DType::F32);  // the softmax statistics stay fp32
  st.se = Tensor::empty({N}, MemCategory::Activations, DType::F32);
  Tensor tl = Tensor::empty({N}, MemCategory::Workspace, DType::F32);
  ops::ce_row_max(st.mx, logits);
  group.all_reduce(st.mx, ReduceOp::Max);
  ops::ce_target_logit(tl, logits, labels, vocab_start);
  group.all_reduce(tl);
  ops::ce_sum_exp(st.se, logits, st.mx);
  group.all_reduce(st.se);
  return ops::ce_loss_sum(st.mx, st.se, tl) / double(N);
}

void vocab_ce_backward(Tensor& dlogits, const CeState& st, const Tensor& logits, const IndexTensor& labels,
                       int64_t vocab_start, float dloss) {
  ops::ce_backward(dlogits, logits, st.mx, st.se, labels, vocab_start, dloss / float(logits.rows()));
}

void tp_vocab_terms(const Dims& d, Terms& t) {
  t.call("tp", CommOp::AllReduce, Phase::Forward, d.mb * 3 * d.head, Dims::fp * d.N, d.t);
}

}  // namespace pb
