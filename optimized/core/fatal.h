/* Fatal errors under MPI: print "[rank r/w host] what" on stderr and MPI_Abort the job,
 * so that one failing rank never leaves the others hanging (DESIGN.md, Errors). */
#pragma once

#include <string>

namespace pb {

// "[rank r/w host]" of this process (before MPI_Init: "[rank ?]").
std::string rank_tag();
[[noreturn]] void abort_job(const std::string& what, int code = 1);
[[noreturn]] void fatal_mpi(int rc, const char* call, const char* file, int line);

}  // namespace pb

#define MPI_CHECK(call)                                                       \
  do {                                                                        \
    const int pb_rc_ = (call);                                                \
    if (pb_rc_ != MPI_SUCCESS) ::pb::fatal_mpi(pb_rc_, #call, __FILE__, __LINE__); \
  } while (0)
