/* Sizes refused before anything is allocated or counted, for the reference and the harness.
 *
 * check_size_bounds: every count the code forms (elements, bytes, calls, parameters) is a
 * sum of products of the sizes, each below
 *   activations, communication   steps * m * dp * (L+2) * B * S * W * 64
 *   parameters, their states     steps * (L+2) * W^2 * 512
 * with W = max(H, F, V, A*D, G*D, E*F_e) the widest row a token or a weight has (attention
 * is computed block by block: no count holds S^2). Both below 2^63 keep every count inside
 * int64: 64 covers a row's bytes (at most 8 an element) times the tensors a layer keeps
 * or moves per token (the TP all-reduces of a step: 8 e N H per layer and micro-batch);
 * 512 the parameters' 9 W^2 per layer times 16 bytes of state, or the DP all-reduces of
 * every step. At most 10^5 layers (the analytic walk and the models loop over them).
 * Counts that only lengthen the run are bounded too: at most 10^6
 * micro-batches per step and 10^7 micro-batch passes (steps * m * dp) per run. Throws
 * pb::Error with one line, `who` first ("case big: "), naming the product.
 *
 * reference_bytes_lower_bound: what the reference trainer holds at least, in T = float or
 * double: parameters, gradients and both AdamW moments, 4 P sizeof(T), and of one
 * micro-batch the logits and each layer's input, B S (V + L H) sizeof(T).
 */
#pragma once

#include <cstdint>
#include <string>

#include "reference/model/config.h"

namespace pb::ref {

void check_size_bounds(const ModelConfig& mc, const TrainConfig& tc, int64_t dp, const std::string& who);

double reference_bytes_lower_bound(const ModelConfig& mc, const TrainConfig& tc, int64_t bytes_per_element);

// Bytes available to new allocations on this node (/proc/meminfo MemAvailable; elsewhere
// the free physical pages); -1 when unknown.
int64_t host_memory_available();

// "7.3 TiB", "23.1 GiB", "512 B".
std::string human_bytes(double bytes);

}  // namespace pb::ref
