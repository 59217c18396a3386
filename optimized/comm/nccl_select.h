/* Whether the CUDA backend's collectives go through NCCL or through MPI (staged through
 * host memory), as plain functions of what a rank knows, so that the choice is tested
 * without a GPU (suites/unit/test_nccl_select.cc). harness/dist_run.cc's select_device
 * applies it, agrees on it over the ranks and then probes NCCL once (a failing
 * ncclCommInitRank falls back to MPI with one line on rank 0).
 *
 * NCCL is used only when all of these hold:
 *   the build has NCCL (PB_WITH_NCCL);
 *   PB_NO_NCCL is unset, empty or "0" (any other value forces MPI);
 *   every rank of a node has its own GPU (NCCL refuses two ranks on one GPU). */
#pragma once

#include <string>

namespace pb {

struct NcclChoice {
  bool use = false;
  std::string why;  // the one line for stderr when MPI carries the collectives; empty with NCCL
};

// Whether the value of PB_NO_NCCL (nullptr: unset) forces MPI.
bool nccl_disabled_by_env(const char* value);

// The choice of one rank: built = this build has NCCL; no_nccl_env = getenv("PB_NO_NCCL");
// local_ranks = the ranks on this node; gpus = the GPUs this node shows.
NcclChoice choose_nccl(bool built, const char* no_nccl_env, int local_ranks, int gpus);

// The line when NCCL was chosen but its setup failed (`error`: NCCL's message).
std::string nccl_fallback_line(const std::string& error);

}  // namespace pb
