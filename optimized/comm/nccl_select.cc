/* The NCCL-or-MPI choice of the CUDA backend (see nccl_select.h). */
#include "optimized/comm/nccl_select.h"

#include <cstring>

namespace pb {

namespace {

const char* const kStaged = ": collectives go through MPI, staged through host memory";

}  // namespace

bool nccl_disabled_by_env(const char* value) {
  return value != nullptr && value[0] != '\0' && std::strcmp(value, "0") != 0;
}

NcclChoice choose_nccl(bool built, const char* no_nccl_env, int local_ranks, int gpus) {
  NcclChoice c;
  if (nccl_disabled_by_env(no_nccl_env)) {
    c.why = std::string("backend cuda: PB_NO_NCCL=") + no_nccl_env + kStaged;
  } else if (!built) {
    c.why = std::string("backend cuda: this build has no NCCL") + kStaged;
  } else if (gpus < 1 || local_ranks > gpus) {
    c.why = "backend cuda: " + std::to_string(local_ranks) + " ranks share " + std::to_string(gpus) +
            " GPU(s) on a node (NCCL needs one GPU per rank)" + kStaged;
  } else {
    c.use = true;
  }
  return c;
}

std::string nccl_fallback_line(const std::string& error) {
  return "backend cuda: NCCL setup failed (" + error + ")" + kStaged;
}

}  // namespace pb
