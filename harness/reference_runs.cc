/* The reference and baseline runs of a case (see reference_runs.h). */
#include "harness/reference_runs.h"

#include "reference/model/params.h"
#include "reference/model/train.h"

namespace pb::harness {

namespace {

template <class T>
RefRun run_reference(const Case& c) {
  RefRun r;
  ref::Trainer<T> tr(c.model, c.reference_train(), ref::init_params<T>(c.model, c.train.seed));
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
