/* NCCL backend of the Communicator, bootstrapped through MPI (rank 0 calls
 * ncclGetUniqueId, MPI_Bcast shares it, every rank calls ncclCommInitRank). Device
 * buffers only. Each communicator has its own CUDA stream: a call makes that stream wait
 * on an event recorded on the caller's current stream, runs there, and records a done
 * event; Request::wait() (and every blocking call, post + wait) makes the caller's current
 * stream wait on it -- on the device, the host never blocks (barrier excepted). The
 * buffers are marked as used by the communication stream (Tensor::record_stream).
 * NCCL refuses two ranks on one GPU, so the runner uses this backend only when every rank
 * of a node has its own GPU, and the MPI backend (staged through the host) otherwise.
 * Accounting is the same as the MPI backend's. */
#pragma once

#include <mpi.h>

#include "optimized/comm/communicator.h"

namespace pb {

// Whether this build has NCCL.
bool nccl_built();
std::string nccl_version();  // "2.28.x" or ""

// Creates an NCCL communicator over the ranks of `comm` (all must call it). Throws
// without NCCL, or where NCCL's setup fails on any rank (one line: NCCL's message).
std::unique_ptr<Communicator> make_nccl_communicator(const std::string& name, MPI_Comm comm);

// The same, or null on every rank of `comm` where NCCL's setup (ncclGetUniqueId,
// ncclCommInitRank) fails on any of them, with the reason in *error (where given): the
// caller falls back to MPI instead of aborting.
std::unique_ptr<Communicator> try_make_nccl_communicator(const std::string& name, MPI_Comm comm,
                                                         std::string* error = nullptr);

// Whether NCCL can be set up over `comm` (ncclCommInitRank, then destroyed again;
// all ranks of comm call it and get the same answer).
bool nccl_probe(MPI_Comm comm, std::string* error = nullptr);

}  // namespace pb
