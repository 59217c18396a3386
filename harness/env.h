/* The environment block of a results file: git sha, host, CPU, compiler, MPI, CUDA. */
#pragma once

#include <nlohmann/json.hpp>

namespace pb::harness {

nlohmann::json environment(int world_size);

}  // namespace pb::harness
