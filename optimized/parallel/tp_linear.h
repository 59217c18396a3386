/* The TP-linear seam: Megatron tensor-parallel linears (Shoeybi et al., arXiv 1909.08053),
 * with the sequence-parallel strategy (Korthikanti et al., arXiv 2205.05198) in sp_linear.h.
 *
 * Column-parallel (W rows split: this rank holds W_i (out/TP, in)); several weights may
 * share one input (q, k, v; gate, up), as Megatron's fused QKV / gate-up do:
 *   forward : x_full = gather(x)                         (N, in)
 *             y_i    = x_full W_i^T                      (N, out_i/TP)
 *   backward: dx_full = sum_i dy_i W_i                   (N, in)
 *             dW_i  += dy_i^T x_full   (x_full gathered again from the saved input)
 *             dx     = reduce(dx_full)                   (rows(x), in)
 * Row-parallel (W columns split: W (out, in/TP)):
 *   forward : y = reduce(x W^T)                          (rows(y), out)
 *   backward: dy_full = gather(dy);  dx = dy_full W;  dW += dy_full^T x
 * A strategy decides the two region boundaries:
 *   all-reduce (TpAllReduce, this file): gather = identity, reduce = AR_tp; activations
 *     outside TP regions are all N rows. Per layer (QKV + o, gate/up + down): 2 all-reduces
 *     of N*H forward, 2 backward.
 *   SP (TpSequenceParallel, sp_linear.h): gather = AG_tp, reduce = RS_tp over N/TP rows.
 * Weight gradients go to the gradient sink (grad_sink.h), or, while a queue is set, are
 * queued for zero bubble's W pass (Qi et al., arXiv 2401.10241) with dy and the gathered x
 * kept alive; the communication is unchanged (SP's re-gather of x still happens in B).
 * MC2 (mc2_linear.h) overrides the linears; 2D / 2.5D (tp2d_linear.h) the linears, the norms
 * and the model's two ends.
 */
#pragma once

#include <vector>

#include "optimized/comm/communicator.h"
#include "optimized/parallel/grad_sink.h"
#include "optimized/parallel/terms.h"

namespace pb {

// One queued weight gradient: dW += dy^T x through the gradient sink, or with group sizes
// (MoE experts) dW_i += dy_i^T x_i per group (ops::grouped_linear_backward_weight). The
// tensors are handles: what they view stays alive until W.
struct DeferredWGrad {
  Tensor dw;
  Tensor dy, x;
  std::vector<int64_t> groups;
};
using WGradQueue = std::vector<DeferredWGrad>;
void run_wgrads(WGradQueue& q, GradSink& sink);  // computes and empties the queue, in queue order

class TpLinear {
 public:
  TpLinear(Communicator& tp, GradSink& sink) : tp_(tp), sink_(sink) {}
  virtual ~TpLinear() = default;
  Communicator& group() { return tp_; }
  GradSink& sink() { return sink_; }
  // While set, weight gradients are queued instead of computed (split backward).
  void defer_to(WGradQueue* q) { defer_ = q; }
  WGradQueue* deferring() const { return defer_; }  // for blocks with weights outside TP linears

  // Rows of an activation outside TP regions, for N token rows: N, or N/TP under SP.
  virtual int64_t outer_rows(int64_t N) const = 0;
  // Into a TP region: (outer rows, c) -> (N, c), the input itself or a gathered copy.
  virtual Tensor gather(const Tensor& x) = 0;
  // Out of a TP region: partial (N, c) summed over TP into out (outer rows, c).
  virtual void reduce(Tensor& out, Tensor& partial) = 0;
  // Whether replicated weights (the norms) saw only this rank's rows, so their gradients
  // must be all-reduced over TP before the step.
  virtual bool replicated_grads_partial() const = 0;
  // Sums those gradients (g: the leading block of the gradient buffer) over the ranks that
  // saw the other rows: TP (SP), the column group (2D), the (i, j) plane (3D).
  virtual void sum_replicated_grads(Tensor& g) { tp_.all_reduce(g); }

  // The ends of the model and the norms, where a grid strategy (2D, tp2d_linear.h) differs
  // from a line of ranks; the defaults are 1D's (all the micro-batch's rows everywhere):
  // The token rows the embedding reads, and the label rows the head scores.
  virtual std::vector<int64_t> embedding_rows(const std::vector<int64_t>& tokens) const { return tokens; }
  virtual std::vector<int64_t> head_rows(const std::vector<int64_t>& labels) const { return labels; }
  // The first vocabulary row of the rank's embedding table and LM head, and the group over
  // which the head's cross-entropy is vocab-parallel.
  virtual int64_t embedding_vocab_start(int64_t V) const { return V / tp_.size() * tp_.rank(); }
  virtual int64_t head_vocab_start(int64_t V) const { return V / tp_.size() * tp_.rank(); }
  virtual Communicator& vocab_group() { return tp_; }
  // The micro-batch's mean loss from this rank's head rows' mean, and the weight of those
  // rows in it (what the head's backward scales by).
  virtual double loss_mean(double local) { return local; }
  virtual float loss_share() const { return 1.0f; }
  // RMSNorm of the activations outside TP regions (x (rows, H_s), w (H_s)): whole rows
  // here; a grid's hidden blocks need the row statistics summed over the row group.
  virtual void norm_forward(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& w, float eps);
  virtual void norm_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& rstd,
                             const Tensor& w);

  virtual void column_forward(const std::vector<Tensor*>& ys, const Tensor& x, const std::vector<const Tensor*>& ws);
  virtual void column_backward(Tensor& dx, const std::vector<Tensor*>& dws, const std::vector<const Tensor*>& dys,
                               const Tensor& x, const std::vector<const Tensor*>& ws);
  virtual void row_forward(Tensor& y, const Tensor& x, const Tensor& w);
  virtual void row_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w);

 protected:
  void weight_grad(Tensor& dw, const Tensor& dy, const Tensor& x);  // dW += dy^T x, now or queued
  Communicator& tp_;
  GradSink& sink_;
  WGradQueue* defer_ = nullptr;
};

class TpAllReduce final : public TpLinear {
 public:
  using TpLinear::TpLinear;
  int64_t outer_rows(int64_t N) const override { return N; }
  Tensor gather(const Tensor& x) override { return x; }
  void reduce(Tensor& out, Tensor& partial) override;  // AR in place, out = partial
  bool replicated_grads_partial() const override { return false; }
};

// The linears' communication over a step (TP > 1, all-reduce strategy), with Lr layers
// and the head's column linear where the rank holds it (terms.h):
//   forward  all_reduce (emb + b) x e N H    (row linears; the embedding's reduce)
//   backward all_reduce (b + head) x e N H   (column linears)
// with b = 2 Lr - Lmoe blocks of TP linears (an MoE layer's MLP has none).
void tp_allreduce_terms(const Dims& d, Terms& t);

}  // namespace pb
