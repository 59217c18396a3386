/* Small helpers for the tests that run under mpiexec. */
#pragma once

#include <mpi.h>

#include <vector>

namespace pb::test {

inline int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

inline int world_size() {
  int s = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}

// The cases whose layout needs exactly `world` ranks (each test runs under 1, 2 and 4).
template <class Case>
std::vector<Case> cases_of_world(const std::vector<Case>& all, int world) {
  std::vector<Case> out;
  for (const auto& c : all)
    if (c.layout.world() == world) out.push_back(c);
  return out;
}

}  // namespace pb::test
