/* The distributed run and the gather of its tensors (see dist_run.h). */
#include "harness/dist_run.h"

#include <cstdio>
#include <cstdlib>

#include "optimized/comm/nccl_communicator.h"
#include "optimized/comm/nccl_select.h"
#include "optimized/core/allocator.h"
#include "optimized/core/fatal.h"
#include "optimized/model/dist_params.h"
#include "optimized/train/registry.h"
#include "reference/model/params.h"

namespace pb::harness {

namespace {

// The reference's parameter names, in its order.
std::vector<std::string> param_names(const ref::ModelConfig& mc) {
  std::vector<std::string> names;
  const ref::ModelParams<float> shapes = ref::zero_params<float>(mc);
  ref::for_each_param(shapes, [&](const std::string& n, const ref::Mat<float>&, bool) { names.push_back(n); });
  return names;
}

// Every named parameter's gradient or master weights, reassembled on rank 0 (empty elsewhere).
TensorsByName gather_tensors(const std::vector<std::string>& names, DistParams& params, ParamPart part,
                             ProcessGrid& grid, MPI_Comm comm) {
  TensorsByName out;
  for (const auto& name : names) {
    const std::vector<float> v = params.gather_global(name, part, grid, comm);
    out[name] = std::vector<double>(v.begin(), v.end());
  }
  return out;
}

}  // namespace

Device case_device(const Case& c) { return c.backend == "cuda" ? Device::CUDA : Device::CPU; }

bool select_device(MPI_Comm comm) {
  int rank = 0, local = 0, local_size = 1;  // the rank among the ranks of this node picks the GPU
  MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MPI_Comm node;
  MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node));
  MPI_CHECK(MPI_Comm_rank(node, &local));
  MPI_CHECK(MPI_Comm_size(node, &local_size));
  MPI_CHECK(MPI_Comm_free(&node));
  cuda_select_device(local);
  TrackingAllocator::device().reset_peaks();
  // NCCL refuses two ranks on one GPU: with more ranks than GPUs on a node, MPI (staged);
  // PB_NO_NCCL forces MPI (optimized/comm/nccl_select.h). One rank's "no" is everyone's.
  const NcclChoice choice = choose_nccl(nccl_built(), std::getenv("PB_NO_NCCL"), local_size, cuda_device_count());
  int ok = choice.use ? 1 : 0;
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, comm));
  std::string why = choice.use ? "backend cuda: another node cannot use NCCL: collectives go through MPI" : choice.why;
  if (ok) {  // NCCL once over all ranks: a failing setup falls back to MPI instead of aborting
    std::string error;
    ok = nccl_probe(comm, &error) ? 1 : 0;
    if (!ok) why = nccl_fallback_line(error);
  }
  static bool said = false;  // one line per process, on rank 0
  if (!ok && !said && rank == 0) std::fprintf(stderr, "%s\n", why.c_str());
  said = said || !ok;
  return ok == 1;
}

TrainStepConfig train_config(const Case& c, Device dev, bool nccl, const RunOptions& opt) {
  TrainStepConfig t;
  t.model = c.model;
  t.train = c.train;
  t.layout = c.layout;
  t.features = c.typed_features();
  t.schedule = c.schedule;
  t.dtype = c.dtype == "bf16" ? DType::BF16 : DType::F32;
  t.device = dev;
  t.nccl = nccl;
  t.inject_failure_rank = opt.inject_failure_rank;
  t.inject_delay_s = opt.inject_delay_s;
  return t;
}

DistRun run_distributed(const Case& c, MPI_Comm comm, Device dev, bool nccl, const RunOptions& opt) {
  const std::vector<std::string> names = param_names(c.model);
  DistRun r;
  auto gather = [&](int64_t step, DistParams& params, ProcessGrid& grid) {
    if (step == 0) r.grads1 = gather_tensors(names, params, ParamPart::Grad, grid, comm);
    if (step + 1 == c.train.steps) r.final = gather_tensors(names, params, ParamPart::Master, grid, comm);
  };
  r.train = train_distributed(train_config(c, dev, nccl, opt), comm, gather);
  return r;
}

}  // namespace pb::harness
