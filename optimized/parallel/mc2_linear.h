/* MC2: the sequence-parallel TP linears (sp_linear.h) with their collectives fused into
 * the matrix products, split into chunks so that one chunk's communication runs while the
 * previous chunk's product computes (MindSpeed's MC2 on Ascend, the all-gather /
 * reduce-scatter GEMMs of the Ascend CANN library; on GPUs TransformerEngine's
 * userbuffers "split pipelined" overlap, Wang et al., "Overlap communication with
 * dependent computation via decomposition", ASPLOS 2023). Same bytes as SP; calls are
 * chunks times as many where a linear is split.
 *
 * A rank holds n = N/TP rows outside TP regions; with k chunks each chunk is n/k rows of
 * every rank (chunk j: rows [j n/k, (j+1) n/k) of each rank's shard, i.e. rows r n + j n/k
 * of the whole for r = 0..TP-1). Per linear (W_i (out_i/TP, in) column, W (out, in/TP) row):
 *   column forward  Y_i = AG(X) W_i^T: chunk j+1's all-gather (into its place of the whole
 *                   X, all_gather_at) in flight while chunk j's rows of Y_i are computed
 *   row forward     Y = RS(X W^T): chunk j's rows of X W^T computed into its packed block
 *                   [rank 0's rows; rank 1's; ...] and reduce-scattered while chunk j+1's
 *                   are computed
 *   row backward    dY_full = AG(dY) by chunks as the column forward, dX's rows of chunk j
 *                   computed while chunk j+1 arrives; dW += dY_full^T X whole once all did
 *   column backward (no chunks, TransformerEngine's bulk overlap) the re-gather of X in
 *                   flight while dX_full = sum_i dY_i W_i computes, then the reduce-scatter
 *                   of dX_full in flight while dW_i += dY_i^T X_full computes
 * Every product is the plain one's on a subset of rows, and the weight gradients are the
 * plain ones, so results equal the SP linears' wherever the GEMM's rows do not depend on
 * how many rows it is given (Eigen's on the CPU at these sizes: tested) and the
 * reduce-scatter's sums do not depend on the message size. Memory: the gathered X, the
 * packed partial and the gathered dY are the SP linears' buffers, of the same size.
 */
#pragma once

#include <functional>

#include "optimized/parallel/sp_linear.h"

namespace pb {

class TpMc2 final : public TpSequenceParallel {
 public:
  TpMc2(Communicator& tp, GradSink& sink, int64_t chunks);
  int64_t chunks() const { return chunks_; }

  void column_forward(const std::vector<Tensor*>& ys, const Tensor& x, const std::vector<const Tensor*>& ws) override;
  void column_backward(Tensor& dx, const std::vector<Tensor*>& dws, const std::vector<const Tensor*>& dys,
                       const Tensor& x, const std::vector<const Tensor*>& ws) override;
  void row_forward(Tensor& y, const Tensor& x, const Tensor& w) override;
  void row_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w) override;

 private:
  int64_t chunk_rows(int64_t shard_rows) const;  // n/k, checked
  // The whole (TP n, cols) of a shard (n, cols), gathered chunk by chunk; for each chunk in
  // order, once it arrived and with the next one in flight, each of the TP row blocks
  // (r n + j n/k, n/k rows) goes to on_rows(whole, first row, rows).
  using OnRows = std::function<void(const Tensor& whole, int64_t r0, int64_t rows)>;
  Tensor gather_chunks(const Tensor& shard, const OnRows& on_rows);
  int64_t chunks_;
};

// The MC2 linears' communication: SP's (sp_terms) with its split calls chunks times as many.
void mc2_terms(const Dims& d, Terms& t, int64_t chunks);

}  // namespace pb
