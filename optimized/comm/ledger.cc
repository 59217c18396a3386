/* The communication ledger (see ledger.h). */
#include "optimized/comm/ledger.h"

namespace pb {

const char* phase_name(Phase p) {
  switch (p) {
    case Phase::Forward: return "forward";
    case Phase::Backward: return "backward";
    case Phase::Optimizer: return "optimizer";
  }
  return "?";
}

const char* comm_op_name(CommOp op) {
  switch (op) {
    case CommOp::AllReduce: return "all_reduce";
    case CommOp::AllGather: return "all_gather";
    case CommOp::ReduceScatter: return "reduce_scatter";
    case CommOp::AllToAll: return "all_to_all";
    case CommOp::Send: return "send";
    case CommOp::Recv: return "recv";
    case CommOp::Broadcast: return "broadcast";
    case CommOp::ToHost: return "to_host";
    case CommOp::ToDevice: return "to_device";
  }
  return "?";
}

double bus_factor(CommOp op, int n) {
  switch (op) {
    case CommOp::AllReduce: return 2.0 * (n - 1) / n;
    case CommOp::AllGather:
    case CommOp::ReduceScatter:
    case CommOp::AllToAll: return double(n - 1) / n;
    default: return 1.0;
  }
}

CommLedger& CommLedger::get() {
  static CommLedger l;
  return l;
}

void CommLedger::record(const std::string& group, CommOp op, int group_size, int64_t bytes) {
  auto& c = entries_[Key{group, op, phase_, bytes}];
  c.calls += 1;
  c.bytes += bytes;
  c.bus_bytes += double(bytes) * bus_factor(op, group_size);
}

CommCounter CommLedger::total(const std::string& group, CommOp op, Phase phase) const {
  CommCounter t;
  for (const auto& [key, c] : entries_)
    if (std::get<0>(key) == group && std::get<1>(key) == op && std::get<2>(key) == phase) {
      t.calls += c.calls;
      t.bytes += c.bytes;
      t.bus_bytes += c.bus_bytes;
    }
  return t;
}

}  // namespace pb
