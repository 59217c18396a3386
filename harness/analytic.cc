/* The analytic model (formulas in analytic.h). Written from the formulas, not by
 * replaying the implementation: the tests compare the two. */
#include "harness/analytic.h"

#include "reference/model/flops.h"

namespace pb::harness {

Prediction predict(const Case& c) {
  const auto& mc = c.model;
  const int64_t H = mc.hidden_size, A = mc.num_attention_heads, G = mc.num_key_value_heads, D = mc.head_dim();
  const int64_t F = mc.intermediate_size, V = mc.vocab_size, L = mc.num_hidden_layers;
  const int64_t t = c.layout.tp, d = c.layout.dp, m = c.train.num_micro_batches, steps = c.train.steps;
  const int64_t B = c.train.micro_batch_size, S = c.train.seq_length, N = B * S;
  bool sp = false;
  for (const auto& f : c.features) sp = sp || f == "sp";
  const int64_t Ns = sp ? N / t : N;
  constexpr int64_t fp = 4;                      // fp32: grads, master, Adam state, statistics
  const int64_t e = c.dtype == "bf16" ? 2 : 4;   // weights, activations and their gradients

  Prediction p;
  p.params_total = ref::analytic_param_count(mc);
  p.params_local = (2 * L + 1) * H + (2 * V * H + L * (2 * H * H + 2 * H * G * D + 3 * H * F)) / t;
  p.flops_per_step = ref::train_flops_per_token(mc, S) * double(c.global_batch() * S);
  p.memory[MemCategory::Params] = e * p.params_local;
  p.memory[MemCategory::Grads] = fp * p.params_local;
  p.memory[MemCategory::Optimizer] = (e == fp ? 2 : 3) * fp * p.params_local;  // (+ fp32 master) + m + v
  const int64_t a = A / t, g = G / t, f = F / t;
  p.memory[MemCategory::Activations] =
      e * (L * (4 * Ns * H + N * (2 * a + 2 * g) * D + 3 * N * f) + 2 * Ns * H + N * V / t) +
      fp * (L * (2 * Ns + B * a * S) + Ns + 2 * N);

  auto add = [&](const char* group, CommOp op, Phase ph, int64_t calls, int64_t bytes) {
    if (calls > 0) p.comm.push_back({group, op, ph, calls, bytes});
  };
  const int64_t mb = m * steps;  // micro-batches in the run
  if (t > 1) {
    const int64_t NH = e * N * H;
    if (!sp) {
      add("tp", CommOp::AllReduce, Phase::Forward, mb * (1 + 2 * L + 3), mb * ((1 + 2 * L) * NH + 3 * fp * N));
      add("tp", CommOp::AllReduce, Phase::Backward, mb * (1 + 2 * L), mb * (1 + 2 * L) * NH);
    } else {
      add("tp", CommOp::ReduceScatter, Phase::Forward, mb * (1 + 2 * L), mb * (1 + 2 * L) * NH);
      add("tp", CommOp::AllGather, Phase::Forward, mb * (2 * L + 1), mb * (2 * L + 1) * NH);
      add("tp", CommOp::AllReduce, Phase::Forward, mb * 3, mb * 3 * fp * N);
      add("tp", CommOp::ReduceScatter, Phase::Backward, mb * (1 + 2 * L), mb * (1 + 2 * L) * NH);
      add("tp", CommOp::AllGather, Phase::Backward, mb * (4 * L + 2), mb * (4 * L + 2) * NH);
      add("tp", CommOp::AllReduce, Phase::Optimizer, steps, steps * fp * (2 * L + 1) * H);
    }
  }
  if (t * c.layout.pp > 1) add("mp", CommOp::AllReduce, Phase::Optimizer, steps, steps * 8);
  if (d > 1) add("dp", CommOp::AllReduce, Phase::Optimizer, 2 * steps, steps * (fp * p.params_local + 8));
  return p;
}

}  // namespace pb::harness
