/* `parabench collectives`: the communication layer measured on its own, after NVIDIA's
 * nccl-tests (github.com/NVIDIA/nccl-tests; its PERFORMANCE.md defines algbw and busbw).
 *
 *   mpiexec -n N parabench collectives [-b 8] [-e 32M] [-f 2] [-w 2] [-n 10] [-d float|bf16]
 *                                      [-o sum] [--ops all_reduce,...] [--backend cpu|cuda]
 *                                      [--json FILE]
 *
 * For each op (all_reduce, all_gather, reduce_scatter, all_to_all, broadcast, send_recv)
 * and each size from -b to -e (times -f; K, M, G = 2^10, 2^20, 2^30 bytes), through the
 * project's Communicator (MPI on the CPU backend, NCCL on CUDA when built):
 *   size   the op's payload as nccl-tests counts it and our ledger does: all_reduce and
 *          broadcast the buffer, all_gather the gathered output, reduce_scatter the whole
 *          input, all_to_all the send buffer, send_recv the message (rounded down to a
 *          multiple of N elements where the op splits it over the ranks)
 *   time   the mean over the -n timed iterations (after -w warm-up ones, each iteration
 *          started together after a barrier and ended once its result is on the rank),
 *          averaged over the ranks (nccl-tests' default -a 1)
 *   algbw  size / time;  busbw = algbw x the op's factor: all_reduce 2(N-1)/N; all_gather,
 *          reduce_scatter, all_to_all (N-1)/N; broadcast and send_recv (a ring: to r+1,
 *          from r-1) 1
 *   #wrong the elements that differ from the exact result, over every timed iteration and
 *          every rank: each iteration's inputs are small integers, v(r, i) = (7r + i) mod 5
 *          - 2, whose sums are exact in fp32 and bf16, refilled before it
 * Rank 0 prints one table per op and writes the JSON (schema "parabench-collectives-1": the
 * environment and one row per op and size). Exit 0, or 1 if any #wrong is non-zero; bad
 * input is one line and exit 2. --inject-corruption (tests only) adds 1 to rank 0's first
 * input element before every timed iteration.
 */
#pragma once

#include <string>

namespace CLI {
class App;
}

namespace pb::harness {

struct CollectivesArgs {
  std::string min_bytes = "8", max_bytes = "32M";
  double factor = 2;
  int warmup = 2, iters = 10;
  std::string dtype = "float", redop = "sum";
  std::string ops = "all_reduce,all_gather,reduce_scatter,all_to_all,broadcast,send_recv";
  std::string backend = "cpu";
  std::string json;
  bool inject_corruption = false;
};

CLI::App* add_collectives_command(CLI::App& app, CollectivesArgs& args);

// Checks the arguments (pb::Error, one line) before MPI starts.
void check_collectives_args(const CollectivesArgs& args);

// Under MPI (MPI_COMM_WORLD): runs the sweep; returns the exit code.
int cmd_collectives(const CollectivesArgs& args);

// "8", "64K", "128M", "1G" -> bytes (pb::Error on anything else).
int64_t parse_bytes(const std::string& text, const char* what);

}  // namespace pb::harness
