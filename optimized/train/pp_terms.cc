/* Pipeline terms and the schedule walk of activations (see pp_terms.h). */
#include "optimized/train/pp_terms.h"

#include <algorithm>
#include <set>
#include <utility>

namespace pb {

void pp_terms(const pp::Schedule& s, const Dims& d, Terms& t) {
  // Per step: the micro-batches of chunks with a previous stage, and of those with a next one
  // (boundaries that stay on this rank move nothing; in two pipelines a chunk runs its half).
  int64_t first = 0, rest = 0;
  for (int ch = 0; ch < s.v; ++ch) {
    const int st = s.stage(d.pp_rank, ch);
    first += s.from_prev(st) ? s.micro_batches_of(ch) : 0;
    rest += s.to_next(st) ? s.micro_batches_of(ch) : 0;
  }
  const int64_t xb = d.e * d.Ns * d.H;
  t.call("pp", CommOp::Recv, Phase::Forward, d.steps * first, xb, d.p);
  t.call("pp", CommOp::Send, Phase::Forward, d.steps * rest, xb, d.p);
  t.call("pp", CommOp::Recv, Phase::Backward, d.steps * rest, xb, d.p);
  t.call("pp", CommOp::Send, Phase::Backward, d.steps * first, xb, d.p);
  t.call("pp", CommOp::AllReduce, Phase::Optimizer, d.steps, 8, d.p);
  // Two pipelines (DualPipe, Chimera): the two copies of each stage sum their gradients,
  // the whole fp32 gradient buffer all-reduced between pipeline ranks r and p-1-r.
  if (s.bidir) t.call("pp_mirror", CommOp::AllReduce, Phase::Optimizer, d.steps, Dims::fp * d.params_local, 2);
}

MemoryPeaks schedule_peaks(const pp::Schedule* s, int r, const ChunkBytesOf& bytes, int64_t xb) {
  if (!s) {
    const ChunkBytes c = bytes(0, 0);
    return {c.act + std::max(c.act_forward, c.act_backward), std::max(c.ws_forward, c.ws_backward),
            std::max(c.cb_forward, c.cb_backward), c.host};
  }
  int64_t act = 0, ws = 0, cb = 0, host = 0, grads = 0;
  MemoryPeaks peak;
  auto at_least = [](int64_t& p, int64_t v) { p = std::max(p, v); };
  std::set<std::pair<int, int>> received, ahead;
  int64_t sent_act = 0, sent_ws = 0;  // a batch's sent tensors, freed once it is waited for
  const auto& acts = s->ranks[size_t(r)];
  for (size_t i = 0; i < acts.size(); ++i) {
    const pp::Action a = acts[i];
    ChunkBytes c = pp::is_compute(a.op) ? bytes(a.chunk, a.mb) : ChunkBytes{};
    const int st = s->stage(r, a.chunk);
    const bool first = s->first_of(st), last = s->last_of(st);
    switch (a.op) {
      case pp::Op::RecvF:
        act += xb;
        received.insert({a.mb, a.chunk});
        break;
      case pp::Op::F:
        at_least(peak.workspace, ws + c.ws_forward);
        at_least(peak.comm_buffers, cb + c.cb_forward);
        act += c.act - (received.erase({a.mb, a.chunk}) ? xb : 0) + (last ? 0 : xb);
        at_least(peak.activations, act + c.act_forward);
        host += c.host;
        at_least(peak.host, host);
        if (!last && s->local_boundary(st)) received.insert({a.mb, s->chunk_of(st + 1)});  // handed over, not sent
        break;
      case pp::Op::RecvB:
        ws += xb;
        break;
      case pp::Op::R:
        at_least(peak.workspace, ws + c.ahead_ws);
        at_least(peak.comm_buffers, cb + c.ahead_cb);
        at_least(peak.activations, act + c.ahead_act_peak);
        act += c.ahead_act;
        ahead.insert({a.mb, a.chunk});
        break;
      case pp::Op::B:
        if (ahead.erase({a.mb, a.chunk})) {  // recomputed in advance
          c.ws_backward = c.ahead_ws_backward, c.cb_backward = c.ahead_cb_backward;
          c.act_backward = c.ahead_act_backward;
          act -= c.ahead_act;
        }
        act += c.act_b_alloc;
        at_least(peak.workspace, ws + c.ws_backward);
        at_least(peak.comm_buffers, cb + c.cb_backward);
        at_least(peak.activations, act + c.act_backward);
        act -= c.act_b_free;
        ws += (last ? 0 : -xb) + (first ? 0 : xb);  // the gradient received (or handed over), the one to send
        cb += s->split_backward ? c.cb_kept : 0;
        ws += s->split_backward ? c.ws_kept : 0;
        act -= s->split_backward ? c.act - c.act_kept : c.act;
        host -= c.host;
        grads += c.grads_kept;
        at_least(peak.grads, grads);
        break;
      case pp::Op::W:
        at_least(peak.workspace, ws + c.ws_w);
        grads -= c.grads_kept;
        act -= c.act_kept;
        cb -= c.cb_kept;
        ws -= c.ws_kept;
        break;
      default:
        break;
    }
    at_least(peak.activations, act);
    // The end of a communication batch: sent tensors are freed (after the R that follows).
    const bool batch_end = !pp::is_compute(a.op) && (i + 1 == acts.size() || pp::is_compute(acts[i + 1].op));
    if (batch_end) {
      for (size_t j = i + 1; j-- > 0 && !pp::is_compute(acts[j].op);) {
        if (acts[j].op == pp::Op::SendF) sent_act += xb;  // the output, kept until its batch completes
        if (acts[j].op == pp::Op::SendB) sent_ws += xb;
      }
    }
    if ((batch_end || a.op == pp::Op::R) && (i + 1 == acts.size() || acts[i + 1].op != pp::Op::R)) {
      act -= std::exchange(sent_act, 0);
      ws -= std::exchange(sent_ws, 0);
    }
  }
  return peak;
}

}  // namespace pb
