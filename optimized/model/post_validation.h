/* Post-validation of the optimizer step (Qi et al., "Zero Bubble Pipeline Parallelism",
 * arXiv 2401.10241, Sec. 4 "Bypassing optimizer synchronizations"; seed 001): the step
 * runs before the global gradient norm and the non-finite check are known, and is rolled
 * back when they say it should not have.
 *
 * With a pipeline the global state of a step (the squared gradient norm; NaN or Inf in it)
 * is a sum over the stages. Synchronously every stage waits for it (one all-reduce over
 * TP x PP) before its step, which ties the ranks together at every step's end and keeps
 * ZB-H2's parallelogram from closing. Post-validated, stage r (p stages, pp ranks 0..p-1):
 *   1. sums its squares over TP (the stage's state s_r), receives the partial sum
 *      P_{r-1} = s_0 + .. + s_{r-1} from stage r-1, sends P_r = P_{r-1} + s_r to stage r+1;
 *   2. steps eagerly on P_r: when P_r is finite and clip / (sqrt(P_r) + 1e-6) >= 1 (no
 *      clipping), AdamW with coefficient 1 after keeping the state it overwrites; otherwise
 *      skips (P only grows along the chain: the full state cannot make such a step right);
 *   3. receives the full state P_{p-1} from stage r+1 and sends it on to stage r-1 (the
 *      paper sends it during the next step's warm-up; here right after, before returning);
 *   4. validates: non-finite -> the step is skipped (an eager step rolled back); clipping
 *      needed -> an eager step rolled back, then the step redone with the clip coefficient;
 *      otherwise the eager step stands (it must have been taken).
 * The result equals the synchronous step's: bitwise when nothing is clipped (coefficient 1
 * either way); with clipping the norm's sum runs in another order (fp64 sums of fp32
 * squares), within the fp32 rule. A non-finite global norm skips the step everywhere, the
 * Adam step count included (reference/model/adamw.h does the same).
 * The rollback restores a copy (the fp32 master or weights and Adam's m and v, 12 bytes per
 * local parameter, optimizer state): exact, where the paper's in-place inverse of AdamW
 * (its Algorithm 1) costs no memory but rounds.
 * Communication per step: 8 bytes all-reduced over TP (t > 1), and 8 bytes sent and
 * received along the pipeline each way (rank r: one send up and one down unless at an end)
 * instead of the synchronous 8-byte all-reduce over TP x PP.
 */
#pragma once

#include <cstdint>

#include "optimized/parallel/terms.h"

namespace pb {

// What one rank's post-validation did, summed over the steps.
struct PostValidationLog {
  int64_t steps = 0;
  int64_t eager = 0;        // stepped on the partial state
  int64_t kept = 0;         // eager steps the full state confirmed
  int64_t rolled_back = 0;  // eager steps undone (clipping needed, or a non-finite norm)
  int64_t redone = 0;       // steps taken again with the clip coefficient
  int64_t skipped = 0;      // steps not taken: non-finite norm
};

// The terms: the chain's point-to-point scalars, the TP sum, and the copy's memory.
void post_validation_terms(const Dims& d, Terms& t);

}  // namespace pb
