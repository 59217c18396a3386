/* The registry entries of the communication-overlap techniques and of the matmul-add's
 * baseline (registry.cc lists them):
 * what each needs of a case (one-line errors), the strategy it installs; their analytic
 * terms are the overlapped collectives' own, moved to the phase they run in (Dims).
 *   overlap_grad_reduce   the buckets' all-reduces started in the backward (model/grad_overlap.h);
 *                         with zero_stage 2/3 each block's reduce-scatters in flight under the
 *                         next block's backward (model/zero_grads.h)
 *   overlap_param_gather  the buckets' all-gathers waited for in the next forward
 *                         (model/param_gather_overlap.h)
 *   recompute_in_advance  the interleaved schedule's R actions (train/pp_schedule.h): a
 *                         chunk's recompute while its output gradient is received; no terms
 *                         of its own (the recompute's communication is full recompute's)
 *   no_gradient_accumulation_fusion  the weight gradients' products added by a separate
 *                         kernel (parallel/grad_separate_add.h), the default sink being the
 *                         matmul-add; no communication of its own, its product a workspace
 *                         (Dims::wgrad_products)
 *   mc2                   the SP linears' collectives in chunks under the matrix products
 *                         (parallel/mc2_linear.h); terms: SP's, the split calls by chunks
 */
#pragma once

#include "optimized/train/registry.h"

namespace pb {

void overlap_grad_reduce_require(const CaseSpec& c);
void overlap_grad_reduce_install(const CaseSpec& c, Strategies& s);
void overlap_param_gather_require(const CaseSpec& c);
void overlap_param_gather_install(const CaseSpec& c, Strategies& s);
void recompute_in_advance_require(const CaseSpec& c);  // (the registry checks the schedule)
void separate_add_require(const CaseSpec& c);
void separate_add_install(const CaseSpec& c, Strategies& s);
void mc2_require(const CaseSpec& c);
void mc2_install(const CaseSpec& c, Strategies& s);

}  // namespace pb
