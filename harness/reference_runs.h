/* The runs a case is compared with, on rank 0 of the case only (DESIGN.md, Checks):
 *   ref32  the reference in fp32: what the distributed run is compared against;
 *   base   the baseline that says how much of a difference the dtype itself explains:
 *          fp32 cases: the reference in fp64 (the truth);
 *          bf16 cases: the same case in bf16 on one rank (Case::one_rank(): no parallel
 *          degrees, dp times the micro-batches), through the distributed code.
 * Every tensor as doubles, by Hugging Face name.
 */
#pragma once

#include <string>
#include <vector>

#include "harness/case.h"
#include "harness/dist_run.h"

namespace pb::harness {

struct RefRun {
  std::vector<double> losses, grad_norms;  // per step
  std::vector<std::string> names;          // the reference's parameter order (ref32 only)
  TensorsByName grads1, final;             // step-1 gradients, parameters after the last step
};

struct References {
  RefRun ref32, base;
};

// The reference and the baseline of c; dev is the case's device (the bf16 baseline runs there).
References run_references(const Case& c, Device dev);

}  // namespace pb::harness
