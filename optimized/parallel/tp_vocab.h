/* Vocab-parallel embedding and cross-entropy (Megatron-LM): the embedding table and the
 * LM head are split by vocabulary rows over TP; rank r owns tokens
 * [r*V/TP, (r+1)*V/TP).
 *
 * Embedding forward : partial (N, H) with zero rows for tokens owned elsewhere, then the
 *                     TP-linear strategy's reduce: AR_tp (TP) or RS_tp to the N/TP shard (SP).
 * Embedding backward: dy_full = gather(dy) (identity, or AG_tp under SP);
 *                     dE_owned += scatter(dy_full).
 * Cross-entropy over logits z (N, V/TP):
 *   m_t  = AR_max(max_v z_tv)            (N floats)
 *   y_t  = AR_sum(z_t,label if owned)    (N floats)
 *   s_t  = AR_sum(sum_v exp(z_tv - m_t)) (N floats)
 *   loss = mean_t (log s_t + m_t - y_t);   dz = (exp(z - m)/s - onehot) * scale / N
 */
#pragma once

#include <vector>

#include "optimized/core/index_tensor.h"
#include "optimized/parallel/tp_linear.h"

namespace pb {

void vocab_embedding_forward(Tensor& x, const IndexTensor& tokens, const Tensor& table, int64_t vocab_start,
                             TpLinear& tp);
void vocab_embedding_backward(Tensor& dtable, const Tensor& dx, const IndexTensor& tokens,
                              int64_t vocab_start, TpLinear& tp);

struct CeState {
  Tensor mx, se;  // (N) global row max and sum of exp, saved for backward
};
// Returns the mean cross-entropy over the N rows; group: the ranks holding the vocabulary's
// slices of these rows (TP; 2D: the row group).
double vocab_ce_forward(CeState& st, const Tensor& logits, const IndexTensor& labels, int64_t vocab_start,
                        Communicator& group);
void vocab_ce_backward(Tensor& dlogits, const CeState& st, const Tensor& logits, const IndexTensor& labels,
                       int64_t vocab_start, float dloss);

// The cross-entropy's all-reduces (TP > 1, where the rank holds the head): forward 3 x
// mb calls of fp32 N (max, target logit, sum of exp). The embedding's reduce and gather are
// the TP-linear strategy's terms.
void tp_vocab_terms(const Dims& d, Terms& t);

}  // namespace pb
