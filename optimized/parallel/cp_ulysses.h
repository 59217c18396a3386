/* Context parallelism, DeepSpeed-Ulysses (Jacobs et al., arXiv 2309.14509; FEATURES.md,
 * CP Ulysses): the sequence split contiguously (rank r keeps tokens [r S/c, (r+1) S/c) of
 * every sequence); around the attention core, all-to-alls turn the sequence split into a
 * head split and back. The attention-core strategy that runs it is model/attention_ulysses.h.
 *
 * Heads: each rank attends over the whole sequence with a/c query heads (a = A/TP, needs
 * a % c == 0) and g'/c kv heads, where g' = g when c divides the kv heads g = G/TP, else
 * (c % g == 0) every kv head is repeated c/g times (g' = c, one per rank) and the repeat's
 * gradient summed.
 *
 * Communication per layer and micro-batch over the cp group (an all-to-all moves its send
 * buffer, e N a D or e N g' D bytes for this rank's N = B S/c rows): forward q, k, v in and
 * o back (2 of e N a D, 2 of e N g' D); backward dO in and dq, dk, dv back (the same).
 */
#pragma once

#include <cstdint>

#include "optimized/parallel/terms.h"

namespace pb {

// kv heads after the repeat (g'), from this rank's kv heads g and the CP degree c; 0 when
// neither divides the other.
int64_t ulysses_kv_heads(int64_t g, int64_t c);

// Over the group `group` of u ranks (Ulysses: the cp group, u = c).
void cp_ulysses_terms(const Dims& d, Terms& t, const char* group = "cp", int64_t u = 0);

}  // namespace pb
