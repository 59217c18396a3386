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
 *                third of 1F1B's 3(p-1)F (the paper: (p-1)(F+B-W)); at most p micro-batches
 *                between F and W on every rank (1F1B's peak)
 *   zb-v         same paper, ZB-V: 2 chunks per rank in a V, costs per chunk; with F=B=W
 *                every rank idles (p-1)F when m >= p, the least possible as rank p-1 starts
 *                after p-1 forwards; half of ZB-H1's 2(p-1)F with the same layers per rank.
 *                The paper's zero, (p-1)(T_F+T_B-2T_W) per stage, leaves out a rank's wait
 *                before its first and after its last action (a parallelogram; here rank r
 *                idles r before its first action and p-1-r later). At most 2p chunks
 *                between F and W on every rank (1F1B's p micro-batches)
 * The zb-h1 order is the paper's, in closed form; the zb-v order comes from a list
 * scheduling at unit costs, frozen per rank.
 */
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

const char* op_name(Op op) {
  switch (op) {
    case Op::F: return "F";
    case Op::B: return "B";
    case Op::W: return "W";
    case Op::SendF: return "SendF";
    case Op::RecvF: return "RecvF";
    case Op::SendB: return "SendB";
    case Op::RecvB: return "RecvB";
    case Op::R: return "R";
  }
  return "?";
}

const std::vector<std::string>& schedule_kinds() {
  static const std::vector<std::string> kinds = {"gpipe", "1f1b", "interleaved", "zb-h1", "zb-h2", "zb-v",
                                                 "dualpipev", "dualpipe", "chimera", "pipedream",
                                                 "pipedream-2bw", "terapipe"};
  return kinds;
}

bool vshape_kind(const std::string& kind) { return kind == "zb-v" || kind == "dualpipev"; }
bool bidir_kind(const std::string& kind) { return kind == "dualpipe" || kind == "chimera"; }
bool async_kind(const std::string& kind) { return kind == "pipedream" || kind == "pipedream-2bw"; }

int weight_versions(const Schedule& s, int rank) {
  if (s.update_every == 0) return 1;
  std::map<int, int> in_flight;  // version -> micro-batches between F and B
  int version = 0, backwards = 0, most = 1;
  for (const Action& a : s.ranks[size_t(rank)]) {
    if (a.op == Op::F) {
      ++in_flight[version];
    } else if (a.op == Op::B) {
      ++backwards;
      for (auto it = in_flight.begin(); it != in_flight.end(); ++it)
        if (it->second > 0) {  // the oldest version in flight is this micro-batch's (1F1B: in order)
          if (--it->second == 0) in_flight.erase(it);
          break;
        }
      if (backwards % s.update_every == 0) ++version;  // the update after this B
      most = std::max(most, int(in_flight.size()) + (in_flight.count(version) ? 0 : 1));
    }
  }
  return most;
}

namespace {

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

// zb-h1 (Qi et al. 2023, Fig. 3): 1F1B with the backward split, each rank's W deferred by
// its distance from the first stage. Rank r runs min(p-r, m) warm-up forwards; then for
// every micro-batch k its B, the W of micro-batch k-r once k >= r, and the next F; the r
// deferred W close the rank. Hence at most p micro-batches between F and W on every rank
// (rank 0: p-1 warm-up forwards + 1, as 1F1B; rank r: p-r between F and B plus r deferred
// W), at most p-r between F and B, and under unit costs F = B = W every rank idles exactly
// p-1 when m >= p (2p-m-1 when m < p): rank r waits r before its first F and p-1-r for its
// first B, and never after, as each deferred W fills the slot where 1F1B waits for the
// next stage's B. (Checked for p <= 16, m <= 6p+3; the unit tests assert it for p <= 10.)
Order zb_h1_order(int p, int m) {
  Order o(static_cast<size_t>(p));
  for (int r = 0; r < p; ++r) {
    auto& acts = o[size_t(r)];
    const int warm = std::min(p - r, m);
    int w = 0;  // the next W
    for (int k = 0; k < warm; ++k) acts.push_back({Op::F, k, 0});
    for (int k = 0; k < m; ++k) {
      acts.push_back({Op::B, k, 0});
      if (k >= r) acts.push_back({Op::W, w++, 0});
      if (k + warm < m) acts.push_back({Op::F, k + warm, 0});
    }
    for (; w < m; ++w) acts.push_back({Op::W, w, 0});
  }
  return o;
}

// zb-h2 (Qi et al. 2023, Sec. 2.2): more warm-up forwards than zb-h1, so that no
// rank idles between its first and its last action. List scheduling at unit costs F = B =
// W = 1: every time step each free rank runs its next B if its gradient is there, else its
// next F if its input is there and fewer than 2p-1 micro-batches lie between F and W on the
// rank, else its oldest pending W. Rank r then runs 2(p-r)-1 warm-up forwards (when m
// allows), the first B arrives just as they end, and the W deferred by the limit fill the
// cool-down, where the last gradients climb the pipeline: at m >= 2p-1 every rank works
// without a gap from its start at r to its end at r + 3m (checked for p <= 16, m <= 6p+3;
// the unit tests assert it for p <= 10), at most 2p-1 micro-batches between F and W (the
// paper's "2x 1F1B's peak": 1F1B's rank 0 holds p). A limit of 2p-2 leaves rank 0 a gap.
// The makespan 3m+p-1 equals zb-h1's; the gain is that the idle is all at the two ends, so
// consecutive steps can overlap once no rank waits for a global optimizer sync between
// them (post-validation of the optimizer step, optimized/model/post_validation.h).
Order zb_h2_order(int p, int m, std::vector<std::vector<int64_t>>* start) {
  Order o(static_cast<size_t>(p));
  start->assign(size_t(p), {});
  constexpr int64_t kNever = INT64_MAX;
  const size_t P = size_t(p), M = size_t(m);
  std::vector<int64_t> endF(P * M, kNever), endB(P * M, kNever);
  auto at = [&](int rank, int mb) { return size_t(rank) * M + size_t(mb); };
  std::vector<int> nF(P, 0), nB(P, 0), nW(P, 0);
  const int limit = 2 * p - 1;
  int64_t left = 3 * int64_t(m) * p;
  for (int64_t t = 0; left > 0; ++t) {
    PB_REQUIRE(t <= 6 * int64_t(m) + 4 * int64_t(p) + 16, "zb-h2: list scheduling did not finish (internal error)");
    for (int r = 0; r < p; ++r) {
      const size_t R = size_t(r);
      const int f = nF[R], b = nB[R];
      Action a{};
      if (b < f && endF[at(r, b)] <= t && (r == p - 1 || endB[at(r + 1, b)] <= t)) {
        a = {Op::B, nB[R]++, 0};
        endB[at(r, b)] = t + 1;
      } else if (f < m && (r == 0 || endF[at(r - 1, f)] <= t) && f - nW[R] < limit) {
        a = {Op::F, nF[R]++, 0};
        endF[at(r, f)] = t + 1;
      } else if (nW[R] < b) {
        a = {Op::W, nW[R]++, 0};
      } else {
        continue;
      }
      o[R].push_back(a);
      (*start)[R].push_back(t);
      --left;
    }
  }
  return o;
}

// zb-v: list scheduling at unit costs F = B = W = 1 per chunk, on the V placement (chunk 0
// of rank r is stage r, chunk 1 is stage 2p-1-r). Every time step each free rank runs the
// first ready one of
//   1. its next F of chunk 1 (after the F of stage 2p-2-r on rank r+1; on rank p-1 after
//      its own chunk 0: the turn of the V),
//   2. its next F of chunk 0 (after the F of stage r-1 on rank r-1),
//   3. its next B of chunk 0 (after the B of stage r+1 on rank r+1; on rank p-1 after its
//      own chunk 1),
//   4. its next B of chunk 1 (after the B of stage 2p-r on rank r-1; on rank 0, whose
//      chunk 1 is the last stage, after its own F),
//   5. its oldest pending W,
// in micro-batch order per (op, chunk), where an F whose input is there but which would
// make more than 2p chunk-micro-batches lie between F and W on the rank runs the oldest
// pending W instead (1F1B's activation memory, as a chunk is half a rank's layers and W
// frees what F saved for it; the memory-driven W of the zero-bubble authors' generator).
// Under unit costs every rank then idles exactly p-1 when m >= p, the least possible: rank
// p-1 cannot start before the p-1 forwards of stages 0 .. p-2, and every rank has the same
// work 6m (checked for p <= 16, m <= 6p+3; the unit tests assert it for p <= 8). Without
// the memory-driven W (W only when nothing else is ready) some p, m idle more; other
// priorities among 1-4 (F1 B0 F0 B1, B0 F1 F0 B1, ...) reach p-1 as well.
Order zb_v_order(int p, int m, std::vector<std::vector<int64_t>>* start) {
  Order o(static_cast<size_t>(p));
  start->assign(size_t(p), {});
  constexpr int64_t kNever = INT64_MAX;
  const size_t P = static_cast<size_t>(p), M = static_cast<size_t>(m);
  // When the F / B of (rank, chunk, micro-batch) ends; kNever until scheduled.
  std::vector<int64_t> endF(P * 2 * M, kNever), endB(P * 2 * M, kNever);
  auto at = [&](int rank, int chunk, int mb) { return (size_t(rank) * 2 + size_t(chunk)) * M + size_t(mb); };
  std::vector<std::array<int, 2>> nF(P, {0, 0}), nB(P, {0, 0});
  std::vector<std::deque<Action>> pending_w(P);  // oldest first
  std::vector<int> held(P, 0);                    // chunk-micro-batches between F and W
  const int limit = 2 * p;
  // Only a rank that acted in the last step, or whose neighbour did, can act in this one:
  // nothing else changed for it.
  std::vector<int> awake(P), next;
  std::vector<char> marked(P, 0);
  for (int r = 0; r < p; ++r) awake[size_t(r)] = r;
  int64_t left = 6 * int64_t(m) * p;
  for (int64_t t = 0; left > 0; ++t) {
    PB_REQUIRE(t <= 12 * int64_t(m) + 8 * int64_t(p) + 16 && !awake.empty(),
               "zb-v: list scheduling did not finish (internal error)");
    next.clear();
    for (const int r : awake) {
      const size_t R = size_t(r);
      auto f_ready = [&](int c) {  // the input is there (the F - W limit is checked apart)
        const int k = nF[R][size_t(c)];
        if (k >= m) return false;
        if (c == 0) return r == 0 || endF[at(r - 1, 0, k)] <= t;
        return endF[r == p - 1 ? at(r, 0, k) : at(r + 1, 1, k)] <= t;
      };
      auto b_ready = [&](int c) {
        const int k = nB[R][size_t(c)];
        if (k >= nF[R][size_t(c)] || endF[at(r, c, k)] > t) return false;
        if (c == 1) return r == 0 || endB[at(r - 1, 1, k)] <= t;
        return endB[r == p - 1 ? at(r, 1, k) : at(r + 1, 0, k)] <= t;
      };
      auto& w = pending_w[R];
      const bool room = held[R] < limit;  // chunk-micro-batches between F and W
      Action a{};
      const bool f1 = f_ready(1), f0 = f_ready(0);
      if ((f1 || f0) && !room && !w.empty()) a = w.front(), w.pop_front();  // memory-driven W
      else if (f1 && room) a = {Op::F, nF[R][1]++, 1};
      else if (f0 && room) a = {Op::F, nF[R][0]++, 0};
      else if (b_ready(0)) a = {Op::B, nB[R][0]++, 0};
      else if (b_ready(1)) a = {Op::B, nB[R][1]++, 1};
      else if (!w.empty()) a = w.front(), w.pop_front();
      else continue;
      held[R] += a.op == Op::F ? 1 : a.op == Op::W ? -1 : 0;
      if (a.op == Op::F) endF[at(r, a.chunk, a.mb)] = t + 1;
      if (a.op == Op::B) {
        endB[at(r, a.chunk, a.mb)] = t + 1;
        w.push_back({Op::W, a.mb, a.chunk});
      }
      o[R].push_back(a);
      (*start)[R].push_back(t);
      --left;
      for (int q : {r - 1, r, r + 1})
        if (q >= 0 && q < p && !marked[size_t(q)]) marked[size_t(q)] = 1, next.push_back(q);
    }
    for (const int q : next) marked[size_t(q)] = 0;
    awake.swap(next);
  }
  return o;
}

// dualpipe and dualpipev (DeepSeek-V3, arXiv 2412.19437; github.com/deepseek-ai/DualPipe,
// dualpipe.py and dualpipev.py). DualPipe: two pipelines over the ranks (the bidirectional
// placement: chunk 0 of rank r is stage r of the down pipeline, chunk 1 stage p-1-r of the up
// one, each a whole copy of the model), micro-batches 0..m/2-1 fed down from rank 0 and the
// rest up from rank p-1; p and m even, m >= 2p. DualPipeV ("cut in half"): zb-v's V
// placement, all m micro-batches fed at rank 0, m >= 2p. With H = p/2, h = min(r, p-1-r),
// M = m/2 (DualPipe) or H = p, h = r, M = m (DualPipeV), rank r runs eight phases over
// "phase 0" (the pipeline in which the rank sits h stages from its input: down on ranks
// r < p/2, up on the others; in the V chunk 0) and "phase 1" (the other), each phase's
// forwards and backwards over its M micro-batches in order ("zb": the backward's W deferred
// to a FIFO that W pops; otherwise the W follows its B at once, a full backward):
//   1. 2(H-h-1) x F0                          5. (H-h-1) x [B1, F1 & B0]
//   2. (h+1) x [F0, F1]                       6. (h+1) x [B1, B0], the later half zb
//   3. (H-h-1) x [B1 zb, W, F1]               7. (H-h-1) x [W, B0 zb]
//   4. (M-2H+h+1) x [F0 & B1, F1 & B0]        8. (h+1) x W
// "X & Y" is DualPipe's overlapped pair (one chunk's forward under another's backward and
// their communication); the executor runs the pair's F, B and W in turn, and so does the
// simulator: at unit costs F & B = F + B + W. In phase 6, zb starts at iteration
// k = (h+1)/2 (integer division): before its B1 for odd h, before its B0 for even h.
Order dualpipe_order(int p, int m, bool bidir) {
  Order o(static_cast<size_t>(p));
  const int H = bidir ? p / 2 : p, M = bidir ? m / 2 : m;
  for (int r = 0; r < p; ++r) {
    auto& acts = o[size_t(r)];
    const int h = bidir ? std::min(r, p - 1 - r) : r;
    const int flip = bidir && r >= p / 2 ? 1 : 0;  // phase -> chunk
    int nF[2] = {0, 0}, nB[2] = {0, 0};             // per phase
    std::deque<Action> w;  // the deferred W, oldest first
    auto mb = [&](int chunk, int k) { return bidir && chunk == 1 ? M + k : k; };
    auto F = [&](int ph) {
      const int c = ph ^ flip;
      acts.push_back({Op::F, mb(c, nF[ph]++), c});
    };
    auto B = [&](int ph, bool zb) {
      const int c = ph ^ flip;
      const Action b{Op::B, mb(c, nB[ph]++), c};
      acts.push_back(b);
      if (zb) w.push_back({Op::W, b.mb, c});
      else acts.push_back({Op::W, b.mb, c});
    };
    auto W = [&] {
      acts.push_back(w.front());
      w.pop_front();
    };
    const int ahead = H - h - 1;
    for (int i = 0; i < 2 * ahead; ++i) F(0);
    for (int i = 0; i <= h; ++i) F(0), F(1);
    for (int i = 0; i < ahead; ++i) B(1, true), W(), F(1);
    for (int i = 0; i < M - 2 * H + h + 1; ++i) F(0), B(1, false), F(1), B(0, false);
    for (int i = 0; i < ahead; ++i) B(1, false), F(1), B(0, false);
    bool zb = false;
    for (int i = 0; i <= h; ++i) {
      if (i == (h + 1) / 2 && h % 2 == 1) zb = true;
      B(1, zb);
      if (i == (h + 1) / 2 && h % 2 == 0) zb = true;
      B(0, zb);
    }
    for (int i = 0; i < ahead; ++i) W(), B(0, true);
    for (int i = 0; i <= h; ++i) W();
    PB_REQUIRE(w.empty() && nF[0] == M && nF[1] == M && nB[0] == M && nB[1] == M, bidir ? "dualpipe" : "dualpipev",
               ": rank ", r, " does not run every action once (internal error)");
  }
  return o;
}

// chimera (Li & Hoefler, "Chimera: Efficiently Training Large-Scale Neural Networks with
// Bidirectional Pipelines", SC'21, arXiv 2107.06925; the authors' chimera_pipeline_rank.py):
// the bidirectional placement of dualpipe (two model copies, micro-batches 0..m/2-1 down from
// rank 0, the rest up from rank p-1), p even, m a multiple of p. A basic unit holds p/2
// micro-batches of each pipeline; in it, at unit slots with F = B = 1, the i-th micro-batch of
// a pipeline runs F at its stage t in slot 2i + t and B in slot 2i + 2p-1-t (a micro-batch
// enters every other slot, turns at the last stage and comes back), so the two pipelines
// fill alternate slots of every rank and never meet: rank r idles p-2 of the unit's 3p-2
// slots. Further units ("direct concatenation", the repository's new pipeline per unit) start
// at the first offset where none of their slots is taken, which is 2p after the previous
// (the unit's busy slots per rank): m/p units take 2m+p-2 slots, the paper's bubble
// (p-2)/(2N+p-2) with N = m. Each rank's order is its slots' order, frozen; unsplit backward.
Order chimera_order(int p, int m) {
  const int half = p / 2, units = m / p;
  std::map<std::pair<int, int64_t>, Action> slot;  // (rank, slot) -> action
  std::vector<std::tuple<int, int64_t, Action>> unit;
  int64_t offset = 0;
  for (int u = 0; u < units; ++u) {
    for (;; ++offset) {
      unit.clear();
      for (int d = 0; d < 2; ++d)
        for (int i = 0; i < half; ++i) {
          const int mb = d * (m / 2) + u * half + i;
          for (int t = 0; t < p; ++t) {
            const int rank = d == 0 ? t : p - 1 - t;
            unit.emplace_back(rank, offset + 2 * i + t, Action{Op::F, mb, d});
            unit.emplace_back(rank, offset + 2 * i + 2 * p - 1 - t, Action{Op::B, mb, d});
          }
        }
      bool free = true;
      for (const auto& [rank, t, a] : unit) free = free && !slot.count({rank, t});
      if (free) break;
    }
    for (const auto& [rank, t, a] : unit) {
      const bool fresh = slot.emplace(std::pair{rank, t}, a).second;
      PB_REQUIRE(fresh, "chimera: two actions in one slot of rank ", rank, " (internal error)");
    }
    offset += 1;
  }
  Order o(static_cast<size_t>(p));
  for (const auto& [key, a] : slot) o[size_t(key.first)].push_back(a);  // map order: by rank, then slot
  return o;
}

// Stages st and st+1 on one rank in a V-shaped schedule: no communication between them.
// (Only V shapes: interleaved with p = 1 keeps its messages from rank 0 to itself.)

// A schedule of a kind with its placement flags and p empty rank lists.
Schedule empty_schedule(const std::string& kind, int p, int v, int m, bool split) {
  Schedule s;
  s.kind = kind;
  s.p = p, s.v = v, s.m = m;
  s.split_backward = split;
  s.vshape = vshape_kind(kind);
  s.bidir = bidir_kind(kind);
  s.ranks.resize(size_t(p));
  return s;
}

// The communication actions around the compute: RecvF before F of a stage > 0, SendF after
// F of a stage < S-1, RecvB before B of a stage < S-1, SendB after B of a stage > 0, none
// across a local boundary (the turn of a V: the neighbouring stage is on this rank). A send
// and the receive of the next compute action are adjacent and so form one batch, as
// Megatron's send_forward_recv_backward / send_backward_recv_forward pairs. Receives are
// posted just before the compute that needs them: a batch waits for its receives, so an
// earlier receive could only delay the compute in between.
Schedule with_comm(const std::string& kind, int p, int v, int m, bool split, const Order& order) {
  Schedule s = empty_schedule(kind, p, v, m, split);
  for (int r = 0; r < p; ++r) {
    auto& out = s.ranks[size_t(r)];
    for (const Action& a : order[size_t(r)]) {
      const int st = s.stage(r, a.chunk);
      const bool from_prev = s.from_prev(st), to_next = s.to_next(st);
      if (a.op == Op::F && from_prev) out.push_back({Op::RecvF, a.mb, a.chunk});
      if (a.op == Op::B && to_next) out.push_back({Op::RecvB, a.mb, a.chunk});
      out.push_back(a);
      if (a.op == Op::F && to_next) out.push_back({Op::SendF, a.mb, a.chunk});
      if (a.op == Op::B && from_prev) out.push_back({Op::SendB, a.mb, a.chunk});
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
  Schedule s = empty_schedule("interleaved", p, v, m, false);
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

// zb-v and zb-h2 with their communication. In a V every pair of neighbouring ranks exchanges
// activations and gradients in both directions (chunk 0 down, chunk 1 up), so receives
// posted just before their compute can deadlock where a send completes only once its
// receive is posted: rank r sends F(k, chunk 0) down while rank r+1 sends F(j, chunk 1)
// up, and each posts its receive only after its next compute. Posting every receive at
// the planned time of its send avoids that, but at other costs makes ranks wait for
// inputs their next computes do not need. So the receives start just before their
// computes and move earlier only where that stricter model needs it: a run of it (batches
// in order, a batch completes once every partner has posted) that stops moves one
// receive of a stopped send into the batch where its rank waits, and goes on. A receive
// moves only into a batch whose compute starts, in the unit-cost plan, no earlier than
// the send: there the rank waits no longer than it idles anyway, so the unit-cost timeline
// (and the idle of p-1) stays as planned. Such a move always exists: following waits
// from any stopped rank, a wait for a send or for an unmovable receive leads to a rank
// stopped at a strictly earlier planned time, which cannot go on forever. Each move posts
// one more receive, so this ends; the final lists run through in that model (its runs are
// confluent: posting never disables a batch), hence also in simulate().
// The same placement serves zb-h2, whose deep warm-up has rank r send activations down
// while rank r+1 sends gradients up in the same step.
Schedule with_planned_comm(const std::string& kind, int p, int v, int m, const Order& order,
                           const std::vector<std::vector<int64_t>>& start, bool split = true) {
  Schedule s = empty_schedule(kind, p, v, m, split);
  const int S = s.stages();
  const size_t P = size_t(p), M = size_t(m);
  auto key = [&](int st, int mb) { return size_t(st) * M + size_t(mb); };
  // Batch b of a rank precedes its compute b: the sends of compute b-1, then the receives
  // posted there. recv_at[rank][b]: those receives; where[op][stage * M + mb]: the batch
  // holding the receive of that receiving stage and micro-batch.
  std::vector<std::vector<std::vector<Action>>> recv_at(P);
  std::vector<int> where[2] = {std::vector<int>(size_t(S) * M, -1), std::vector<int>(size_t(S) * M, -1)};
  for (int r = 0; r < p; ++r) {
    const auto& comp = order[size_t(r)];
    recv_at[size_t(r)].resize(comp.size() + 1);
    for (size_t i = 0; i < comp.size(); ++i) {
      const Action& a = comp[i];
      const int st = s.stage(r, a.chunk);
      if (a.op == Op::F && s.from_prev(st)) {
        recv_at[size_t(r)][i].push_back({Op::RecvF, a.mb, a.chunk});
        where[0][key(st, a.mb)] = int(i);
      }
      if (a.op == Op::B && s.to_next(st)) {
        recv_at[size_t(r)][i].push_back({Op::RecvB, a.mb, a.chunk});
        where[1][key(st, a.mb)] = int(i);
      }
    }
  }
  auto send_after = [&](int r, size_t b, Action* send) {  // the send in batch b, if any
    if (b == 0) return false;
    const Action& a = order[size_t(r)][b - 1];
    const int st = s.stage(r, a.chunk);
    if (a.op == Op::F && s.to_next(st)) return *send = {Op::SendF, a.mb, a.chunk}, true;
    if (a.op == Op::B && s.from_prev(st)) return *send = {Op::SendB, a.mb, a.chunk}, true;
    return false;
  };
  // posted[op - SendF][stage * M + mb], the stage being that of the posting rank.
  std::vector<std::vector<char>> posted(4, std::vector<char>(size_t(S) * M, 0));
  auto flag = [&](int r, const Action& a) -> char& {
    return posted[size_t(int(a.op) - int(Op::SendF))][key(s.stage(r, a.chunk), a.mb)];
  };
  // The partner of a send: receiving rank, the receive, its stage.
  auto receiver = [&](int r, const Action& send, int* q, int* st) {
    *st = s.stage(r, send.chunk) + (send.op == Op::SendF ? 1 : -1);
    *q = s.rank_of(*st);
    return Action{send.op == Op::SendF ? Op::RecvF : Op::RecvB, send.mb, s.chunk_of(*st)};
  };
  auto partner_posted = [&](int r, const Action& a) {
    const int st = s.stage(r, a.chunk);
    switch (a.op) {
      case Op::SendF: return bool(posted[size_t(int(Op::RecvF) - int(Op::SendF))][key(st + 1, a.mb)]);
      case Op::SendB: return bool(posted[size_t(int(Op::RecvB) - int(Op::SendF))][key(st - 1, a.mb)]);
      case Op::RecvF: return bool(posted[0][key(st - 1, a.mb)]);
      default: return bool(posted[size_t(int(Op::SendB) - int(Op::SendF))][key(st + 1, a.mb)]);
    }
  };
  std::vector<size_t> at(P, 0);     // the batch each rank is at (order[r].size() + 1: done)
  std::vector<char> reached(P, 0);  // whether that batch is posted
  // Runs rank r as far as it goes; whether it posted or passed anything.
  auto advance = [&](int r) {
    const size_t R = size_t(r), n = order[R].size();
    bool progress = false;
    while (at[R] <= n) {
      Action send{};
      const bool has_send = send_after(r, at[R], &send);
      if (!reached[R]) {
        if (has_send) flag(r, send) = 1;
        for (const Action& a : recv_at[R][at[R]]) flag(r, a) = 1;
        reached[R] = 1, progress = true;
      }
      bool complete = !has_send || partner_posted(r, send);
      for (const Action& a : recv_at[R][at[R]]) complete = complete && partner_posted(r, a);
      if (!complete) break;
      ++at[R], reached[R] = 0, progress = true;
    }
    return progress;
  };
  // The ranks to run (a rank's batches wait only on its neighbours' posts).
  std::deque<int> work;
  std::vector<char> queued(P, 1);
  for (int r = 0; r < p; ++r) work.push_back(r);
  auto wake = [&](int q) {
    if (q >= 0 && q < p && !queued[size_t(q)]) queued[size_t(q)] = 1, work.push_back(q);
  };
  // Where the run stops, one receive of an unmatched send moves into the batch where its
  // rank waits: among those whose batch ends (its compute starts) in the plan no earlier
  // than the send, so that the rank waits no longer than it idles anyway at unit costs,
  // the one where the rank idles longest (slack); ties: the lowest sending rank. One at a
  // time, as one move often lets other sends through: each receive moved is one more place
  // where other costs can make a rank wait. Candidates carry the run counts of both ranks
  // and are stale once either ran again; whenever a rank runs, it and its neighbours are
  // offered afresh.
  struct Candidate {
    int64_t slack;
    int r;
    uint64_t runs_r, runs_q;
  };
  auto later = [](const Candidate& x, const Candidate& y) {  // heap order: largest slack, lowest rank
    return x.slack != y.slack ? x.slack < y.slack : x.r > y.r;
  };
  std::vector<Candidate> heap;
  std::vector<uint64_t> runs(P, 0);
  auto unmatched = [&](int r, Action* send, int* q, Action* recv, int* st) {
    if (at[size_t(r)] > order[size_t(r)].size() || !send_after(r, at[size_t(r)], send) || partner_posted(r, *send))
      return false;
    *recv = receiver(r, *send, q, st);
    return true;
  };
  auto offer = [&](int r) {
    Action send{}, recv{};
    int q = 0, st = 0;
    if (r < 0 || r >= p || !unmatched(r, &send, &q, &recv, &st)) return;
    const size_t R = size_t(r), Q = size_t(q);
    const int64_t sent_at = start[R][at[R] - 1] + 1;
    const int64_t slack = at[Q] < order[Q].size() ? start[Q][at[Q]] - sent_at : INT64_MAX;
    if (slack < 0) return;  // offered again when either rank runs
    heap.push_back({slack, r, runs[R], runs[Q]});
    std::push_heap(heap.begin(), heap.end(), later);
  };
  int finished = 0;
  for (;;) {
    while (!work.empty()) {
      const int r = work.front();
      work.pop_front();
      queued[size_t(r)] = 0;
      ++runs[size_t(r)];
      const bool was_done = at[size_t(r)] > order[size_t(r)].size();
      if (advance(r)) wake(r - 1), wake(r + 1);
      finished += !was_done && at[size_t(r)] > order[size_t(r)].size();
      offer(r - 1), offer(r), offer(r + 1);
    }
    if (finished == p) break;
    for (;;) {
      PB_REQUIRE(!heap.empty(), kind, ": placing receives: deadlock without a receive to move (internal error)");
      std::pop_heap(heap.begin(), heap.end(), later);
      const Candidate c = heap.back();
      heap.pop_back();
      Action send{}, recv{};
      int q = 0, st = 0;
      if (c.runs_r != runs[size_t(c.r)] || !unmatched(c.r, &send, &q, &recv, &st) || c.runs_q != runs[size_t(q)])
        continue;  // stale
      const size_t Q = size_t(q);
      int& b = where[recv.op == Op::RecvF ? 0 : 1][key(st, recv.mb)];
      PB_REQUIRE(b > int(at[Q]), kind, ": placing receives: rank ", q, " is past the receive of stage ", st,
                 " (internal error)");
      auto& from = recv_at[Q][size_t(b)];
      from.erase(std::find(from.begin(), from.end(), recv));
      recv_at[Q][at[Q]].push_back(recv);
      b = int(at[Q]);
      flag(q, recv) = 1;
      wake(c.r), wake(q);
      break;
    }
  }
  for (int r = 0; r < p; ++r) {
    auto& out = s.ranks[size_t(r)];
    const auto& comp = order[size_t(r)];
    for (size_t b = 0; b <= comp.size(); ++b) {
      Action send{};
      if (send_after(r, b, &send)) out.push_back(send);
      for (const Action& a : recv_at[size_t(r)][b]) out.push_back(a);
      if (b < comp.size()) out.push_back(comp[b]);
    }
  }
  return s;
}

// The start of every compute action of a schedule simulated at unit costs (the plan
// with_planned_comm places receives by).
std::vector<std::vector<int64_t>> unit_plan(const Schedule& s) {
  const SimResult r = simulate(s, default_costs(s));
  std::vector<std::vector<int64_t>> start(size_t(s.p));
  for (int k = 0; k < s.p; ++k)
    for (const TimedAction& t : r.timeline[size_t(k)]) start[size_t(k)].push_back(t.start);
  return start;
}

// Receives placed by with_planned_comm on the plan of the order simulated at unit costs
// (receives just before their computes): the generators without a plan of their own.
Schedule with_unit_plan_comm(const std::string& kind, int p, int v, int m, const Order& order, bool split) {
  return with_planned_comm(kind, p, v, m, order, unit_plan(with_comm(kind, p, v, m, split, order)), split);
}

std::string known_kinds() {
  std::string k;
  for (const auto& n : schedule_kinds()) k += (k.empty() ? "" : ", ") + n;
  return k;
}

}  // namespace

void add_recompute_ahead(Schedule& s) {
  PB_REQUIRE(s.kind == "interleaved", "recompute in advance needs the interleaved schedule, not ", s.kind);
  PB_REQUIRE(!s.recompute_ahead, "recompute in advance: the schedule has its R actions already");
  for (auto& acts : s.ranks) {
    std::vector<Action> out;
    for (size_t i = 0; i < acts.size(); ++i) {
      out.push_back(acts[i]);
      const bool batch_end = !is_compute(acts[i].op) && (i + 1 == acts.size() || is_compute(acts[i + 1].op));
      if (!batch_end) continue;
      for (size_t j = i + 1; j-- > 0 && !is_compute(acts[j].op);)
        if (acts[j].op == Op::RecvB) out.push_back({Op::R, acts[j].mb, acts[j].chunk});
    }
    acts = std::move(out);
  }
  s.recompute_ahead = true;
}

Schedule make_schedule(const std::string& kind, int p, int v, int m, bool recompute_ahead, int update_every,
                       int slices) {
  PB_REQUIRE(slices == 0 || kind == "terapipe", "pipeline schedule ", kind, ": slices (terapipe_slices) are for "
             "terapipe's token slices");
  if (kind == "terapipe") {  // GPipe's order over the units (micro-batch, slice): backward in reverse slice order
    const int K = slices > 0 ? slices : 1;
    PB_REQUIRE(v == 1, "pipeline schedule terapipe has one chunk per rank: v must be 1, got ", v);
    PB_REQUIRE(!recompute_ahead, "recompute in advance needs the interleaved schedule, not terapipe");
    PB_REQUIRE(K >= 1 && m >= 1 && int64_t(m) * K * p <= 1000000, "pipeline schedule terapipe: m = ", m, " x ", K,
               " slices x p = ", p, " must be between 1 and 1000000 units");
    Schedule s = make_schedule("gpipe", p, 1, m * K);
    s.kind = kind;
    s.slices = K;
    return s;
  }
  PB_REQUIRE(update_every == 0 || async_kind(kind), "pipeline schedule ", kind, ": update_every (pp_update_every) is "
             "for pipedream-2bw's weight versions, not for a synchronous schedule");
  if (async_kind(kind)) {  // 1F1B's order, the weights updated on each stage after its B's
    PB_REQUIRE(!recompute_ahead, "recompute in advance needs the interleaved schedule, not ", kind);
    const int g = kind == "pipedream" ? 1 : update_every > 0 ? update_every : p;
    PB_REQUIRE(kind == "pipedream-2bw" || update_every <= 1, "pipeline schedule pipedream updates after every "
               "micro-batch (update_every 1), got update_every ", update_every, " (use pipedream-2bw)");
    PB_REQUIRE(g >= 1 && m % g == 0, "pipeline schedule ", kind, " updates the weights every ", g, " micro-batches",
               update_every > 0 ? "" : " (p, by default)", ", which must divide m = ", m,
               " (set pp_update_every, --update-every)");
    PB_REQUIRE(kind == "pipedream" || g >= p - 1, "pipeline schedule pipedream-2bw keeps two weight versions only "
               "when a version lasts at least p-1 = ", p - 1, " micro-batches (the paper's m >= d), got update_every ", g);
    PB_REQUIRE(v == 1, "pipeline schedule ", kind, " has one chunk per rank: v must be 1, got ", v);
    Schedule s = make_schedule("1f1b", p, v, m);
    s.kind = kind;
    s.update_every = g;
    return s;
  }
  if (recompute_ahead) {
    Schedule s = make_schedule(kind, p, v, m);
    add_recompute_ahead(s);
    return s;
  }
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
  std::vector<std::vector<int64_t>> start;  // of each compute in the unit-cost plan
  if (kind == "dualpipe") {
    PB_REQUIRE(v == 2, "pipeline schedule dualpipe runs two pipelines, one chunk of each per rank: v must be 2, got ", v,
               " (--vpp 2)");
    PB_REQUIRE(p % 2 == 0, "pipeline schedule dualpipe needs an even number of pipeline ranks (rank r and p-1-r hold "
               "the two copies of a stage), got p = ", p);
    PB_REQUIRE(m % 2 == 0 && m >= 2 * p, "pipeline schedule dualpipe needs an even m >= 2p micro-batches (half fed "
               "from each end), got m = ", m, " with p = ", p);
    const Order order = dualpipe_order(p, m, true);
    return with_unit_plan_comm(kind, p, v, m, order, true);
  }
  if (kind == "chimera") {
    PB_REQUIRE(v == 2, "pipeline schedule chimera runs two pipelines, one chunk of each per rank: v must be 2, got ", v,
               " (--vpp 2)");
    PB_REQUIRE(p % 2 == 0, "pipeline schedule chimera needs an even number of pipeline ranks (rank r and p-1-r hold "
               "the two copies of a stage), got p = ", p);
    PB_REQUIRE(m % p == 0, "pipeline schedule chimera needs m a multiple of p (units of p/2 micro-batches per "
               "pipeline), got m = ", m, " with p = ", p);
    const Order order = chimera_order(p, m);
    return with_unit_plan_comm(kind, p, v, m, order, false);
  }
  if (kind == "dualpipev") {
    PB_REQUIRE(v == 2, "pipeline schedule dualpipev places exactly 2 chunks per rank in a V: v must be 2, got ", v,
               " (--vpp 2)");
    PB_REQUIRE(m >= 2 * p, "pipeline schedule dualpipev needs m >= 2p micro-batches (DeepSeek's DualPipeV), got m = ",
               m, " < 2p = ", 2 * p);
    const Order order = dualpipe_order(p, m, false);
    return with_unit_plan_comm(kind, p, v, m, order, true);
  }
  if (kind == "zb-v") {
    PB_REQUIRE(v == 2, "pipeline schedule zb-v places exactly 2 chunks per rank in a V: v must be 2, got ", v,
               " (--vpp 2)");
    const Order order = zb_v_order(p, m, &start);
    return with_planned_comm(kind, p, v, m, order, start);
  }
  PB_REQUIRE(v == 1, "pipeline schedule ", kind, " has one chunk per rank: v must be 1, got ", v,
             " (use interleaved for v > 1)");
  if (kind == "gpipe") return with_comm(kind, p, 1, m, false, gpipe_order(p, m));
  if (kind == "1f1b") return with_comm(kind, p, 1, m, false, one_f_one_b_order(p, m));
  if (kind == "zb-h2") {
    const Order order = zb_h2_order(p, m, &start);
    return with_planned_comm(kind, p, 1, m, order, start);
  }
  return with_comm(kind, p, 1, m, true, zb_h1_order(p, m));
}

Costs default_costs(const Schedule& s) {
  return s.split_backward ? Costs{1, 1, 1, 1} : Costs{1, 2, 0, 1};
}

Bubble analytic_bubble(const Schedule& s, const Costs& c) {
  const int64_t p = s.p, v = s.v, m = s.m;
  if (s.kind == "chimera") {  // Li & Hoefler: (D-2)/(2N+D-2) at F = B; each rank idles (p-2)(F+B)/2
    const int64_t num = (p - 2) * (c.F + c.B);
    return {"(p-2)/(2m+p-2): (p-2)(F+B)/2 idle per rank of m(F+B) busy",
            "Chimera, Li & Hoefler SC'21 (D = p stages, N = m micro-batches), at F = B", num,
            2 * m * (c.F + c.B) + num};
  }
  if (s.kind == "dualpipe") {  // DeepSeek's (PP/2-1)(F&B+B-3W), PP = p, F&B = F+B+W run in turn
    const int64_t num = std::max<int64_t>(0, (p / 2 - 1) * (c.F + 2 * c.B - 2 * c.W));
    return {"(p/2-1)(F&B+B-3W)/(m(F+B+W)+(p/2-1)(F&B+B-3W)), F&B = F+B+W",
            "DualPipe README (deepseek-ai/DualPipe), PP = p; the pair's F and B in turn", num,
            m * (c.F + c.B + c.W) + num};
  }
  if (s.kind == "dualpipev") {  // DeepSeek's (PP/2-1)(F&B+B-3W), PP = 2p stages, F&B = F+B+W run in turn
    const int64_t num = std::max<int64_t>(0, (p - 1) * (c.F + 2 * c.B - 2 * c.W));
    return {"(p-1)(F&B+B-3W)/(2m(F+B+W)+(p-1)(F&B+B-3W)), F&B = F+B+W",
            "DualPipe README (deepseek-ai/DualPipe), PP = 2p stages; the pair's F and B in turn", num,
            2 * m * (c.F + c.B + c.W) + num};
  }
  if (s.vshape) {  // ZB-V: only the start-up of rank p-1, (p-1)F, of 2m(F+B+W) busy per rank
    const int64_t num = (p - 1) * c.F;
    return {"(p-1)F/(2m(F+B+W)+(p-1)F)", "ZB-V, Qi et al. 2023; only rank p-1's start-up, at F = B = W and m >= p",
            num, 2 * m * (c.F + c.B + c.W) + num};
  }
  if (s.kind == "zb-h2") {  // no gap inside a rank's span; r before it, p-1-r after
    const int64_t num = (p - 1) * c.F;
    return {"(p-1)F/(m(F+B+W)+(p-1)F)",
            "ZB-H2, Qi et al. 2023; only the start-up and the tail, at F = B = W and m >= 2p-1", num,
            m * (c.F + c.B + c.W) + num};
  }
  if (s.split_backward) {  // Qi et al. 2023: (p-1)(F+B-W) idle per rank, of m(F+B+W) busy
    const int64_t bubble = std::max<int64_t>(0, (p - 1) * (c.F + c.B - c.W));
    return {"(p-1)(F+B-W)/(m(F+B+W)+(p-1)(F+B-W))", "Qi et al. 2023", bubble, m * (c.F + c.B + c.W) + bubble};
  }
  if (s.kind == "interleaved") return {"(p-1)/(v*m+p-1)", "Narayanan et al. 2021", p - 1, v * m + p - 1};
  if (s.slices > 0)  // GPipe's over m K units of equal cost
    return {"(p-1)/(m K+p-1), m K units", "TeraPipe, Li et al. ICML'21 (equal slices: the units' costs taken "
            "alike; causal attention makes later slices dearer)", p - 1, m + p - 1};
  if (s.update_every > 0)  // without the drain each step ends with, only the first step's start-up
    return {"(p-1)/(m+p-1)", "1F1B's, with the pipeline drained every m micro-batches (PipeDream, Narayanan et al. "
            "2019: none in steady state)", p - 1, m + p - 1};
  return {"(p-1)/(m+p-1)", s.kind == "gpipe" ? "Huang et al. 2019" : "Narayanan et al. 2021", p - 1, m + p - 1};
}

}  // namespace pb::pp
