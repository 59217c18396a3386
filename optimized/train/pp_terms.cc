/* Pipeline terms and the schedule walk of activations (see pp_terms.h). */
#include "optimized/train/pp_terms.h"

#include <algorithm>
#include <set>

namespace pb {

void pp_terms(const pp::Schedule& s, const Dims& d, Terms& t) {
  int64_t first = 0, rest = 0;  // chunks with a previous stage, and with a next one
  for (int ch = 0; ch < s.v; ++ch) {  // boundaries that stay on this rank move nothing
    const int st = s.stage(d.pp_rank, ch);
    first += st > 0 && !s.local_boundary(st - 1) ? 1 : 0;
    rest += st < s.stages() - 1 && !s.local_boundary(st) ? 1 : 0;
  }
  const int64_t xb = d.e * d.Ns * d.H;
  t.call("pp", CommOp::Recv, Phase::Forward, d.mb * first, xb, d.p);
  t.call("pp", CommOp::Send, Phase::Forward, d.mb * rest, xb, d.p);
  t.call("pp", CommOp::Recv, Phase::Backward, d.mb * rest, xb, d.p);
  t.call("pp", CommOp::Send, Phase::Backward, d.mb * first, xb, d.p);
  t.call("pp", CommOp::AllReduce, Phase::Optimizer, d.steps, 8, d.p);
}

int64_t activation_peak(const pp::Schedule* s, int r, const std::vector<int64_t>& A, const std::vector<int64_t>& K,
                        int64_t xb) {
  if (!s) return A[0];
  int64_t held = 0, peak = 0;
  std::set<std::pair<int, int>> received;
  const auto& acts = s->ranks[size_t(r)];
  for (size_t i = 0; i < acts.size(); ++i) {
    const pp::Action a = acts[i];
    const int c = a.chunk;
    const bool last = s->stage(r, c) == s->stages() - 1;
    switch (a.op) {
      case pp::Op::RecvF:
        held += xb;
        received.insert({a.mb, c});
        break;
      case pp::Op::F: {
        held += A[size_t(c)] - (received.erase({a.mb, c}) ? xb : 0) + (last ? 0 : xb);
        const int st = s->stage(r, c);
        if (!last && s->local_boundary(st)) received.insert({a.mb, s->chunk_of(st + 1)});  // handed over, not sent
        break;
      }
      case pp::Op::B:
        held -= s->split_backward ? A[size_t(c)] - K[size_t(c)] : A[size_t(c)];
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

}  // namespace pb
