/* The analytic model (formulas in analytic.h). Written from the formulas, not by
 * replaying the implementation: the tests compare the two. */
#include "harness/analytic.h"

#include <algorithm>
#include <set>

#include "optimized/parallel/pp_schedule.h"
#include "reference/model/flops.h"

namespace pb::harness {

namespace {

// The peak of saved activations on pipeline rank r, walking its schedule (analytic.h).
int64_t pipeline_activation_peak(const pp::Schedule& s, int r, const std::vector<int64_t>& A,
                                 const std::vector<int64_t>& K, int64_t xb) {
  int64_t held = 0, peak = 0;
  std::set<std::pair<int, int>> received;
  const auto& acts = s.ranks[size_t(r)];
  for (size_t i = 0; i < acts.size(); ++i) {
    const pp::Action a = acts[i];
    const int c = a.chunk;
    const bool last = s.stage(r, c) == s.stages() - 1;
    switch (a.op) {
      case pp::Op::RecvF:
        held += xb;
        received.insert({a.mb, c});
        break;
      case pp::Op::F: {
        held += A[size_t(c)] - (received.erase({a.mb, c}) ? xb : 0) + (last ? 0 : xb);
        const int st = s.stage(r, c);
        if (!last && s.local_boundary(st)) received.insert({a.mb, s.chunk_of(st + 1)});  // handed over, not sent
        break;
      }
      case pp::Op::B:
        held -= s.split_backward ? A[size_t(c)] - K[size_t(c)] : A[size_t(c)];
        break;
      case pp::Op::W:
        held -= K[size_t(c)];
        break;
      default:
        break;
    }
    peak = std::max(peak, held);
    // The end of a communication batch: sent outputs are freed.
    const bool batch_end = !pp::is_compute(a.op) && (i + 1 == acts.size() || pp::is_compute(acts[i + 1].op));
    if (batch_end) {
      for (size_t j = i + 1; j-- > 0 && !pp::is_compute(acts[j].op);)
        if (acts[j].op == pp::Op::SendF) held -= xb;  // the output, kept until its batch completes
    }
  }
  return peak;
}

}  // namespace

Prediction predict(const Case& c, int pp_rank) {
  const auto& mc = c.model;
  const int64_t H = mc.hidden_size, A = mc.num_attention_heads, G = mc.num_key_value_heads, D = mc.head_dim();
  const int64_t F = mc.intermediate_size, V = mc.vocab_size, L = mc.num_hidden_layers;
  const int64_t t = c.layout.tp, d = c.layout.dp, m = c.train.num_micro_batches, steps = c.train.steps;
  const int64_t p = c.layout.pp, v = c.layout.vpp;
  const int64_t B = c.train.micro_batch_size, S = c.train.seq_length, N = B * S;
  bool sp = false;
  for (const auto& f : c.features) sp = sp || f == "sp";
  const int64_t Ns = sp ? N / t : N;
  constexpr int64_t fp = 4;                      // fp32: grads, master, Adam state, statistics
  const int64_t e = c.dtype == "bf16" ? 2 : 4;   // weights, activations and their gradients
  const int64_t Lr = L / p;                      // layers on this pipeline rank
  const pp::Schedule sched = p > 1 ? pp::make_schedule(c.schedule, int(p), int(v), int(m)) : pp::Schedule{};
  const int64_t emb = pp_rank == 0 ? 1 : 0;      // stage 0 is on pipeline rank 0 in every placement
  const int64_t head = p == 1 || sched.rank_of(int(p * v - 1)) == pp_rank ? 1 : 0;

  Prediction pr;
  pr.params_total = ref::analytic_param_count(mc);
  pr.params_local = (2 * Lr + head) * H + ((emb + head) * V * H + Lr * (2 * H * H + 2 * H * G * D + 3 * H * F)) / t;
  pr.flops_per_step = ref::train_flops_per_token(mc, S) * double(c.global_batch() * S);
  pr.memory[MemCategory::Params] = e * pr.params_local;
  pr.memory[MemCategory::Grads] = fp * pr.params_local;
  pr.memory[MemCategory::Optimizer] = (e == fp ? 2 : 3) * fp * pr.params_local;  // (+ fp32 master) + m + v
  const int64_t a = A / t, g = G / t, f = F / t;
  const int64_t per_layer = e * (4 * Ns * H + N * (2 * a + 2 * g) * D + 3 * N * f) + fp * (2 * Ns + B * a * S);
  const int64_t head_acts = e * (2 * Ns * H + N * V / t) + fp * (Ns + 2 * N);
  if (p == 1) {
    pr.memory[MemCategory::Activations] = L * per_layer + head_acts;
  } else {
    const int64_t Lc = L / (p * v);
    const int64_t keep_layer = e * (N * a * D + N * f) + (sp ? 0 : e * 2 * N * H);
    std::vector<int64_t> Ac, Kc;
    for (int64_t ch = 0; ch < v; ++ch) {
      const bool last = sched.stage(pp_rank, int(ch)) == p * v - 1;
      Ac.push_back(Lc * per_layer + (last ? head_acts : 0));
      Kc.push_back(Lc * keep_layer + (last && !sp ? e * N * H : 0));
    }
    pr.memory[MemCategory::Activations] = pipeline_activation_peak(sched, pp_rank, Ac, Kc, e * Ns * H);
  }

  auto add = [&](const char* group, CommOp op, Phase ph, int64_t calls, int64_t bytes) {
    if (calls > 0) pr.comm.push_back({group, op, ph, calls, bytes});
  };
  const int64_t mb = m * steps;  // micro-batches in the run
  if (t > 1) {
    const int64_t NH = e * N * H;
    if (!sp) {
      add("tp", CommOp::AllReduce, Phase::Forward, mb * (emb + 2 * Lr + 3 * head),
          mb * ((emb + 2 * Lr) * NH + 3 * head * fp * N));
      add("tp", CommOp::AllReduce, Phase::Backward, mb * (2 * Lr + head), mb * (2 * Lr + head) * NH);
    } else {
      add("tp", CommOp::ReduceScatter, Phase::Forward, mb * (emb + 2 * Lr), mb * (emb + 2 * Lr) * NH);
      add("tp", CommOp::AllGather, Phase::Forward, mb * (2 * Lr + head), mb * (2 * Lr + head) * NH);
      add("tp", CommOp::AllReduce, Phase::Forward, mb * 3 * head, mb * 3 * head * fp * N);
      add("tp", CommOp::ReduceScatter, Phase::Backward, mb * (2 * Lr + head), mb * (2 * Lr + head) * NH);
      add("tp", CommOp::AllGather, Phase::Backward, mb * (4 * Lr + head + emb), mb * (4 * Lr + head + emb) * NH);
      add("tp", CommOp::AllReduce, Phase::Optimizer, steps, steps * fp * (2 * Lr + head) * H);
    }
  }
  if (p > 1) {
    int64_t first = 0, rest = 0;  // chunks with a previous stage, and with a next one
    for (int64_t ch = 0; ch < v; ++ch) {  // boundaries that stay on this rank move nothing
      const int s = sched.stage(pp_rank, int(ch));
      first += s > 0 && !sched.local_boundary(s - 1) ? 1 : 0;
      rest += s < p * v - 1 && !sched.local_boundary(s) ? 1 : 0;
    }
    const int64_t xb = e * Ns * H;
    add("pp", CommOp::Recv, Phase::Forward, mb * first, mb * first * xb);
    add("pp", CommOp::Send, Phase::Forward, mb * rest, mb * rest * xb);
    add("pp", CommOp::Recv, Phase::Backward, mb * rest, mb * rest * xb);
    add("pp", CommOp::Send, Phase::Backward, mb * first, mb * first * xb);
    add("pp", CommOp::AllReduce, Phase::Optimizer, steps, steps * 8);
  }
  if (t * p > 1) add("mp", CommOp::AllReduce, Phase::Optimizer, steps, steps * 8);
  if (d > 1) add("dp", CommOp::AllReduce, Phase::Optimizer, 2 * steps, steps * (fp * pr.params_local + 8));
  return pr;
}

}  // namespace pb::harness
