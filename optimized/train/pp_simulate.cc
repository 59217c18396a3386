/* The validator and simulator of pipeline schedules (pp_schedule.h): simulate() checks
 * every action, dependency and send/receive pair, detects deadlocks when sends never
 * block, and times the compute actions at integer unit costs; check_rendezvous() checks
 * the stricter rule that a batch completes only once every peer has posted its half. */
#include "optimized/train/pp_schedule.h"

#include <algorithm>
#include <array>
#include <deque>
#include <map>
#include <tuple>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>

#include "reference/common/error.h"

namespace pb::pp {

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

// Which communication action a compute action of stage st needs (none at the ends, none
// across a local boundary).
bool needs(const Schedule& s, Op op, int st) {
  switch (op) {
    case Op::RecvF: case Op::SendB: return s.from_prev(st);
    case Op::SendF: case Op::RecvB: return s.to_next(st);
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
  PB_REQUIRE(!s.vshape || v == 2, "schedule ", s.kind, ": a V places exactly 2 chunks per rank, got v = ", v);
  PB_REQUIRE(!s.recompute_ahead || c.R >= 1, "schedule costs must be positive integers: R=", c.R);
  PB_REQUIRE(c.stage.empty() || int(c.stage.size()) == s.stages(), "schedule costs: ", c.stage.size(),
             " stage weights for ", s.stages(), " stages");
  for (const int64_t w : c.stage) PB_REQUIRE(w >= 1, "schedule costs: a stage weight ", w, " (positive integers)");
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
      PB_REQUIRE(s.runs(a.mb, a.chunk), "rank ", r, ", action ", i, ": ", describe(s, a), ": micro-batch ", a.mb,
                 " runs in the other pipeline (chunk ", 1 - a.chunk, ")");
      PB_REQUIRE(a.op != Op::W || s.split_backward, "rank ", r, ", action ", i, ": ", describe(s, a),
                 " in a schedule without split backward");
      const bool backwards = a.op == Op::RecvF || a.op == Op::SendB;  // talks to stage st-1
      const int peer = backwards ? st - 1 : st + 1;
      PB_REQUIRE(needs(s, a.op, st), "rank ", r, ", action ", i, ": ", describe(s, a), " at stage ", st,
                 backwards && s.first_of(st) ? ", which is the first of its pipeline"
                 : !backwards && s.last_of(st) ? ", which is the last of its pipeline"
                                      : ", across the local boundary to stage " + std::to_string(peer) +
                                            " on the same rank");
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
          PB_REQUIRE(!s.runs(mb, ch) || !needs(s, op, 0) || idx.at(r, op, mb, ch) >= 0, "rank ", r, ": ",
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
        if (!s.runs(mb, ch)) continue;
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
        if (pos(Op::R) >= 0) {  // a recompute ahead: after its F, before its B
          PB_REQUIRE(s.recompute_ahead, "rank ", r, ": ", describe(s, {Op::R, mb, ch}), " in a schedule without recompute ahead");
          before(Op::F, Op::R);
          before(Op::R, Op::B);
        }
      }
    }
  // The turn of a V: stage st+1 takes stage st's output on the same rank without a message,
  // so its F follows that F, and the B of st follows the B of st+1, in the rank's order.
  for (int st = 0; st + 1 < s.stages(); ++st) {
    if (!s.local_boundary(st)) continue;
    const int r = s.rank_of(st), lo = s.chunk_of(st), hi = s.chunk_of(st + 1);
    for (int mb = 0; mb < m; ++mb)
      for (const auto& [first, second] : {std::pair{Action{Op::F, mb, lo}, Action{Op::F, mb, hi}},
                                          std::pair{Action{Op::B, mb, hi}, Action{Op::B, mb, lo}}}) {
        const int a = idx.at(r, first.op, mb, first.chunk), b = idx.at(r, second.op, mb, second.chunk);
        PB_REQUIRE(a < b, "rank ", r, ": ", describe(s, second), " (action ", b, ") comes before ", describe(s, first),
                   " (action ", a, "), across the local boundary of stages ", st, " and ", st + 1);
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
  res.peak_held.assign(size_t(p), 0);
  res.timeline.assign(size_t(p), {});
  std::vector<size_t> next(size_t(p), 0);
  std::vector<int64_t> clock(size_t(p), 0);
  std::vector<int> in_flight(size_t(p), 0), pending_w(size_t(p), 0);
  std::vector<size_t> ahead_done(size_t(p), 0);  // R actions after a batch run so far (the index after them)
  for (;;) {
    bool progress = false, done = true;
    for (int r = 0; r < p; ++r) {
      const size_t R = size_t(r);
      const auto& acts = s.ranks[R];
      while (next[R] < acts.size()) {
        const Action& a = acts[next[R]];
        if (is_compute(a.op)) {
          const int64_t cost = c.of(a.op, s.stage(r, a.chunk));
          res.timeline[R].push_back({a, clock[R], clock[R] + cost});
          clock[R] += cost;
          res.busy[R] += cost;
          if (a.op == Op::F) ++in_flight[R];
          if (a.op == Op::B) --in_flight[R], pending_w[R] += s.split_backward;
          if (a.op == Op::W) --pending_w[R];
          res.peak_in_flight[R] = std::max(res.peak_in_flight[R], in_flight[R]);
          res.peak_pending_w[R] = std::max(res.peak_pending_w[R], pending_w[R]);
          res.peak_held[R] = std::max(res.peak_held[R], in_flight[R] + pending_w[R]);
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
        // The recomputes right after the batch run while it is in flight (once each).
        size_t after = end;
        for (; after < acts.size() && acts[after].op == Op::R; ++after)
          if (ahead_done[R] <= after) {
            const int64_t cost = c.of(Op::R, s.stage(r, acts[after].chunk));
            res.timeline[R].push_back({acts[after], clock[R], clock[R] + cost});
            clock[R] += cost;
            res.busy[R] += cost;
            ahead_done[R] = after + 1;
            progress = true;
          }
        if (!complete) break;
        clock[R] = std::max(clock[R], ready);
        next[R] = after;
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
  res.gaps.assign(size_t(p), 0);
  for (int r = 0; r < p; ++r) {
    const size_t R = size_t(r);
    res.idle[R] = res.total - res.busy[R];
    const auto& tl = res.timeline[R];
    if (!tl.empty()) res.gaps[R] = tl.back().end - tl.front().start - res.busy[R];
  }
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

std::pair<int, int> message_peer_tag(const Schedule& s, int rank, const Action& a) {
  const int S = s.stages(), st = s.stage(rank, a.chunk);
  switch (a.op) {
    case Op::SendF: return {s.rank_of(st + 1), (a.mb * S + st + 1) * 2};
    case Op::RecvF: return {s.rank_of(st - 1), (a.mb * S + st) * 2};
    case Op::SendB: return {s.rank_of(st - 1), (a.mb * S + st - 1) * 2 + 1};
    case Op::RecvB: return {s.rank_of(st + 1), (a.mb * S + st) * 2 + 1};
    default: throw Error(std::string("message_peer_tag: ") + op_name(a.op) + " is not a transfer");
  }
}

void check_channel_order(const Schedule& s) {
  // (sender, receiver) -> the tags in the order each side posts them.
  std::map<std::pair<int, int>, std::vector<int>> sent, received;
  for (int r = 0; r < s.p; ++r) {
    const auto& acts = s.ranks[size_t(r)];
    for (size_t i = 0; i < acts.size();) {
      if (is_compute(acts[i].op)) {
        ++i;
        continue;
      }
      std::vector<std::tuple<int, int, bool>> batch;  // (peer, tag, send)
      for (; i < acts.size() && !is_compute(acts[i].op); ++i) {
        const auto [peer, tag] = message_peer_tag(s, r, acts[i]);
        batch.emplace_back(peer, tag, acts[i].op == Op::SendF || acts[i].op == Op::SendB);
      }
      std::sort(batch.begin(), batch.end());
      for (const auto& [peer, tag, send] : batch)
        (send ? sent[{r, peer}] : received[{peer, r}]).push_back(tag);
    }
  }
  for (const auto& [pair, tags] : sent)
    PB_REQUIRE(received[pair] == tags, "schedule ", s.kind, ": rank ", pair.first, " sends to rank ", pair.second,
               " in another order than rank ", pair.second, " receives (NCCL matches by order)");
  for (const auto& [pair, tags] : received)
    PB_REQUIRE(sent[pair] == tags, "schedule ", s.kind, ": rank ", pair.second, " receives from rank ", pair.first,
               " messages that rank ", pair.first, " does not send in that order");
}

}  // namespace pb::pp
