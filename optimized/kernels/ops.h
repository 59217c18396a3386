/* The op set of the optimized path, one dispatch keyed by the tensors' device
 * (DESIGN.md: technique code calls these and never loops over tensor data itself).
 * Implementations: kernels/cpu/<op>.cc (CPU, fp32), kernels/cuda/<op>.cu (CUDA, later)
 * with the same names and signatures: outputs, inputs, sizes.
 *
 * Shapes: token rows N (= B*S, or a shard of them), H hidden, heads and head dim of the
 * local shard. Weight gradients accumulate (+=); everything else overwrites.
 */
#pragma once

#include <cstdint>
#include <vector>

#include "optimized/core/tensor.h"

namespace pb::ops {

struct AttnShape {
  int64_t B, S, A, G, D;  // local query heads A and kv heads G
};

struct AdamHyper {
  float lr, beta1, beta2, eps, weight_decay;  // weight_decay 0 for norm weights
  float bias_corr1, bias_corr2;               // 1 - beta^t
  float grad_scale;                           // clip coefficient (<= 1)
};

// y (N, out) = x (N, in) W^T, W (out, in)
void linear_forward(Tensor& y, const Tensor& x, const Tensor& w);
// dx (N, in) = dy (N, out) W
void linear_backward_input(Tensor& dx, const Tensor& dy, const Tensor& w);
// dW (out, in) += dy^T x
void linear_backward_weight(Tensor& dw, const Tensor& dy, const Tensor& x);

void copy(Tensor& dst, const Tensor& src);
void zero(Tensor& t);
void add(Tensor& y, const Tensor& a, const Tensor& b);  // y = a + b (y may alias a or b)
void add_(Tensor& y, const Tensor& x);                  // y += x
void scale_(Tensor& y, float s);                         // y *= s
double sum_squares(const Tensor& x);                     // in double

// Vocab-parallel embedding: rows of tokens outside [vocab_start, vocab_start + rows(table)) are 0.
void embedding_forward(Tensor& y, const std::vector<int64_t>& tok, const Tensor& table, int64_t vocab_start);
void embedding_backward(Tensor& dtable, const Tensor& dy, const std::vector<int64_t>& tok, int64_t vocab_start);

void rmsnorm_forward(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& g, float eps);
void rmsnorm_backward(Tensor& dx, Tensor& dg, const Tensor& dy, const Tensor& x, const Tensor& rstd, const Tensor& g);

void rope_forward(Tensor& y, const Tensor& x, const std::vector<int64_t>& pos, int64_t head_dim, double theta);
void rope_backward(Tensor& dx, const Tensor& dy, const std::vector<int64_t>& pos, int64_t head_dim, double theta);

// Causal attention over full sequences; lse (B*A, S).
void attention_forward(Tensor& o, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v, const AttnShape& s);
void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                        const Tensor& v, const Tensor& o, const Tensor& lse, const AttnShape& s);

void swiglu_forward(Tensor& y, const Tensor& gate, const Tensor& up);
void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dy, const Tensor& gate, const Tensor& up);

// Vocab-parallel cross-entropy pieces over logits (N, V/TP) of this rank's vocab slice.
void ce_row_max(Tensor& mx, const Tensor& logits);                                   // mx (N)
void ce_sum_exp(Tensor& se, const Tensor& logits, const Tensor& mx);                 // se (N) = sum exp(z - mx)
void ce_target_logit(Tensor& tl, const Tensor& logits, const std::vector<int64_t>& labels, int64_t vocab_start);
// sum_t (log se_t + mx_t - tl_t) in double: the summed loss from the global pieces.
double ce_loss_sum(const Tensor& mx, const Tensor& se, const Tensor& tl);
// dlogits = scale * (exp(z - mx) / se - onehot(label)), with the global mx and se.
void ce_backward(Tensor& dlogits, const Tensor& logits, const Tensor& mx, const Tensor& se,
                 const std::vector<int64_t>& labels, int64_t vocab_start, float scale);

void adamw(Tensor& w, const Tensor& g, Tensor& m, Tensor& v, const AdamHyper& h);

}  // namespace pb::ops
