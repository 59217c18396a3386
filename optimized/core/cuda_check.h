/* CUDA_CHECK, CUBLAS_CHECK, NCCL_CHECK: on failure print
 * "[rank r/w host] CUDA error: <string>, <call>, file:line" and abort the job
 * (DESIGN.md, Errors). Only included by CUDA-enabled translation units. */
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "optimized/core/fatal.h"

#define CUDA_CHECK(call)                                                                              \
  do {                                                                                                \
    const cudaError_t pb_e_ = (call);                                                                 \
    if (pb_e_ != cudaSuccess)                                                                         \
      ::pb::abort_job(std::string("CUDA error: ") + cudaGetErrorString(pb_e_) + ", " #call ", " __FILE__ ":" + \
                      std::to_string(__LINE__));                                                      \
  } while (0)

// After every kernel launch.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

#define CUBLAS_CHECK(call)                                                                      \
  do {                                                                                          \
    const int pb_s_ = int(call);                                                                \
    if (pb_s_ != 0)                                                                             \
      ::pb::abort_job(std::string("cuBLAS error ") + std::to_string(pb_s_) + ", " #call ", " __FILE__ ":" + \
                      std::to_string(__LINE__));                                                \
  } while (0)
