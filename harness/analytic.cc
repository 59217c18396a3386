/* The analytic model: the totals of the terms that every technique and block writes
 * beside its code (formulas in analytic.h). Written from the formulas, not by replaying
 * the implementation: the tests compare the two. */
#include "harness/analytic.h"

#include <algorithm>

#include "optimized/model/attention_block.h"
#include "optimized/model/dist_optimizer.h"
#include "optimized/model/end_blocks.h"
#include "optimized/model/mlp_block.h"
#include "optimized/model/strategies.h"
#include "optimized/train/pp_terms.h"
#include "optimized/train/registry.h"
#include "reference/model/flops.h"

namespace pb::harness {

namespace {

// The case as the terms see it, for the ranks of pipeline rank pp_rank (terms.h).
Dims make_dims(const Case& c, const CaseSpec& spec, const Strategies& st, const pp::Schedule* sched, int pp_rank) {
  const auto& mc = c.model;
  Dims d;
  d.B = c.train.micro_batch_size, d.S = c.train.seq_length, d.N = d.B * d.S;
  d.H = mc.hidden_size, d.A = mc.num_attention_heads, d.G = mc.num_key_value_heads, d.D = mc.head_dim();
  d.F = mc.intermediate_size, d.V = mc.vocab_size, d.L = mc.num_hidden_layers;
  d.t = c.layout.tp, d.d = c.layout.dp, d.p = c.layout.pp, d.v = c.layout.vpp, d.c = c.layout.cp;
  d.a = d.A / d.t, d.g = d.G / d.t, d.f = d.F / d.t;
  d.Ns = st.tp_outer_rows(d.N, d.t);
  d.m = c.train.num_micro_batches, d.steps = c.train.steps, d.mb = d.m * d.steps;
  d.e = c.dtype == "bf16" ? 2 : 4;
  d.pp_rank = pp_rank;
  d.Lr = d.L / d.p;
  d.emb = !sched || sched->holds_first(pp_rank) ? 1 : 0;
  d.head = !sched || sched->holds_last(pp_rank) ? 1 : 0;
  d.params_local = (2 * d.Lr + d.head) * d.H +
                   ((d.emb + d.head) * d.V * d.H + d.Lr * (2 * d.H * d.H + 2 * d.H * d.G * d.D + 3 * d.H * d.F)) / d.t;
  (void)spec;
  return d;
}

// The peak of saved activations: per chunk A_c (its layers' blocks, the head on the last
// stage) and K_c (what a split backward's queued weight gradients keep), walked through
// the rank's schedule (pp_terms.h).
int64_t activations(const Dims& d, const Strategies& st, const pp::Schedule* sched) {
  const int64_t per_layer = attention_block_saved_bytes(d) + st.attention_core_saved(d) + mlp_block_saved_bytes(d) +
                            st.mlp_saved(d);
  // The row linears' inputs o and s; the column inputs a and m where the TP strategy uses
  // them as they are (no gathered copy).
  const bool shared_inputs = d.Ns == d.N;
  const int64_t keep_layer = d.e * (d.N * d.a * d.D + d.N * d.f) + (shared_inputs ? d.e * 2 * d.N * d.H : 0);
  const int64_t Lc = d.L / (d.p * d.v);
  std::vector<int64_t> A, K;
  for (int ch = 0; ch < (sched ? sched->v : 1); ++ch) {
    const bool last = !sched || sched->stage(d.pp_rank, ch) == sched->stages() - 1;
    A.push_back(Lc * per_layer + (last ? head_saved_bytes(d) : 0));
    K.push_back(Lc * keep_layer + (last && shared_inputs ? d.e * d.N * d.H : 0));
  }
  return activation_peak(sched, d.pp_rank, A, K, d.e * d.Ns * d.H);
}

// Rows of one call size, summed over terms of the same (group, op, phase, size).
std::vector<CommRow> comm_rows(const Terms& t) {
  std::vector<CommRow> rows;
  for (const auto& term : t.comm) {
    auto it = std::find_if(rows.begin(), rows.end(), [&](const CommRow& r) {
      return r.group == term.group && r.op == term.op && r.phase == term.phase &&
             r.bytes_per_call() == term.bytes_per_call;
    });
    if (it == rows.end()) it = rows.insert(rows.end(), CommRow{term.group, term.op, term.phase});
    it->calls += term.calls;
    it->bytes += term.calls * term.bytes_per_call;
    it->bus_bytes += double(term.calls * term.bytes_per_call) * bus_factor(term.op, term.group_size);
  }
  return rows;
}

}  // namespace

Prediction predict(const Case& c, int pp_rank) {
  const Features f = parse_features(c.features);
  const CaseSpec spec{c.model, c.train, c.layout, f, c.schedule};
  const Strategies st = strategies_for(spec);
  const bool piped = c.layout.pp > 1;
  const pp::Schedule sched =
      piped ? pp::make_schedule(c.schedule, c.layout.pp, c.layout.vpp, int(c.train.num_micro_batches)) : pp::Schedule{};
  const Dims d = make_dims(c, spec, st, piped ? &sched : nullptr, pp_rank);

  Terms terms = technique_terms(spec, d);
  optimizer_terms(d, terms);
  Prediction pr;
  pr.params_total = ref::analytic_param_count(c.model);
  pr.params_local = d.params_local;
  pr.flops_per_step = ref::train_flops_per_token(c.model, d.S) * double(c.global_batch() * d.S);
  pr.memory = terms.memory;
  pr.memory[MemCategory::Activations] = activations(d, st, piped ? &sched : nullptr);
  pr.comm = comm_rows(terms);
  return pr;
}

}  // namespace pb::harness
