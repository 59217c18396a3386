/* TeraPipe's attention core (Li et al., "TeraPipe: Token-Level Pipeline Parallelism for
 * Training Large-Scale Language Models", ICML'21, arXiv 2102.07988; schedule terapipe,
 * train/pp_schedule.h). Every micro-batch's sequences are split into K slices of s = S/K
 * tokens that go through the pipeline one after another: pipeline unit u = mb*K + i is
 * slice i of micro-batch mb (token rows b*S + i*s .. b*S + i*s + s-1 of each sequence b,
 * RoPE positions i*s .. i*s + s-1). Causal attention lets slice i depend only on slices <= i:
 *
 *   forward of slice i, every layer:
 *     K_{0..i}, V_{0..i} = the layer's keys and values of the earlier slices (kept from their
 *                          forwards: the K/V cache) and the slice's own
 *     o_i = softmax(q_i K_{0..i}^T / sqrt(D) + mask[key pos <= query pos]) V_{0..i}
 *   backward in reverse slice order (K-1 first, the schedule's):
 *     dq_i, dK_{0..i}, dV_{0..i} of that attention; the slice's own rows of dK, dV plus what
 *     the later slices accumulated for them are its dk, dv; the rows of the earlier slices
 *     are accumulated for their backward.
 *
 * So the gradients equal those of attention over the whole sequence (the sum runs in another
 * order). Memory per layer of the rank and micro-batch in flight (Activations): the K/V
 * cache, 2 e B S g D bytes, from slice 0's forward to slice 0's backward; the accumulated
 * dK, dV, 2 e B S g D bytes, from slice K-1's backward to slice 0's (none when K = 1). In
 * the core (Workspace): the keys and values of slices 0..i gathered contiguously per
 * sequence, 2 e B (i+1) s g D bytes, and in backward their gradients as well (twice that).
 */
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "optimized/model/attention_core.h"

namespace pb {

// The cross-slice state of the model's micro-batches in flight, per layer of this rank: the
// K/V cache and the accumulated dK, dV. Shared by the layers' cores (BlockEnv::terapipe);
// the model calls the begin/end hooks around each chunk's forward and backward.
class TeraPipeKV {
 public:
  // B sequences of S tokens in K slices; rows of g*D keys (values) in dtype.
  TeraPipeKV(int64_t B, int64_t S, int64_t K, int64_t gD, DType dtype);
  int64_t slices() const { return K_; }
  void begin_forward(int unit, const std::vector<int64_t>& layers);   // slice 0: the layers' caches
  void begin_backward(int unit, const std::vector<int64_t>& layers);  // slice K-1 (K > 1): the accumulators
  void end_backward(int unit);                                        // slice 0: all of it freed
  struct Layer {
    Tensor k, v;    // (B*S, g*D) the cache, rows b*S + t
    Tensor dk, dv;  // (B*S, g*D) the accumulated gradients (K > 1), from slice K-1's backward
  };
  Layer& at(int unit, int64_t layer);
  int64_t B, S, s, gD;  // s = S / K

 private:
  int64_t K_;
  DType dtype_;
  std::map<int, std::map<int64_t, Layer>> seqs_;  // micro-batch -> layer -> its state
};

class TeraPipeAttention final : public AttentionCore {
 public:
  TeraPipeAttention(const BlockEnv& env, int64_t layer);
  std::unique_ptr<Saved> forward(Tensor& o, const Tensor& q, const Tensor& k, const Tensor& v, int mb) override;
  void backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, Saved& s) override;

 private:
  ops::AttnShape shape_of(int slice) const;
  // Keys and values of slices 0..i of every sequence, contiguous: (B*(i+1)*s, g*D) each.
  Tensor gather(const Tensor& cache, int slice) const;
  TeraPipeKV& kv_;
  int64_t layer_, Aq_, D_;
};

// Per layer and micro-batch: the K/V cache (and, the same again, the accumulated gradients),
// 2 e B S g D bytes with S the whole sequence (d.S * d.slices).
int64_t terapipe_cache_bytes(const Dims& d);
// The core's workspace at its peak for slice d.slice: gathered K, V (forward); and their
// gradients (backward).
BlockWorkspace terapipe_workspace(const Dims& d);

}  // namespace pb
