/* The dense SwiGLU MLP (see mlp.h). */
#include "optimized/model/block.h"
#include "optimized/model/mlp.h"

namespace pb {

namespace {
struct DenseSaved final : Mlp::Saved {
  Tensor m, g, u, s;  // (N_s, H) input; (N, F/TP) x 3
  std::vector<Tensor*> tensors() override { return {&m, &g, &u, &s}; }
};

std::string layer_name(int64_t l, const char* what) { return "model.layers." + std::to_string(l) + "." + what; }
}  // namespace

DenseSwiGlu::DenseSwiGlu(const BlockEnv& env, int64_t layer)
    : env_(env),
      wg_(&env.params.get(layer_name(layer, "mlp.gate_proj.weight"))),
      wu_(&env.params.get(layer_name(layer, "mlp.up_proj.weight"))),
      wd_(&env.params.get(layer_name(layer, "mlp.down_proj.weight"))) {}

std::unique_ptr<Mlp::Saved> DenseSwiGlu::forward(Tensor& f, const Tensor& m, BlockCtx&) {
  const auto& e = env_;
  auto s = std::make_unique<DenseSaved>();
  Weights W(e.provider, {wg_, wu_, wd_});
  s->m = m;
  s->g = e.act(e.N, e.F);
  s->u = e.act(e.N, e.F);
  e.tp.column_forward({&s->g, &s->u}, m, {&W[0], &W[1]});
  s->s = e.act(e.N, e.F);
  ops::swiglu_forward(s->s, s->g, s->u);
  f = e.work(e.Ns, e.H);
  e.tp.row_forward(f, s->s, W[2]);
  return s;
}

void DenseSwiGlu::backward(Tensor& dm, const Tensor& df, Saved& saved) {
  const auto& e = env_;
  auto& s = static_cast<DenseSaved&>(saved);
  Weights W(e.provider, {wg_, wu_, wd_});
  Tensor ds = e.work(e.N, e.F), dg = e.work(e.N, e.F), du = e.work(e.N, e.F);
  e.tp.row_backward(ds, wd_->g, df, s.s, W[2]);
  ops::swiglu_backward(dg, du, ds, s.g, s.u);
  e.tp.column_backward(dm, {&wg_->g, &wu_->g}, {&dg, &du}, s.m, {&W[0], &W[1]});
  s = DenseSaved{};
}

int64_t dense_mlp_saved_bytes(const Dims& d) { return 3 * d.e * d.N * d.f; }

}  // namespace pb
