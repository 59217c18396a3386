/* The registry entries of the communication-overlap techniques (registry.cc lists them):
 * what each needs of a case (one-line errors), the strategy it installs; their analytic
 * terms are the overlapped collectives' own, moved to the phase they run in (Dims).
 *   overlap_grad_reduce   the buckets' all-reduces started in the backward (model/grad_overlap.h)
 */
#pragma once

#include "optimized/train/registry.h"

namespace pb {

void overlap_grad_reduce_require(const CaseSpec& c);
void overlap_grad_reduce_install(const CaseSpec& c, Strategies& s);

}  // namespace pb
