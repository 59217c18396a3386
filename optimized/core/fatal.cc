/* Job-wide abort with the failing rank's message. */
#include "optimized/core/fatal.h"

#include <mpi.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace pb {

std::string rank_tag() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  char host[256] = "?";
  gethostname(host, sizeof(host) - 1);
  if (!init || fin) return std::string("[rank ? ") + host + "]";
  int r = 0, w = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  MPI_Comm_size(MPI_COMM_WORLD, &w);
  return "[rank " + std::to_string(r) + "/" + std::to_string(w) + " " + host + "]";
}

void abort_job(const std::string& what, int code) {
  std::fprintf(stderr, "%s %s\n", rank_tag().c_str(), what.c_str());
  std::fflush(stderr);
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

void fatal_mpi(int rc, const char* call, const char* file, int line) {
  char msg[MPI_MAX_ERROR_STRING] = "";
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  abort_job(std::string("MPI error: ") + msg + ", " + call + ", " + file + ":" + std::to_string(line));
}

}  // namespace pb
