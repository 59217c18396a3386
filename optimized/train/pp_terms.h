/* The analytic terms of pipeline parallelism (p stages, v chunks each), for pipeline rank
 * d.pp_rank, and the activation peak of any rank walked through its schedule.
 *
 * Point-to-point over the pp group, per micro-batch and chunk of virtual stage s, e N_s H
 * bytes each: RecvF + SendB if s > 0, SendF + RecvB if s < p v - 1, except across a
 * boundary that stays on one rank (ZB-V's turn), which moves nothing; the loss all-reduce
 * over pp (8 bytes per step).
 * Activation peak: A_c bytes saved by one micro-batch in chunk c, K_c of them kept by a
 * split backward's queued weight gradients, x_b = e N_s H a boundary tensor. RecvF
 * allocates x_b; F the rest of A_c plus the output it sends (x_b, freed when its batch
 * completes, or handed to the next chunk's F on the same rank, where it is that chunk's
 * input); B frees A_c, or with a split backward A_c - K_c, and W frees K_c. Without a
 * pipeline the peak is A_0 (one micro-batch at a time).
 */
#pragma once

#include <vector>

#include "optimized/train/pp_schedule.h"
#include "optimized/parallel/terms.h"

namespace pb {

void pp_terms(const pp::Schedule& s, const Dims& d, Terms& t);
int64_t activation_peak(const pp::Schedule* s, int rank, const std::vector<int64_t>& A, const std::vector<int64_t>& K,
                        int64_t xb);

}  // namespace pb
