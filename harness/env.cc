/* Environment capture for results files (see env.h). */
#include "harness/env.h"

#include "optimized/comm/nccl_communicator.h"
#include "optimized/core/device.h"
#include "optimized/kernels/cpu/sgemm.h"

#include <mpi.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

namespace pb::harness {

using nlohmann::json;

static std::string first_line_of_command(const std::string& cmd) {
  std::array<char, 512> buf{};
  std::string out;
  if (FILE* f = popen(cmd.c_str(), "r")) {
    if (fgets(buf.data(), int(buf.size()), f)) out = buf.data();
    pclose(f);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

nlohmann::json environment(int world_size) {
  char host[256] = "?";
  gethostname(host, sizeof(host) - 1);
  std::string cpu = "unknown";
  std::ifstream info("/proc/cpuinfo");
  for (std::string line; std::getline(info, line);)
    if (line.rfind("model name", 0) == 0) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  std::string sha = first_line_of_command("git -C '" PB_SOURCE_DIR "' rev-parse HEAD 2>/dev/null");
  if (sha.empty()) sha = "unknown";
  char lib[MPI_MAX_LIBRARY_VERSION_STRING] = "";
  int len = 0, major = 0, minor = 0;
  MPI_Get_library_version(lib, &len);
  MPI_Get_version(&major, &minor);
  std::string mpi_lib(lib);  // len may count the terminating NUL
  mpi_lib = mpi_lib.substr(0, mpi_lib.find('\n'));
#if defined(__clang__)
  const std::string compiler = "Clang " __clang_version__;
#elif defined(__GNUC__)
  const std::string compiler = "GCC " __VERSION__;
#else
  const std::string compiler = "unknown";
#endif
  return {{"git_sha", sha},
          {"host", host},
          {"cpu_model", cpu},
          {"cores", std::thread::hardware_concurrency()},
          {"cpu_gemm", cpu::sgemm_backend()},
          {"compiler", compiler},
          {"build_type", PB_BUILD_TYPE},
          {"mpi_library", mpi_lib},
          {"mpi_version", std::to_string(major) + "." + std::to_string(minor)},
          {"world_size", world_size},
          {"cuda_version", cuda_built() ? json(cuda_versions()) : json(nullptr)},
          {"nccl_version", nccl_built() ? json(nccl_version()) : json(nullptr)},
          {"gpu", cuda_device_count() > 0 ? json(cuda_device_name()) : json(nullptr)}};
}

}  // namespace pb::harness
