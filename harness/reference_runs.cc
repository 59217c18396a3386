/* The reference and baseline runs of a case (see reference_runs.h). */
#include "harness/reference_runs.h"

#include "optimized/train/registry.h"
#include "reference/model/async_pipeline.h"
#include "reference/model/params.h"
#include "reference/model/train.h"

namespace pb::harness {

namespace {

// The reference's trainer: the synchronous one, or for an asynchronous pipeline schedule
// its single-process emulation (reference/model/async_pipeline.h) over the case's stages.
template <class T, class Trainer>
RefRun run_reference(const Case& c, Trainer& tr) {
  RefRun r;
  auto grab = [&](const ref::ModelParams<T>& p, TensorsByName& dst, bool names) {
    ref::for_each_param(p, [&](const std::string& name, const ref::Mat<T>& m, bool) {
      dst[name] = std::vector<double>(m.data(), m.data() + m.size());
      if (names) r.names.push_back(name);
    });
  };
  for (int64_t s = 0; s < c.train.steps; ++s) {
    const ref::StepRecord rec = tr.step();
    r.losses.push_back(rec.loss);
    r.grad_norms.push_back(rec.grad_norm);
    if (s == 0) grab(tr.last_grads(), r.grads1, true);
  }
  grab(tr.params(), r.final, false);
  return r;
}

template <class T>
RefRun run_reference(const Case& c) {
  const Features f = c.typed_features();
  const CaseSpec spec{c.model, c.train, c.layout, f, c.schedule};
  if (c.layout.pp > 1 && pp::async_kind(c.schedule)) {
    const pp::Schedule s = schedule_for(spec);
    ref::AsyncPipelineConfig cfg;
    for (int st = 0; st < s.p; ++st) cfg.bounds.push_back(s.layers(c.model.num_hidden_layers, st).first);
    cfg.bounds.push_back(c.model.num_hidden_layers);
    cfg.update_every = s.update_every;
    cfg.dp = c.layout.dp;
    ref::AsyncPipelineTrainer<T> tr(c.model, c.reference_train(), ref::init_params<T>(c.model, c.train.seed), cfg);
    return run_reference<T>(c, tr);
  }
  ref::Trainer<T> tr(c.model, c.reference_train(), ref::init_params<T>(c.model, c.train.seed));
  return run_reference<T>(c, tr);
}

// The case in its dtype on one rank, through the distributed code (alone on this process).
RefRun one_rank_run(const Case& c, Device dev) {
  const DistRun d = run_distributed(c.one_rank(), MPI_COMM_SELF, dev, false, RunOptions{});
  RefRun r;
  r.losses = d.train.losses;
  r.grad_norms = d.train.grad_norms;
  r.grads1 = d.grads1;
  r.final = d.final;
  return r;
}

}  // namespace

References run_references(const Case& c, Device dev) {
  References r;
  r.ref32 = run_reference<float>(c);
  r.base = c.dtype == "bf16" ? one_rank_run(c, dev) : run_reference<double>(c);
  return r;
}

}  // namespace pb::harness
