/* Swap attention (MindSpeed's swap-attention; the activation-policy seam, DESIGN.md "The
 * decoder as blocks"): the tensors an attention block saves for its backward live in host
 * memory between the layer's forward and the layer's backward.
 *
 *   attention forward ends   copy every saved tensor to host memory (MemCategory::Host)
 *                            on a side stream, after the forward's work (an event)
 *   the layer's MLP forward  wait for the copies; the device tensors are released
 *   ends
 *   the layer's backward     (its MLP block's backward begins) allocate device buffers and
 *   begins                   copy back on the side stream: the prefetch overlaps the MLP
 *                            block's backward
 *   attention backward       wait for the prefetch; the host copies are released
 *   begins
 * Bitwise equal to keeping the tensors: the bytes come back unchanged. Tensors that share
 * storage (the core's q, k, v, o are the block's) move once. A layer in a checkpointed
 * group (full recompute, model/recompute.h) is not swapped: it keeps only its input. On the CPU backend the side
 * stream is a worker thread and "host" a category of the one allocator, so the saving is
 * measured as on CUDA (there the host buffers are pinned: asynchronous copies).
 *
 * The copies are recorded in the communication ledger (group "host": to_host in the
 * forward, to_device in the backward, one call of the layer's bytes per layer and
 * micro-batch). Memory per layer and micro-batch: the attention block's saved bytes and its core's
 * (attention_block.h, attention_core.h) leave the device for the host category; the
 * walk in harness/analytic.cc adds the transients (a layer's attention state until its
 * MLP forward ends, the prefetched state from the layer's backward on).
 */
#pragma once

#include <map>
#include <utility>
#include <vector>

#include "optimized/core/stream.h"
#include "optimized/memory/activation_policy.h"

namespace pb {

class SwapAttention final : public ActivationPolicy {
 public:
  explicit SwapAttention(Device dev);
  void after_forward(SavedState& s) override;
  void before_backward(SavedState& s) override;
  // Swaps not completed by their backward (after a step: none), and the host bytes held.
  int64_t in_flight() const { return int64_t(swaps_.size()); }
  int64_t host_bytes() const;
  int64_t bytes_out() const { return out_; }  // moved to the host so far
  int64_t bytes_in() const { return in_; }    // moved back

 private:
  struct Slot {
    std::vector<Tensor*> where;  // every saved tensor of this storage
    Tensor host, back;
  };
  struct Swap {
    std::vector<Slot> slots;
    Event out, in;
    bool released = false, prefetched = false;
  };
  Swap& of(const SavedState& s, const char* what);
  static int64_t host_bytes_of(const Swap& sw);
  Device dev_;
  Stream side_;
  std::map<std::pair<int64_t, int>, Swap> swaps_;  // (layer, micro-batch)
  int64_t out_ = 0, in_ = 0;
};

}  // namespace pb
