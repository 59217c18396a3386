/* Communication accounting: every call of every Communicator is recorded per
 * (group, op, phase, bytes per call) with calls, payload bytes and bus bytes, so that a
 * row is one call size: a 126 KiB gradient all-reduce and an 8-byte loss all-reduce of
 * the same group and phase are two rows, never one average.
 *
 * Payload bytes are nccl-tests' "size": all_reduce the buffer, all_gather the gathered
 * output, reduce_scatter the full input, all_to_all the send buffer, send/recv/broadcast
 * the message. Bus bytes = payload x factor (nccl-tests' busBw, PERFORMANCE.md):
 * all_reduce 2(n-1)/n; all_gather, reduce_scatter, all_to_all (n-1)/n; others 1.
 * Calls on a group of size 1 short-circuit and are not recorded.
 */
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <tuple>

namespace pb {

enum class Phase { Forward, Backward, Optimizer };
// ToHost / ToDevice: copies between device and host memory (swap, offload), recorded in the
// group "host" (the link between the two, size 2), factor 1.
enum class CommOp { AllReduce, AllGather, ReduceScatter, AllToAll, Send, Recv, Broadcast, ToHost, ToDevice };
const char* phase_name(Phase p);
const char* comm_op_name(CommOp op);
double bus_factor(CommOp op, int n);

struct CommCounter {
  int64_t calls = 0;
  int64_t bytes = 0;
  double bus_bytes = 0;
};

class CommLedger {
 public:
  static CommLedger& get();  // one per process
  using Key = std::tuple<std::string, CommOp, Phase, int64_t>;  // group, op, phase, bytes per call
  void record(const std::string& group, CommOp op, int group_size, int64_t bytes);
  const std::map<Key, CommCounter>& entries() const { return entries_; }
  // Every call size of (group, op, phase) together.
  CommCounter total(const std::string& group, CommOp op, Phase phase) const;
  void clear() { entries_.clear(); }
  Phase phase() const { return phase_; }
  void set_phase(Phase p) { phase_ = p; }

 private:
  std::map<Key, CommCounter> entries_;
  Phase phase_ = Phase::Forward;
};

// Sets the ledger's phase for a scope.
class PhaseScope {
 public:
  explicit PhaseScope(Phase p) : prev_(CommLedger::get().phase()) { CommLedger::get().set_phase(p); }
  ~PhaseScope() { CommLedger::get().set_phase(prev_); }

 private:
  Phase prev_;
};

}  // namespace pb
