/* Gradient sync, global norm and AdamW of the distributed model (see dist_optimizer.h). */
#include "optimized/model/dist_optimizer.h"

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

#include "optimized/kernels/ops.h"
#include "optimized/parallel/dp_grad_sync.h"
#include "reference/common/error.h"

namespace pb {

double DistOptimizer::step() {
  PhaseScope phase(Phase::Optimizer);
  DistParams& P = model_.params();
  if (model_.tp_linear().replicated_grads_partial()) {  // SP: each rank saw N/TP rows
    Tensor norms = P.replicated_grads();
    grid_.tp().all_reduce(norms);
  }
  dp_all_reduce_mean(P.grad_buffer(), grad_group());  // over DP, or DP x CP
  // The squared global norm in one op over the contiguous gradient buffer: its segments
  // are the gradients in P.all() order, without the replicated norm weights (the leading
  // block) except on tp rank 0, so that they count once across TP. On the CPU bitwise the
  // per-tensor loop `sq += sum_squares(p.g)`.
  const int64_t skip = grid_.tp_rank() == 0 ? 0 : P.replicated_numel();
  const Tensor grads = P.grad_buffer().view(skip, {P.grad_buffer().numel() - skip});
  std::vector<int64_t> ends;
  for (const auto& p : P.all()) {
    if (p.is_norm && skip) continue;
    const int64_t start = (static_cast<const char*>(p.g.raw()) - static_cast<const char*>(grads.raw())) / 4;
    PB_REQUIRE(start == (ends.empty() ? 0 : ends.back()), "gradient norm: ", p.name, " is not next in the buffer");
    ends.push_back(start + p.g.numel());
  }
  const double sq = ops::sum_squares_segments(grads, ends);
  const double norm = std::sqrt(grid_.mp().all_reduce_scalar(sq));
  const float clip = float(tc_.clip_grad > 0 ? std::min(1.0, tc_.clip_grad / (norm + 1e-6)) : 1.0);
  t_ += 1;
  ops::AdamHyper h{float(tc_.lr), float(tc_.beta1), float(tc_.beta2), float(tc_.adam_eps), 0.0f,
                   1.0f - float(std::pow(tc_.beta1, double(t_))), 1.0f - float(std::pow(tc_.beta2, double(t_))), clip};
  // Two launches cover every tensor: the leading block of replicated norm weights (no
  // weight decay), then all the matrices (element-wise, so identical to per-tensor steps).
  const int64_t rep = P.replicated_numel(), total = P.weight_buffer().numel();
  auto block = [](Tensor& t, int64_t off, int64_t n) { return t.view(off, {n}); };
  for (auto [off, n, decay] : {std::tuple{int64_t(0), rep, 0.0f}, {rep, total - rep, float(tc_.weight_decay)}}) {
    if (n == 0) continue;
    h.weight_decay = decay;
    Tensor w = block(P.master_buffer(), off, n), g = block(P.grad_buffer(), off, n);
    Tensor m = block(P.adam_m_buffer(), off, n), v = block(P.adam_v_buffer(), off, n);
    ops::adamw(w, g, m, v, h);
  }
  P.master_to_weights();
  return norm;
}

double DistOptimizer::average_loss(double local_mean) {
  PhaseScope phase(Phase::Optimizer);
  Communicator& g = grad_group();  // CP ranks hold equal shares of the sequence
  return g.all_reduce_scalar(local_mean) / g.size();
}

void optimizer_terms(const Dims& d, Terms& t) {
  t.call("mp", CommOp::AllReduce, Phase::Optimizer, d.steps, 8, d.t * d.p);
  t.memory[MemCategory::Params] += d.e * d.params_local;
  t.memory[MemCategory::Grads] += Dims::fp * d.params_local;
  t.memory[MemCategory::Optimizer] += (d.e == Dims::fp ? 2 : 3) * Dims::fp * d.params_local;  // (+ master) + m + v
}

}  // namespace pb
