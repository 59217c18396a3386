/* Sizes refused before anything is allocated (DESIGN.md, Errors).
 *
 * check_case_sizes: the case's counts against reference/model/sizes.h's bounds (every
 * analytic figure stays inside int64; at most 10^6 micro-batches per step and 10^7
 * micro-batch passes per case), one line naming the case.
 *
 * memory_fit: the analytic memory of every rank of the case (all six categories, each
 * pipeline rank's own) summed over the ranks that share rank 0's node, plus a lower bound
 * for the reference on rank 0 (its fp64 run holds parameters, gradients and both AdamW
 * moments, 32 B per parameter, and a micro-batch's logits and layer inputs, while the fp32
 * run's step-1 gradients and final parameters are kept as fp64, 16 B), against what the node has available (MemAvailable). On the
 * CUDA backend the ranks' memory is device memory: only the reference is held against the
 * host (the device's memory is not checked before the run). Returns "" when it fits, else
 * one line:
 *   case big: needs 192.0 TiB on this node (1 rank, the most 48.0 TiB: params 12.0 TiB,
 *   grads 12.0 TiB, optimizer 24.0 TiB; the reference on rank 0 at least 144.0 TiB); this
 *   machine has 23.1 GiB available
 */
#pragma once

#include <cstdint>
#include <string>

#include "harness/case.h"

namespace pb::harness {

void check_case_sizes(const Case& c);

// local_ranks: how many of the case's ranks run on rank 0's node (the first ones);
// available: bytes (ref::host_memory_available(); < 0: unknown, nothing checked).
std::string memory_fit(const Case& c, int local_ranks, int64_t available);

}  // namespace pb::harness
