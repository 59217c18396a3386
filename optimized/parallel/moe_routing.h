/* MoE routing on the host: the plan of one micro-batch through one MoE layer on this rank,
 * and the log of every plan of a run (routing statistics, and the dispatcher terms, which
 * depend on the actual counts).
 *
 * Plan (Megatron-LM's router, arXiv 1701.06538 top-K gating): the router op gives the
 * top-K experts idx (T*K) and the combine weights w (T*K) of this rank's T tokens. With a
 * capacity factor cf (Megatron's moe_expert_capacity_factor, Switch Transformer arXiv
 * 2101.03961) each expert takes at most
 *   cap = ceil(T * K / E * cf)
 * of this rank's copies (Megatron drops locally): those with the largest w, ties to the
 * lower token, then the lower k; the others are dropped (no expert sees them, they add
 * nothing to the output and get no gradient; the kept weights are not renormalized).
 * The load-balancing loss counts the copies before dropping (count), as Megatron's.
 */
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

namespace pb {

struct RoutingPlan {
  int64_t T = 0, E = 0, K = 0;
  std::vector<int64_t> idx;         // (T*K) expert of each copy, best first
  std::vector<float> weight;        // (T*K) its combine weight
  std::vector<char> kept;           // (T*K) 0 where the capacity dropped it
  std::vector<int64_t> count;       // (E) copies per expert before dropping
  std::vector<int64_t> kept_count;  // (E) after
  int64_t dropped = 0;
};
RoutingPlan plan_routing(std::vector<int64_t> idx, std::vector<float> weight, int64_t T, int64_t E, int64_t K,
                         std::optional<double> capacity_factor);
int64_t expert_capacity(int64_t T, int64_t E, int64_t K, double capacity_factor);

// One micro-batch through one MoE layer on this rank.
struct RoutingRecord {
  int64_t step = 0, mb = 0, layer = 0;
  int64_t tokens = 0;               // T: this rank's tokens
  std::vector<int64_t> sent;        // (E) kept copies this rank routed to each expert
  std::vector<int64_t> recv;        // (EP x E/EP) rows this rank's experts got from each EP rank
  int64_t dropped = 0;
  int64_t sent_total() const;
  int64_t recv_total() const;
};

// Every record of the run on this rank, in order (one process, like the CommLedger).
class RoutingLog {
 public:
  static RoutingLog& get();
  void clear() { records_.clear(), seen_.clear(); }
  void set_step(int64_t s) { step_ = s; }
  // A new record of the current step; its micro-batch is the count of the step's earlier
  // records of the layer (a rank runs a layer's forwards in micro-batch order, pipelined
  // or not).
  RoutingRecord& add(int64_t layer);
  const std::vector<RoutingRecord>& records() const { return records_; }

 private:
  std::vector<RoutingRecord> records_;
  std::map<std::pair<int64_t, int64_t>, int64_t> seen_;  // (step, layer) -> records so far
  int64_t step_ = 0;
};

}  // namespace pb
