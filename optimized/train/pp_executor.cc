/* The pipeline executor (see pp_executor.h). */
#include "optimized/train/pp_executor.h"

#include <map>
#include <utility>

#include "optimized/core/device.h"
#include "optimized/train/pp_async.h"
#include "reference/common/error.h"

namespace pb {

namespace {
using Key = std::pair<int, int>;  // (micro-batch, local chunk)
// Moves the tensor of `from` into dst: a stage boundary that stays on this rank.
void take(std::map<Key, Tensor>& m, const Key& from, Tensor& dst) {
  const auto it = m.find(from);
  PB_REQUIRE(it != m.end(), "pipeline: micro-batch ", from.first, " has no output of chunk ", from.second,
             " to hand over on this rank");
  dst = it->second;
  m.erase(it);
}

double us_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

PipelineStep run_pipeline(const pp::Schedule& s, DistModel& model, ProcessGrid& grid,
                          const std::function<ref::Batch(int mb)>& batch_of,
                          std::chrono::steady_clock::time_point t0, WeightVersions* versions) {
  PB_REQUIRE(s.p == grid.layout().pp && s.v == model.chunks(), "pipeline: a schedule for pp ", s.p, " vpp ", s.v,
             " on a pp ", grid.layout().pp, " x ", model.chunks(), "-chunk model");
  const int S = s.stages();
  PB_REQUIRE(int64_t(s.m) * S * 2 < 32767, "pipeline: ", s.m, " micro-batches x ", S, " stages exceed the MPI tags");
  PB_REQUIRE((versions != nullptr) == (s.update_every > 0), "pipeline: ", s.kind,
             versions ? " is synchronous: no weight versions" : " needs its weight versions");
  const float scale = 1.0f / float(versions ? s.update_every : s.m);
  std::map<Key, Tensor> x_in, dy_in, y_out, dx_out;
  PipelineStep out;
  // The timeline from device marks around each compute action (CUDA events on the GPU, so
  // the work is timed as it ran without stalling the queue), read at the end of the step.
  const Device dev = current_device();
  DeviceMark base(dev);
  base.record();
  const double base_us = us_since(t0);
  std::vector<std::pair<DeviceMark, DeviceMark>> marks;
  std::vector<pp::Action> timed;
  const auto& acts = s.ranks[size_t(grid.pp_rank())];
  auto compute = [&](const pp::Action& a) {
    const Key key{a.mb, a.chunk};
    marks.emplace_back(DeviceMark(dev), DeviceMark(dev));
    marks.back().first.record();
    const int st = s.stage(grid.pp_rank(), a.chunk);
    if (a.op == pp::Op::F) {
      if (st > 0 && s.local_boundary(st - 1)) take(y_out, {a.mb, s.chunk_of(st - 1)}, x_in[key]);  // ZB-V's turn
      double loss = 0;
      if (versions) versions->forward(a.mb);
      Tensor y = model.forward_chunk(a.chunk, a.mb, batch_of(a.mb), x_in[key], scale, &loss);
      x_in.erase(key);
      if (model.last_stage(a.chunk)) out.loss += loss / double(s.m);
      else y_out[key] = y;
    } else if (a.op == pp::Op::B) {
      if (st < S - 1 && s.local_boundary(st)) take(dx_out, {a.mb, s.chunk_of(st + 1)}, dy_in[key]);
      if (versions) versions->backward_begin(a.mb);
      Tensor dx = model.backward_chunk(a.chunk, a.mb, dy_in[key], s.split_backward);
      if (versions) versions->backward_end(a.mb);
      dy_in.erase(key);
      if (!model.first_stage(a.chunk)) dx_out[key] = dx;
    } else if (a.op == pp::Op::R) {
      model.recompute_chunk(a.chunk, a.mb);
    } else {
      model.weight_grad_chunk(a.chunk, a.mb);
    }
    marks.back().second.record();
    timed.push_back(a);
  };
  for (size_t i = 0; i < acts.size();) {
    if (pp::is_compute(acts[i].op)) {
      compute(acts[i++]);
      continue;
    }
    // A batch: every communication action up to the next compute action.
    std::vector<P2POp> ops;
    std::vector<Key> sent_y, sent_dx;
    for (; i < acts.size() && !pp::is_compute(acts[i].op); ++i) {
      const pp::Action c = acts[i];
      const Key k{c.mb, c.chunk};
      const auto [peer, tag] = pp::message_peer_tag(s, grid.pp_rank(), c);
      switch (c.op) {
        case pp::Op::RecvF:
          x_in[k] = model.boundary_activation();
          ops.push_back({false, &x_in[k], peer, tag, Phase::Forward});
          break;
        case pp::Op::SendF:
          PB_REQUIRE(y_out.count(k), "pipeline: SendF of micro-batch ", c.mb, " before its F");
          ops.push_back({true, &y_out[k], peer, tag, Phase::Forward});
          sent_y.push_back(k);
          break;
        case pp::Op::RecvB:
          dy_in[k] = model.boundary_gradient();
          ops.push_back({false, &dy_in[k], peer, tag, Phase::Backward});
          break;
        case pp::Op::SendB:
          PB_REQUIRE(dx_out.count(k), "pipeline: SendB of micro-batch ", c.mb, " before its B");
          ops.push_back({true, &dx_out[k], peer, tag, Phase::Backward});
          sent_dx.push_back(k);
          break;
        default:
          break;
      }
    }
    if (i < acts.size() && acts[i].op == pp::Op::R) {  // recompute in advance: while the batch is in flight
      const RequestPtr batch = grid.pp().ibatch_p2p(ops);
      for (; i < acts.size() && acts[i].op == pp::Op::R; ++i) compute(acts[i]);
      batch->wait();
    } else {
      grid.pp().batch_p2p(ops);
    }
    for (const Key& k : sent_y) y_out.erase(k);  // sent: the buffers are free
    for (const Key& k : sent_dx) dx_out.erase(k);
  }
  PB_REQUIRE(y_out.empty() && dx_out.empty() && x_in.empty() && dy_in.empty(),
             "pipeline: the schedule left tensors unsent or unused");
  for (size_t k = 0; k < marks.size(); ++k) {
    const double start = base_us + 1e3 * marks[k].first.ms_since(base);
    const double dur = 1e3 * marks[k].second.ms_since(marks[k].first);
    out.timeline.push_back({timed[k], start, dur});
    out.busy_us += dur;
  }
  synchronize(dev);
  out.total_us = us_since(t0);
  if (versions) out.weight_versions = versions->most_versions();
  return out;
}

}  // namespace pb
