/* Pipeline schedules as data (pp_schedule.h): the generators, the validator/simulator
 * and the renderings (text, SVG, Chrome trace).
 *
 * Bubbles, p ranks, m micro-batches, costs F and B per micro-batch per chunk (integers):
 *   gpipe        Huang et al. 2019, arXiv 1811.06965: every rank idles (p-1)(F+B) of a
 *                total (m+p-1)(F+B): bubble fraction (p-1)/(m+p-1); m micro-batches in flight
 *   1f1b         Narayanan et al. 2021, arXiv 2104.04473 (PipeDream-Flush): the same bubble,
 *                at most p-r micro-batches in flight on rank r
 *   interleaved  same paper, Sec. 2.2: v chunks per rank, costs per chunk: (p-1)(F+B) of
 *                (v*m+p-1)(F+B), bubble (p-1)/(v*m+p-1); rank 0 holds
 *                min(2(p-1)+(v-1)p+1, v*m) chunks in flight
 *   zb-h1        Qi et al. 2023, arXiv 2401.10241: with F=B=W every rank idles (p-1)F, a
 *                third of 1F1B's 3(p-1)F (the paper: (p-1)(F+B-W))
 * The zb-h1 order comes from a list scheduling at unit costs (B first, then F within the
 * limits, then the oldest W), frozen per rank.
 */
#include "optimized/parallel/pp_schedule.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <sstream>

#include "reference/common/error.h"

namespace pb::pp {

const char* op_name(Op op) {
  switch (op) {
    case Op::F: return "F";
    case Op::B: return "B";
    case Op::W: return "W";
    case Op::SendF: return "SendF";
    case Op::RecvF: return "RecvF";
    case Op::SendB: return "SendB";
    case Op::RecvB: return "RecvB";
  }
  return "?";
}

const std::vector<std::string>& schedule_kinds() {
  static const std::vector<std::string> kinds = {"gpipe", "1f1b", "interleaved", "zb-h1"};
  return kinds;
}

namespace {

constexpr int kNumOps = 7;
using Order = std::vector<std::vector<Action>>;  // per rank, compute actions only

// gpipe: all m forwards, then all m backwards in reverse order.
Order gpipe_order(int p, int m) {
  Order o(static_cast<size_t>(p));
  for (auto& acts : o) {
    for (int k = 0; k < m; ++k) acts.push_back({Op::F, k, 0});
    for (int k = m - 1; k >= 0; --k) acts.push_back({Op::B, k, 0});
  }
  return o;
}

// 1f1b: min(p-r-1, m) warm-up forwards, then F, B pairs, then the remaining backwards.
Order one_f_one_b_order(int p, int m) {
  Order o(static_cast<size_t>(p));
  for (int r = 0; r < p; ++r) {
    auto& acts = o[size_t(r)];
    const int warm = std::min(p - r - 1, m);
    for (int k = 0; k < warm; ++k) acts.push_back({Op::F, k, 0});
    for (int i = 0; i < m - warm; ++i) {
      acts.push_back({Op::F, warm + i, 0});
      acts.push_back({Op::B, i, 0});
    }
    for (int k = m - warm; k < m; ++k) acts.push_back({Op::B, k, 0});
  }
  return o;
}

// Megatron's interleaved 1F1B. The k-th forward of a rank runs micro-batch
// (k / (p*v))*p + k % p on chunk (k % (p*v)) / p: groups of p micro-batches walk through
// the chunks; the k-th backward is the same with the chunks reversed. Warm-up
// min((p-r-1)*2 + (v-1)*p, m*v) forwards, then forward k+warm-up, backward k, then cool-down.
Order interleaved_order(int p, int v, int m) {
  Order o(static_cast<size_t>(p));
  const int total = m * v, group = p * v;
  auto nth = [&](Op op, int k) {
    const int chunk = (k % group) / p;
    return Action{op, (k / group) * p + k % p, op == Op::F ? chunk : v - 1 - chunk};
  };
  for (int r = 0; r < p; ++r) {
    auto& acts = o[size_t(r)];
    const int warm = std::min((p - r - 1) * 2 + (v - 1) * p, total);
    for (int k = 0; k < warm; ++k) acts.push_back(nth(Op::F, k));
    for (int k = 0; k < total - warm; ++k) {
      acts.push_back(nth(Op::F, k + warm));
      acts.push_back(nth(Op::B, k));
    }
    for (int k = total - warm; k < total; ++k) acts.push_back(nth(Op::B, k));
  }
  return o;
}

// zb-h1: list scheduling at unit costs F = B = W = 1. Every time step each free rank runs
// the first of: its next B (in micro-batch order, once the next stage's B is done), its next
// F (once the previous stage's F is done, with at most p-r micro-batches between F and B as
// in 1F1B and at most 2p-r-1 between F and W, i.e. up to p-1 deferred W), its oldest
// pending W. Rank r thus runs p-r warm-up forwards; under unit costs every rank idles
// exactly p-1 when m >= p (checked for p <= 12, m <= 4p+3; the unit tests assert it).
Order zb_h1_order(int p, int m) {
  Order o(static_cast<size_t>(p));
  constexpr int64_t kNever = INT64_MAX;
  const size_t P = static_cast<size_t>(p), M = static_cast<size_t>(m);
  std::vector<std::vector<int64_t>> endF(P, std::vector<int64_t>(M, kNever));
  std::vector<std::vector<int64_t>> endB = endF;
  std::vector<int> nF(P), nB(P), nW(P);
  std::vector<int64_t> free_at(P);
  int left = 3 * m * p;
  for (int64_t t = 0; left > 0; ++t) {
    PB_REQUIRE(t <= 6 * int64_t(m) + 4 * int64_t(p) + 8, "zb-h1: list scheduling did not finish (internal error)");
    for (int r = 0; r < p; ++r) {
      const size_t R = size_t(r);
      if (free_at[R] > t) continue;
      const int in_flight = nF[R] - nB[R], pending_w = nB[R] - nW[R];
      Action a{};
      if (nB[R] < nF[R] && (r == p - 1 || endB[R + 1][size_t(nB[R])] <= t)) {
        a = {Op::B, nB[R]++, 0};
        endB[R][size_t(a.mb)] = t + 1;
      } else if (nF[R] < m && in_flight < p - r && in_flight + pending_w < 2 * p - r - 1 &&
                 (r == 0 || endF[R - 1][size_t(nF[R])] <= t)) {
        a = {Op::F, nF[R]++, 0};
        endF[R][size_t(a.mb)] = t + 1;
      } else if (pending_w > 0) {
        a = {Op::W, nW[R]++, 0};
      } else {
        continue;
      }
      o[R].push_back(a);
      free_at[R] = t + 1;
      --left;
    }
  }
  return o;
}

// The communication actions around the compute: RecvF before F of a stage > 0, SendF after
// F of a stage < S-1, RecvB before B of a stage < S-1, SendB after B of a stage > 0. A send
// and the receive of the next compute action are adjacent and so form one batch, as
// Megatron's send_forward_recv_backward / send_backward_recv_forward pairs. Receives are
// posted just before the compute that needs them: a batch waits for its receives, so an
// earlier receive could only delay the compute in between.
Schedule with_comm(const std::string& kind, int p, int v, int m, bool split, const Order& order) {
  Schedule s;
  s.kind = kind;
  s.p = p, s.v = v, s.m = m;
  s.split_backward = split;
  s.ranks.resize(size_t(p));
  const int last = s.stages() - 1;
  for (int r = 0; r < p; ++r) {
    auto& out = s.ranks[size_t(r)];
    for (const Action& a : order[size_t(r)]) {
      const int st = s.stage(r, a.chunk);
      if (a.op == Op::F && st > 0) out.push_back({Op::RecvF, a.mb, a.chunk});
      if (a.op == Op::B && st < last) out.push_back({Op::RecvB, a.mb, a.chunk});
      out.push_back(a);
      if (a.op == Op::F && st < last) out.push_back({Op::SendF, a.mb, a.chunk});
      if (a.op == Op::B && st > 0) out.push_back({Op::SendB, a.mb, a.chunk});
    }
  }
  return s;
}

// The interleaved schedule with Megatron's communication placement (schedules.py,
// forward_backward_pipelining_with_interleaving, without p2p overlap): after every warm-up
// F one batch sends its output and receives the next input; in the steady state F and B
// run back to back and one batch sends both results and receives the next input and the
// next output gradient; in the cool-down each B is followed by send-B/receive-B. Rank 0
// receives what rank p-1 sends in the matching batch (the input of a later F: rank 0 is
// p-1 forwards ahead), likewise rank p-1 from rank 0 in the backward. Receives are thus
// posted as early as the peer's matching send, and every batch pairs with the peer's
// batch: no rank waits on a send whose receive is posted only later, so the schedule is
// also deadlock-free where a send completes only once its receive is posted (NCCL, MPI
// rendezvous). The received (mb, chunk) follow each channel's order (tags = FIFO order).
Schedule interleaved_schedule(int p, int v, int m) {
  Order order = interleaved_order(p, v, m);
  Schedule s;
  s.kind = "interleaved";
  s.p = p, s.v = v, s.m = m;
  s.ranks.resize(static_cast<size_t>(p));
  const int T = m * v, group = p * v, last_stage = s.stages() - 1;
  auto chunk_f = [&](int k) { return (k % group + group) % group / p; };  // k may be negative
  auto chunk_b = [&](int k) { return v - 1 - chunk_f(k); };
  for (int r = 0; r < p; ++r) {
    const auto& comp = order[size_t(r)];
    const bool first = r == 0, last = r == p - 1;
    const int warm = std::min((p - r - 1) * 2 + (v - 1) * p, T), rest = T - warm;
    std::vector<Action> fs, bs, need_f, need_b;  // the k-th F and B; the receives in channel order
    for (const Action& a : comp) {
      const int st = s.stage(r, a.chunk);
      if (a.op == Op::F) {
        fs.push_back(a);
        if (st > 0) need_f.push_back({Op::RecvF, a.mb, a.chunk});
      } else {
        bs.push_back(a);
        if (st < last_stage) need_b.push_back({Op::RecvB, a.mb, a.chunk});
      }
    }
    auto& out = s.ranks[size_t(r)];
    size_t nf = 0, nb = 0;
    auto recv_f = [&] {
      PB_REQUIRE(nf < need_f.size(), "interleaved: rank ", r, " receives more inputs than it needs (internal error)");
      out.push_back(need_f[nf++]);
    };
    auto recv_b = [&] {
      PB_REQUIRE(nb < need_b.size(), "interleaved: rank ", r, " receives more gradients than it needs (internal error)");
      out.push_back(need_b[nb++]);
    };
    auto send_f = [&](int k) {
      if (s.stage(r, fs[size_t(k)].chunk) < last_stage) out.push_back({Op::SendF, fs[size_t(k)].mb, fs[size_t(k)].chunk});
    };
    auto send_b = [&](int k) {
      if (s.stage(r, bs[size_t(k)].chunk) > 0) out.push_back({Op::SendB, bs[size_t(k)].mb, bs[size_t(k)].chunk});
    };
    if (!first) recv_f();
    for (int k = 0; k < warm; ++k) {
      out.push_back(fs[size_t(k)]);
      send_f(k);
      if (k + 1 < T && !(first && chunk_f(k + 1) == 0)) recv_f();
      if (k == warm - 1 && rest > 0 && !last) recv_b();
    }
    for (int k = 0; k < rest; ++k) {
      const int fk = k + warm;
      out.push_back(fs[size_t(fk)]);
      out.push_back(bs[size_t(k)]);
      send_f(fk);
      send_b(k);
      if (k + 1 < rest && (!first || chunk_f(fk - (p - 1)) != v - 1)) recv_f();
      if (!last || chunk_b(k - (p - 1)) != 0) recv_b();
    }
    if (rest == 0 && !last) recv_b();
    for (int k = rest; k < T; ++k) {
      out.push_back(bs[size_t(k)]);
      send_b(k);
      if (k + 1 < T && !(last && chunk_b(k + 1) == v - 1)) recv_b();
    }
    PB_REQUIRE(nf == need_f.size() && nb == need_b.size(), "interleaved: rank ", r, " receives ", nf, " of ",
               need_f.size(), " inputs and ", nb, " of ", need_b.size(), " gradients (internal error)");
  }
  return s;
}

std::string known_kinds() {
  std::string k;
  for (const auto& n : schedule_kinds()) k += (k.empty() ? "" : ", ") + n;
  return k;
}

}  // namespace

Schedule make_schedule(const std::string& kind, int p, int v, int m) {
  const auto& kinds = schedule_kinds();
  PB_REQUIRE(std::find(kinds.begin(), kinds.end(), kind) != kinds.end(), "unknown pipeline schedule '", kind,
             "' (known: ", known_kinds(), ")");
  PB_REQUIRE(p >= 1, "pipeline schedule ", kind, ": p (pipeline ranks) must be >= 1, got ", p);
  PB_REQUIRE(v >= 1, "pipeline schedule ", kind, ": v (chunks per rank) must be >= 1, got ", v);
  PB_REQUIRE(m >= 1, "pipeline schedule ", kind, ": m (micro-batches) must be >= 1, got ", m);
  PB_REQUIRE(int64_t(p) * v * m <= 1000000, "pipeline schedule ", kind, ": p*v*m = ", int64_t(p) * v * m,
             " actions per kind is too large (at most 1000000)");
  if (kind == "interleaved") {
    PB_REQUIRE(v >= 2, "pipeline schedule interleaved needs v >= 2 chunks per rank, got ", v, " (use 1f1b for v = 1)");
    PB_REQUIRE(m >= p, "pipeline schedule interleaved needs m >= p micro-batches, got m = ", m, " < p = ", p);
    PB_REQUIRE(m % p == 0, "pipeline schedule interleaved needs m a multiple of p (groups of p micro-batches), got m = ",
               m, ", p = ", p);
    return interleaved_schedule(p, v, m);
  }
  PB_REQUIRE(v == 1, "pipeline schedule ", kind, " has one chunk per rank: v must be 1, got ", v,
             " (use interleaved for v > 1)");
  if (kind == "gpipe") return with_comm(kind, p, 1, m, false, gpipe_order(p, m));
  if (kind == "1f1b") return with_comm(kind, p, 1, m, false, one_f_one_b_order(p, m));
  return with_comm(kind, p, 1, m, true, zb_h1_order(p, m));
}

Costs default_costs(const Schedule& s) {
  return s.split_backward ? Costs{1, 1, 1} : Costs{1, 2, 0};
}

// ---------------------------------------------------------------------------------------
// Validation and simulation.

namespace {

std::string describe(const Schedule& s, const Action& a) {
  std::string d = std::string(op_name(a.op)) + "(mb " + std::to_string(a.mb);
  if (s.v > 1) d += ", chunk " + std::to_string(a.chunk);
  return d + ")";
}

// Position of every action of every rank: pos[rank][op][mb*v + chunk], -1 if absent.
struct Index {
  int p, v, m;
  std::vector<int> pos;
  Index(int p_, int v_, int m_) : p(p_), v(v_), m(m_), pos(size_t(p_) * kNumOps * size_t(m_) * size_t(v_), -1) {}
  int& at(int r, Op op, int mb, int chunk) {
    return pos[((size_t(r) * kNumOps + size_t(op)) * size_t(m) + size_t(mb)) * size_t(v) + size_t(chunk)];
  }
};

// Which communication action a compute action of stage st needs (none at the ends).
bool needs(const Schedule& s, Op op, int st) {
  const int last = s.stages() - 1;
  switch (op) {
    case Op::RecvF: case Op::SendB: return st > 0;
    case Op::SendF: case Op::RecvB: return st < last;
    case Op::W: return s.split_backward;
    default: return true;
  }
}

// The matching send of a receive: (peer rank, op, peer's chunk).
Action matching_send(const Schedule& s, int r, const Action& a, int* peer) {
  const int st = s.stage(r, a.chunk) + (a.op == Op::RecvF ? -1 : 1);
  *peer = s.rank_of(st);
  return {a.op == Op::RecvF ? Op::SendF : Op::SendB, a.mb, s.chunk_of(st)};
}

}  // namespace

SimResult simulate(const Schedule& s, const Costs& c) {
  const int p = s.p, v = s.v, m = s.m;
  PB_REQUIRE(p >= 1 && v >= 1 && m >= 1, "schedule ", s.kind, ": p, v, m must be >= 1, got ", p, ", ", v, ", ", m);
  PB_REQUIRE(int(s.ranks.size()) == p, "schedule ", s.kind, ": ", s.ranks.size(), " rank lists for p = ", p);
  PB_REQUIRE(c.F >= 1 && c.B >= 1 && (!s.split_backward || c.W >= 1),
             "schedule costs must be positive integers: F=", c.F, " B=", c.B, s.split_backward ? " W=" : "",
             s.split_backward ? std::to_string(c.W) : "");
  Index idx(p, v, m);
  // 1. Every action in range, allowed, and at most once.
  for (int r = 0; r < p; ++r) {
    const auto& acts = s.ranks[size_t(r)];
    for (size_t i = 0; i < acts.size(); ++i) {
      const Action& a = acts[i];
      PB_REQUIRE(int(a.op) >= 0 && int(a.op) < kNumOps, "rank ", r, ", action ", i, ": unknown op ", int(a.op));
      PB_REQUIRE(a.mb >= 0 && a.mb < m && a.chunk >= 0 && a.chunk < v, "rank ", r, ", action ", i, ": ",
                 op_name(a.op), " of micro-batch ", a.mb, ", chunk ", a.chunk, " out of range (m = ", m, ", v = ", v, ")");
      const int st = s.stage(r, a.chunk);
      PB_REQUIRE(a.op != Op::W || s.split_backward, "rank ", r, ", action ", i, ": ", describe(s, a),
                 " in a schedule without split backward");
      PB_REQUIRE(needs(s, a.op, st), "rank ", r, ", action ", i, ": ", describe(s, a), " at stage ", st,
                 st == 0 ? ", which has no previous stage" : ", which is the last stage");
      int& slot = idx.at(r, a.op, a.mb, a.chunk);
      PB_REQUIRE(slot < 0, "rank ", r, ": ", describe(s, a), " appears twice (actions ", slot, " and ", i, ")");
      slot = int(i);
    }
  }
  // 2. Every compute action present.
  for (int r = 0; r < p; ++r)
    for (int ch = 0; ch < v; ++ch)
      for (int mb = 0; mb < m; ++mb)
        for (Op op : {Op::F, Op::B, Op::W})
          PB_REQUIRE(!needs(s, op, 0) || idx.at(r, op, mb, ch) >= 0, "rank ", r, ": ",
                     describe(s, {op, mb, ch}), " missing");
  // 3. Every receive has its send on the peer.
  for (int r = 0; r < p; ++r)
    for (const Action& a : s.ranks[size_t(r)]) {
      if (a.op != Op::RecvF && a.op != Op::RecvB) continue;
      int peer = 0;
      const Action send = matching_send(s, r, a, &peer);
      PB_REQUIRE(idx.at(peer, send.op, send.mb, send.chunk) >= 0, "rank ", r, ": ", describe(s, a),
                 " has no matching ", describe(s, send), " on rank ", peer);
    }
  // 4. Every communication action present and every dependency on the rank in order.
  for (int r = 0; r < p; ++r)
    for (int ch = 0; ch < v; ++ch) {
      const int st = s.stage(r, ch);
      for (int mb = 0; mb < m; ++mb) {
        auto pos = [&](Op op) { return idx.at(r, op, mb, ch); };
        auto before = [&](Op first, Op second) {
          if (!needs(s, first, st) || !needs(s, second, st)) return;
          for (Op op : {first, second})
            PB_REQUIRE(pos(op) >= 0, "rank ", r, ": ", describe(s, {op, mb, ch}), " missing (stage ", st, " needs it with ",
                       op_name(op == first ? second : first), ")");
          PB_REQUIRE(pos(first) < pos(second), "rank ", r, ": ", describe(s, {second, mb, ch}), " (action ",
                     pos(second), ") comes before ", describe(s, {first, mb, ch}), " (action ", pos(first), ")");
        };
        before(Op::RecvF, Op::F);
        before(Op::F, Op::SendF);
        before(Op::F, Op::B);
        before(Op::RecvB, Op::B);
        before(Op::B, Op::SendB);
        before(Op::B, Op::W);
      }
    }
  // 5. Run: ranks advance through their lists. A compute action takes its cost; a batch of
  // consecutive communication actions posts its sends at once (a send never blocks) and
  // completes when the peers have posted the sends matching its receives.
  const int S = s.stages();
  std::vector<int64_t> sent_f(size_t(S) * size_t(m), -1), sent_b(size_t(S) * size_t(m), -1);  // [stage][mb]: time
  auto sent = [&](Op op, int st, int mb) -> int64_t& {
    return (op == Op::SendF ? sent_f : sent_b)[size_t(st) * size_t(m) + size_t(mb)];
  };
  SimResult res;
  res.busy.assign(size_t(p), 0);
  res.idle.assign(size_t(p), 0);
  res.peak_in_flight.assign(size_t(p), 0);
  res.peak_pending_w.assign(size_t(p), 0);
  res.timeline.assign(size_t(p), {});
  std::vector<size_t> next(size_t(p), 0);
  std::vector<int64_t> clock(size_t(p), 0);
  std::vector<int> in_flight(size_t(p), 0), pending_w(size_t(p), 0);
  for (;;) {
    bool progress = false, done = true;
    for (int r = 0; r < p; ++r) {
      const size_t R = size_t(r);
      const auto& acts = s.ranks[R];
      while (next[R] < acts.size()) {
        const Action& a = acts[next[R]];
        if (is_compute(a.op)) {
          const int64_t cost = a.op == Op::F ? c.F : a.op == Op::B ? c.B : c.W;
          res.timeline[R].push_back({a, clock[R], clock[R] + cost});
          clock[R] += cost;
          res.busy[R] += cost;
          if (a.op == Op::F) ++in_flight[R];
          if (a.op == Op::B) --in_flight[R], pending_w[R] += s.split_backward;
          if (a.op == Op::W) --pending_w[R];
          res.peak_in_flight[R] = std::max(res.peak_in_flight[R], in_flight[R]);
          res.peak_pending_w[R] = std::max(res.peak_pending_w[R], pending_w[R]);
          ++next[R];
          progress = true;
          continue;
        }
        size_t end = next[R];
        while (end < acts.size() && !is_compute(acts[end].op)) ++end;
        int64_t ready = clock[R];
        bool complete = true;
        for (size_t i = next[R]; i < end; ++i) {
          const Action& b = acts[i];
          const int st = s.stage(r, b.chunk);
          if (b.op == Op::SendF || b.op == Op::SendB) {
            int64_t& t = sent(b.op, st, b.mb);
            if (t < 0) t = clock[R], progress = true;
          } else {
            const int64_t t = sent(b.op == Op::RecvF ? Op::SendF : Op::SendB, b.op == Op::RecvF ? st - 1 : st + 1, b.mb);
            if (t < 0) complete = false;
            else ready = std::max(ready, t);
          }
        }
        if (!complete) break;
        clock[R] = ready;
        next[R] = end;
        progress = true;
      }
      done = done && next[R] == acts.size();
    }
    if (done) break;
    if (!progress) {  // name every blocked rank and the first receive it waits for
      std::string why;
      for (int r = 0; r < p; ++r) {
        const auto& acts = s.ranks[size_t(r)];
        for (size_t i = next[size_t(r)]; i < acts.size() && !is_compute(acts[i].op); ++i) {
          const Action& b = acts[i];
          if (b.op != Op::RecvF && b.op != Op::RecvB) continue;
          int peer = 0;
          const Action send = matching_send(s, r, b, &peer);
          if (sent(send.op, s.stage(peer, send.chunk), send.mb) >= 0) continue;
          why += (why.empty() ? "" : "; ") + std::string("rank ") + std::to_string(r) + " waits at " +
                 describe(s, b) + " (action " + std::to_string(i) + ") for rank " + std::to_string(peer);
          break;
        }
      }
      throw Error("schedule " + s.kind + ": deadlock: " + why);
    }
  }
  for (int r = 0; r < p; ++r) res.total = std::max(res.total, clock[size_t(r)]);
  for (int r = 0; r < p; ++r) res.idle[size_t(r)] = res.total - res.busy[size_t(r)];
  return res;
}

void check_rendezvous(const Schedule& s) {
  simulate(s, default_costs(s));  // validates the schedule first
  const int p = s.p, m = s.m, S = s.stages();
  // posted[op - SendF][stage][mb] for the four communication ops.
  std::vector<char> posted(size_t(4) * size_t(S) * size_t(m), 0);
  auto flag = [&](Op op, int st, int mb) -> char& {
    return posted[(size_t(int(op) - int(Op::SendF)) * size_t(S) + size_t(st)) * size_t(m) + size_t(mb)];
  };
  auto partner_posted = [&](int r, const Action& a) {
    const int st = s.stage(r, a.chunk);
    switch (a.op) {
      case Op::SendF: return st + 1 < S && flag(Op::RecvF, st + 1, a.mb);
      case Op::RecvF: return st > 0 && flag(Op::SendF, st - 1, a.mb);
      case Op::SendB: return st > 0 && flag(Op::RecvB, st - 1, a.mb);
      default: return st + 1 < S && flag(Op::SendB, st + 1, a.mb);
    }
  };
  std::vector<size_t> next(size_t(p), 0);
  for (;;) {
    bool progress = false, done = true;
    for (int r = 0; r < p; ++r) {
      const auto& acts = s.ranks[size_t(r)];
      size_t& i = next[size_t(r)];
      while (i < acts.size()) {
        if (is_compute(acts[i].op)) {
          ++i, progress = true;
          continue;
        }
        size_t end = i;
        for (; end < acts.size() && !is_compute(acts[end].op); ++end) {
          char& f = flag(acts[end].op, s.stage(r, acts[end].chunk), acts[end].mb);
          if (!f) f = 1, progress = true;
        }
        bool complete = true;
        for (size_t k = i; k < end; ++k) complete = complete && partner_posted(r, acts[k]);
        if (!complete) break;
        i = end, progress = true;
      }
      done = done && i == acts.size();
    }
    if (done) return;
    if (!progress) {
      std::string why;
      for (int r = 0; r < p; ++r) {
        const auto& acts = s.ranks[size_t(r)];
        for (size_t k = next[size_t(r)]; k < acts.size() && !is_compute(acts[k].op); ++k) {
          if (partner_posted(r, acts[k])) continue;
          const int st = s.stage(r, acts[k].chunk);
          const bool fwd = acts[k].op == Op::SendF || acts[k].op == Op::RecvB;
          why += (why.empty() ? "" : "; ") + std::string("rank ") + std::to_string(r) + " waits at " +
                 describe(s, acts[k]) + " (action " + std::to_string(k) + ") for rank " +
                 std::to_string(s.rank_of(fwd ? st + 1 : st - 1));
          break;
        }
      }
      throw Error("schedule " + s.kind + ": deadlock when a send completes only once its receive is posted: " + why);
    }
  }
}

}  // namespace pb::pp
