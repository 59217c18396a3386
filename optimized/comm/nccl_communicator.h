/* NCCL backend of the Communicator, bootstrapped through MPI (rank 0 calls
 * ncclGetUniqueId, MPI_Bcast shares it, every rank calls ncclCommInitRank). Device
 * buffers only; collectives run on the default stream and the blocking variants
 * synchronize it. NCCL refuses two ranks on one GPU, so the runner uses this backend only
 * when every rank of a node has its own GPU, and the MPI backend (staged through the host)
 * otherwise. Accounting is the same as the MPI backend's. */
#pragma once

#include <mpi.h>

#include "optimized/comm/communicator.h"

namespace pb {

// Whether this build has NCCL.
bool nccl_built();
std::string nccl_version();  // "2.28.x" or ""

// Creates an NCCL communicator over the ranks of `comm` (all must call it). Throws
// without NCCL.
std::unique_ptr<Communicator> make_nccl_communicator(const std::string& name, MPI_Comm comm);

}  // namespace pb
