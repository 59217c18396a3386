/* The activation-policy seam (DESIGN.md, "The decoder as blocks"): what a block keeps for
 * its backward. After a block's forward of a micro-batch the policy gets the block's saved
 * state, and again right before that micro-batch's backward.
 *
 * Strategies: keep (this file: everything stays where the forward left it); swap
 * (memory/swap_attention.h: the attention's saved tensors to host memory on a side stream
 * and back before backward, MindSpeed's swap attention). Recompute (drop the saved tensors
 * but the input, run the forward again in backward: full or selective, Korthikanti et al.,
 * arXiv 2205.05198) needs the blocks themselves: model/recompute.h.
 */
#pragma once

#include <vector>

#include "optimized/core/tensor.h"

namespace pb {

// One block's saved state for one micro-batch, as a policy sees it.
class SavedState {
 public:
  virtual ~SavedState() = default;
  virtual const char* block() const = 0;      // "attention", "mlp", "embedding", "head"
  virtual std::vector<Tensor*> tensors() = 0;  // the tensors kept for backward (views included)
  int64_t layer = -1;  // the decoder layer of an attention or MLP block
  int mb = 0;          // the micro-batch
  bool checkpointed = false;  // in a checkpointed group (model/recompute.h): dropped after the
                              // forward, its forward run again in backward
};

class ActivationPolicy {
 public:
  virtual ~ActivationPolicy() = default;
  virtual void after_forward(SavedState& s) = 0;
  virtual void before_backward(SavedState& s) = 0;
};

class KeepActivations final : public ActivationPolicy {
 public:
  void after_forward(SavedState&) override {}
  void before_backward(SavedState&) override {}
};

}  // namespace pb
