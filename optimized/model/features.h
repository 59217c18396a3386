/* The typed features of a case: parsed once from the case's names by the technique
 * registry (optimized/train/registry.h); the model, the analytic terms and the runner read
 * these fields and never the names. */
#pragma once

namespace pb {

struct Features {
  bool sp = false;  // Megatron sequence parallelism (needs TP): activations outside TP regions are N/TP rows
};

}  // namespace pb
