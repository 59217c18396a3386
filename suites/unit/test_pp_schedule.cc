/* Pipeline schedules as data (optimized/train/pp_schedule.h), checked with exact integer
 * arithmetic (ratios by cross multiplication):
 *   gpipe, 1f1b      every rank idles (p-1)(F+B) of (m+p-1)(F+B): bubble (p-1)/(m+p-1)
 *                    (Huang et al. 2019; Narayanan et al. 2021); in flight on rank 0: m, min(p,m)
 *   interleaved      (p-1)/(v*m+p-1) with per-chunk costs; rank r holds
 *                    min(2(p-r-1)+(v-1)p+1, v*m) chunks in flight (Megatron's warm-up + 1)
 *   zb-h1            F=B=W=1: idle exactly p-1 when m >= p, a third of 1F1B's 3(p-1)
 *                    (Qi et al. 2023); 2p-m-1 when m < p; rank 0's in-flight = 1F1B's, at
 *                    most min(p, m) between F and W on every rank (1F1B's peak)
 *   zb-v             F=B=W=1 per chunk (2 chunks in a V): idle exactly p-1 when m >= p, half
 *                    of zb-h1's and a sixth of 1f1b's with the same layers per rank (stage
 *                    costs twice the chunk's); below zb-h1's when m < p; at most 2 min(p, m)
 *                    chunks between F and W; no message across the V's turn; at other
 *                    costs constant in m from m = 2p, at most zb-h1's but at B = 3F
 * plus action counts, the timeline against every dependency, deadlock-freedom in both send
 * models, the validator against mutations, bad input, and the renderings.
 */
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <tuple>

#include "optimized/train/pp_schedule.h"
#include "reference/model/async_pipeline.h"
#include "reference/common/error.h"
#include "error_of.h"

namespace pb::pp {
namespace {

using test::error_of;  // suites/unit/error_of.h

// Every (micro-batch, chunk) runs exactly one F and one B per rank, one W iff split.
void expect_counts(const Schedule& s) {
  for (int r = 0; r < s.p; ++r) {
    std::map<std::tuple<int, int, int>, int> n;  // (op, mb, chunk)
    size_t ahead = 0;
    for (const Action& a : s.ranks[size_t(r)])
      if (is_compute(a.op)) ++n[{int(a.op), a.mb, a.chunk}];
    for (int c = 0; c < s.v; ++c)
      for (int mb = 0; mb < s.m; ++mb) {
        if (!s.runs(mb, c)) {  // the other pipeline's micro-batch: nothing here
          EXPECT_EQ((n[{int(Op::F), mb, c}]) + (n[{int(Op::B), mb, c}]) + (n[{int(Op::W), mb, c}]), 0);
          continue;
        }
        EXPECT_EQ((n[{int(Op::F), mb, c}]), 1) << s.kind << " rank " << r << " mb " << mb << " chunk " << c;
        EXPECT_EQ((n[{int(Op::B), mb, c}]), 1) << s.kind << " rank " << r << " mb " << mb << " chunk " << c;
        EXPECT_EQ((n[{int(Op::W), mb, c}]), s.split_backward ? 1 : 0) << s.kind << " rank " << r;
        // Recompute in advance: one R for every B that receives its gradient.
        const bool receives = s.stage(r, c) < s.stages() - 1;
        EXPECT_EQ((n[{int(Op::R), mb, c}]), s.recompute_ahead && receives ? 1 : 0) << s.kind << " rank " << r;
        ahead += s.recompute_ahead && receives;
      }
    size_t compute = 0;
    for (const auto& [k, count] : n) compute += size_t(count);
    EXPECT_EQ(compute, size_t(s.m) * size_t(s.bidir ? 1 : s.v) * (s.split_backward ? 3 : 2) + ahead);
  }
}

// The simulated timeline against the dependencies, re-checked here from the times alone.
void expect_timeline_consistent(const Schedule& s, const Costs& c, const SimResult& r) {
  std::map<std::tuple<int, int, int>, TimedAction> at;  // (op, mb, stage)
  for (int k = 0; k < s.p; ++k) {
    int64_t t = 0, busy = 0;
    for (const auto& ta : r.timeline[size_t(k)]) {
      EXPECT_GE(ta.start, t) << "overlap on rank " << k;
      EXPECT_EQ(ta.end - ta.start, ta.action.op == Op::F   ? c.F
                                   : ta.action.op == Op::B ? c.B
                                   : ta.action.op == Op::R ? c.R
                                                           : c.W);
      t = ta.end;
      busy += ta.end - ta.start;
      at[{int(ta.action.op), ta.action.mb, s.stage(k, ta.action.chunk)}] = ta;
    }
    EXPECT_LE(t, r.total);
    EXPECT_EQ(busy, r.busy[size_t(k)]);
    EXPECT_EQ(r.idle[size_t(k)], r.total - busy);
  }
  const int S = s.stages();
  for (int st = 0; st < S; ++st)
    for (int mb = 0; mb < s.m; ++mb) {
      if (!s.runs(mb, s.chunk_of(st))) continue;  // the other pipeline's micro-batch
      const auto f = at.at({int(Op::F), mb, st}), b = at.at({int(Op::B), mb, st});
      if (!s.first_of(st)) {
        EXPECT_GE(f.start, (at.at({int(Op::F), mb, st - 1}).end));
      }
      if (!s.last_of(st)) {
        EXPECT_GE(b.start, (at.at({int(Op::B), mb, st + 1}).end));
      }
      EXPECT_GE(b.start, f.end);
      if (s.split_backward) {
        EXPECT_GE((at.at({int(Op::W), mb, st}).start), b.end);
      }
      if (const auto r = at.find({int(Op::R), mb, st}); r != at.end()) {
        EXPECT_GE(r->second.start, f.end);
        EXPECT_GE(b.start, r->second.end);
      }
    }
}

// The chunks per rank a kind takes in these tests.
int chunks(const std::string& kind) { return kind == "interleaved" || vshape_kind(kind) || bidir_kind(kind) ? 2 : 1; }

// Runs one generated schedule through every generic check; returns the simulation.
SimResult check(const Schedule& s, const Costs& c) {
  expect_counts(s);
  SimResult r = simulate(s, c);
  expect_timeline_consistent(s, c, r);
  EXPECT_NO_THROW(check_rendezvous(s)) << s.kind << " p=" << s.p << " v=" << s.v << " m=" << s.m;
  // NCCL's order matching holds for every kind but the V's and dualpipe's, whose neighbours exchange
  // activations of one chunk and gradients of the other over the same pair in orders that
  // differ: its pipeline transfers go through MPI, which matches by tag (the runner).
  if (!vshape_kind(s.kind) && !bidir_kind(s.kind)) {
    EXPECT_NO_THROW(check_channel_order(s)) << s.kind << " p=" << s.p << " v=" << s.v << " m=" << s.m;
  }
  return r;
}

TEST(PpSchedule, GpipeAnd1F1BIdleIsPMinus1TimesFPlusBOnEveryRank) {
  for (const std::string kind : {"gpipe", "1f1b"})
    for (int p = 1; p <= 8; ++p)
      for (int m = 1; m <= 16; ++m)
        for (const Costs& c : {Costs{1, 2, 0}, Costs{1, 1, 0}, Costs{2, 3, 0}}) {
          const Schedule s = make_schedule(kind, p, 1, m);
          EXPECT_FALSE(s.split_backward);
          const SimResult r = check(s, c);
          EXPECT_EQ(r.total, (m + p - 1) * (c.F + c.B)) << kind << " p=" << p << " m=" << m;
          for (int k = 0; k < p; ++k) {
            EXPECT_EQ(r.idle[size_t(k)], (p - 1) * (c.F + c.B)) << kind << " p=" << p << " m=" << m << " rank " << k;
            // idle/total == (p-1)/(m+p-1)
            EXPECT_EQ(r.idle[size_t(k)] * (m + p - 1), int64_t(p - 1) * r.total);
            EXPECT_EQ(r.peak_pending_w[size_t(k)], 0);
            EXPECT_EQ(r.peak_in_flight[size_t(k)], kind == "gpipe" ? m : std::min(p - k, m))
                << kind << " p=" << p << " m=" << m << " rank " << k;
          }
        }
}

TEST(PpSchedule, InterleavedBubbleIsPMinus1OverVMPlusPMinus1) {
  for (int v : {2, 3, 4})
    for (int p = 1; p <= 6; ++p)
      for (int m = p; m <= 4 * p; m += p)
        for (const Costs& c : {Costs{1, 2, 0}, Costs{2, 3, 0}}) {
          const Schedule s = make_schedule("interleaved", p, v, m);
          const SimResult r = check(s, c);
          EXPECT_EQ(r.total, (int64_t(v) * m + p - 1) * (c.F + c.B)) << "p=" << p << " v=" << v << " m=" << m;
          for (int k = 0; k < p; ++k) {
            EXPECT_EQ(r.idle[size_t(k)] * (int64_t(v) * m + p - 1), int64_t(p - 1) * r.total)
                << "p=" << p << " v=" << v << " m=" << m << " rank " << k;
            // Megatron's warm-up (p-k-1)*2 + (v-1)*p forwards, then one more before the first B.
            EXPECT_EQ(r.peak_in_flight[size_t(k)], std::min(2 * (p - k - 1) + (v - 1) * p + 1, m * v))
                << "p=" << p << " v=" << v << " m=" << m << " rank " << k;
          }
        }
}

// Recompute in advance (MindSpeed's ripipe): every B that receives its output gradient has
// its R right after the batch that posts that receive (the model's last stage none); the
// schedule passes every check; with the recompute moved out of B (B + R = the plain B with
// its recompute) the makespan is at most the plain schedule's, and shorter wherever R runs
// in time the rank would have waited.
TEST(PpSchedule, RecomputeInAdvanceRunsEachRecomputeRightAfterItsGradientsReceiveIsPosted) {
  int shorter = 0;
  for (int v : {2, 3})
    for (int p = 2; p <= 6; ++p)
      for (int m = p; m <= 3 * p; m += p) {
        const Schedule plain = make_schedule("interleaved", p, v, m);
        const Schedule s = make_schedule("interleaved", p, v, m, true);
        EXPECT_TRUE(s.recompute_ahead);
        const SimResult r = check(s, {1, 2, 0, 1});
        for (int k = 0; k < p; ++k) {
          const auto& acts = s.ranks[size_t(k)];
          std::vector<Action> without;
          for (size_t i = 0; i < acts.size(); ++i) {
            if (acts[i].op != Op::R) {
              without.push_back(acts[i]);
              continue;
            }
            // Right after a batch holding the receive of its gradient.
            ASSERT_GT(i, 0u);
            bool found = false;
            for (size_t j = i; j-- > 0 && (!is_compute(acts[j].op) || acts[j].op == Op::R);)
              found = found || (acts[j].op == Op::RecvB && acts[j].mb == acts[i].mb && acts[j].chunk == acts[i].chunk);
            EXPECT_TRUE(found) << "p=" << p << " v=" << v << " m=" << m << " rank " << k << " action " << i;
          }
          EXPECT_EQ(without, plain.ranks[size_t(k)]);  // otherwise the plain schedule's order
        }
        const SimResult base = simulate(plain, {1, 3, 0});  // the recompute inside B
        EXPECT_LE(r.total, base.total) << "p=" << p << " v=" << v << " m=" << m;
        shorter += r.total < base.total;
      }
  EXPECT_GT(shorter, 0);
  EXPECT_NE(error_of([] { make_schedule("1f1b", 2, 1, 4, true); }).find("needs the interleaved schedule"),
            std::string::npos);
}

// The most micro-batches of rank r between their F and their W.
int peak_f_to_w(const Schedule& s, int r) {
  int held = 0, peak = 0;
  for (const Action& a : s.ranks[size_t(r)]) {
    held += a.op == Op::F ? 1 : a.op == Op::W ? -1 : 0;
    peak = std::max(peak, held);
  }
  return peak;
}

TEST(PpSchedule, ZeroBubbleH1IdlesAThirdOf1F1B) {
  for (int p = 1; p <= 10; ++p)
    for (int m = 1; m <= 4 * p + 3; ++m) {
      const Schedule s = make_schedule("zb-h1", p, 1, m);
      EXPECT_TRUE(s.split_backward);
      const Costs unit = default_costs(s);
      EXPECT_EQ(unit.F, 1);
      EXPECT_EQ(unit.B, 1);
      EXPECT_EQ(unit.W, 1);
      const SimResult r = check(s, unit);
      // 1F1B with the same work per micro-batch: F = 1, B = B + W = 2.
      const SimResult base = simulate(make_schedule("1f1b", p, 1, m), Costs{1, 2, 0});
      EXPECT_EQ(r.peak_in_flight[0], base.peak_in_flight[0]) << "p=" << p << " m=" << m;
      // 1F1B's activation memory: rank 0 holds min(p, m) micro-batches; zb-h1 holds at most
      // that many between F and W on every rank, exactly that many on the most held rank.
      EXPECT_EQ(*std::max_element(r.peak_held.begin(), r.peak_held.end()), base.peak_in_flight[0])
          << "p=" << p << " m=" << m;
      for (int k = 0; k < p; ++k) {
        EXPECT_LE(r.peak_in_flight[size_t(k)], p - k);
        EXPECT_EQ(peak_f_to_w(s, k), r.peak_held[size_t(k)]) << "p=" << p << " m=" << m << " rank " << k;
        EXPECT_LE(r.peak_held[size_t(k)], std::min(p, m)) << "p=" << p << " m=" << m << " rank " << k;
        if (m >= p) {
          EXPECT_LE(3 * r.idle[size_t(k)], base.idle[size_t(k)]) << "p=" << p << " m=" << m << " rank " << k;
          EXPECT_EQ(r.idle[size_t(k)], p - 1) << "p=" << p << " m=" << m << " rank " << k;  // exactly
          EXPECT_EQ(r.total, 3 * m + p - 1);
        } else {
          EXPECT_EQ(r.idle[size_t(k)], 2 * p - m - 1) << "p=" << p << " m=" << m << " rank " << k;
          EXPECT_LT(r.idle[size_t(k)], base.idle[size_t(k)]);
        }
      }
    }
}

// ZB-H2 (Qi et al. 2023, Sec. 2.2): "near zero bubble" with up to twice 1F1B's activation
// memory. At F = B = W, m >= 2p-1: no rank idles between its first and its last action (the
// paper's zero: its p-1 idle units are rank r's r before its first F and p-1-r after its
// last W, a parallelogram that consecutive steps fill once the optimizer step does not
// synchronize the ranks; the paper's bubble (p-1)(T_F+T_B-2T_W) counts these gaps); rank r
// runs 2(p-r)-1 warm-up forwards and holds as many between F and B (the paper's
// (2p-2i+1) M_B of worker i = r+1); at most 2p-1 micro-batches
// lie between F and W on every rank, exactly 2p-1 on rank 0 (1F1B's rank 0: p). The
// makespan 3m+p-1 equals zb-h1's, whose ranks idle inside their span instead (rank 0: p-1).
TEST(PpSchedule, ZeroBubbleH2HasNoGapInsideAnyRanksSpan) {
  for (int p = 1; p <= 10; ++p)
    for (int m = 1; m <= 6 * p + 3; ++m) {
      const Schedule s = make_schedule("zb-h2", p, 1, m);
      EXPECT_TRUE(s.split_backward);
      EXPECT_FALSE(s.vshape);
      const Costs unit = default_costs(s);
      const SimResult r = check(s, unit);
      const SimResult h1 = simulate(make_schedule("zb-h1", p, 1, m), unit);
      for (int k = 0; k < p; ++k) {
        const size_t K = size_t(k);
        int warm = 0;  // forwards before the first B
        for (const Action& a : s.ranks[K]) {
          if (a.op == Op::B) break;
          warm += a.op == Op::F;
        }
        EXPECT_EQ(warm, std::min(2 * (p - k) - 1, m)) << "p=" << p << " m=" << m << " rank " << k;
        EXPECT_LE(r.peak_held[K], 2 * p - 1) << "p=" << p << " m=" << m << " rank " << k;
        // The paper's activation of worker i = k+1: (2p-2i+1) M_B in flight between F and B.
        EXPECT_EQ(r.peak_in_flight[K], std::min(2 * (p - k) - 1, m)) << "p=" << p << " m=" << m << " rank " << k;
        EXPECT_EQ(r.peak_held[K], peak_f_to_w(s, k));
        EXPECT_EQ(r.timeline[K].front().start, k);  // the start-up: r forwards upstream
        if (m >= 2 * p - 1) {
          EXPECT_EQ(r.gaps[K], 0) << "p=" << p << " m=" << m << " rank " << k;
          EXPECT_EQ(r.idle[K], p - 1) << "p=" << p << " m=" << m << " rank " << k;
          EXPECT_EQ(r.timeline[K].back().end, k + 3 * m);
          EXPECT_EQ(h1.gaps[K], p - 1 - k) << "p=" << p << " m=" << m << " rank " << k;
        }
      }
      if (m >= 2 * p - 1) {
        EXPECT_EQ(r.total, 3 * m + p - 1);
        EXPECT_EQ(r.total, h1.total);
        EXPECT_EQ(r.peak_held[0], 2 * p - 1);
        const Bubble b = analytic_bubble(s, unit);
        for (int k = 0; k < p; ++k) EXPECT_EQ(r.idle[size_t(k)] * b.den, b.num * r.total);
      }
    }
}

// DualPipeV (DeepSeek's DualPipe repository, README table, PP = 2p stages on p ranks):
// bubble (PP/2-1)(F&B+B-3W) = p-1 at F = B = W with the pair's F, B and W run in turn
// (F&B = 3): every rank idles exactly p-1, p-1-r of it inside rank r's span; activation
// "PP+1" against 1F1B's "PP": exactly 2p+1 chunks between F and W, one more than 1F1B's
// p micro-batches of two chunks on the same ranks and layers, and zb-v's 2p.
TEST(PpSchedule, DualPipeVIdlesPMinus1AndHoldsOneChunkMoreThan1F1B) {
  for (int p = 1; p <= 8; ++p)
    for (int m = 2 * p; m <= 4 * p + 3; ++m) {
      const Schedule s = make_schedule("dualpipev", p, 2, m);
      EXPECT_TRUE(s.vshape);
      EXPECT_TRUE(s.split_backward);
      const Costs unit = default_costs(s);
      const SimResult r = check(s, unit);
      const SimResult zbv = simulate(make_schedule("zb-v", p, 2, m), unit);
      EXPECT_EQ(r.total, 6 * m + p - 1) << "p=" << p << " m=" << m;
      EXPECT_EQ(r.total, zbv.total) << "p=" << p << " m=" << m;
      const Bubble b = analytic_bubble(s, unit);
      for (int k = 0; k < p; ++k) {
        const size_t K = size_t(k);
        EXPECT_EQ(r.idle[K], p - 1) << "p=" << p << " m=" << m << " rank " << k;
        EXPECT_EQ(r.gaps[K], p - 1 - k) << "p=" << p << " m=" << m << " rank " << k;
        EXPECT_EQ(r.idle[K] * b.den, b.num * r.total);
        EXPECT_EQ(r.peak_held[K], peak_f_to_w(s, k));
        EXPECT_EQ(r.peak_held[K], 2 * p + 1) << "p=" << p << " m=" << m << " rank " << k;
        EXPECT_LE(zbv.peak_held[K], 2 * p);
      }
      // The phases' first actions: rank r opens with 2(p-r-1) + 1 forwards of chunk 0.
      for (int k = 0; k < p; ++k) {
        int lead = 0;
        for (const Action& a : s.ranks[size_t(k)]) {
          if (!is_compute(a.op)) continue;
          if (a.op != Op::F || a.chunk != 0) break;
          ++lead;
        }
        EXPECT_EQ(lead, 2 * (p - k - 1) + 1) << "p=" << p << " m=" << m << " rank " << k;
      }
    }
}

// DualPipe (the DualPipe README, PP = p ranks): bubble (PP/2-1)(F&B+B-3W) = p/2-1 at F = B = W
// with the pair run in turn, half of DualPipeV's p-1 (which has half the layers per chunk);
// activation "PP+1": at most p+1 stage-micro-batches between F and W on every rank, against
// 1F1B's p on rank 0; parameters twice (two copies of the model: every stage on ranks r and
// p-1-r). Every micro-batch runs in one pipeline: 0..m/2-1 down from rank 0, the rest up.
TEST(PpSchedule, DualPipeIdlesHalfOfPAndHoldsPPlusOne) {
  for (int p = 2; p <= 10; p += 2)
    for (int m = 2 * p; m <= 4 * p + 4; m += 2) {
      const Schedule s = make_schedule("dualpipe", p, 2, m);
      EXPECT_TRUE(s.bidir);
      EXPECT_FALSE(s.vshape);
      EXPECT_TRUE(s.split_backward);
      const Costs unit = default_costs(s);
      const SimResult r = check(s, unit);
      EXPECT_EQ(r.total, 3 * m + p / 2 - 1) << "p=" << p << " m=" << m;
      const Bubble b = analytic_bubble(s, unit);
      for (int k = 0; k < p; ++k) {
        const size_t K = size_t(k);
        EXPECT_EQ(r.idle[K], p / 2 - 1) << "p=" << p << " m=" << m << " rank " << k;
        EXPECT_EQ(r.idle[K] * b.den, b.num * r.total);
        EXPECT_EQ(r.peak_held[K], p + 1) << "p=" << p << " m=" << m << " rank " << k;
        EXPECT_EQ(r.peak_held[K], peak_f_to_w(s, k));
        // rank r computes the down pipeline's stage r and the up pipeline's stage p-1-r
        for (const Action& a : s.ranks[K])
          if (is_compute(a.op)) {
            EXPECT_EQ(a.chunk, a.mb < m / 2 ? 0 : 1);
          }
      }
      // The ends: rank 0 starts the down pipeline and ends the up one (its loss), rank p-1 the reverse.
      EXPECT_TRUE(s.first_of(s.stage(0, 0)) && s.last_of(s.stage(0, 1)));
      EXPECT_TRUE(s.first_of(s.stage(p - 1, 1)) && s.last_of(s.stage(p - 1, 0)));
    }
}

// Chimera (Li & Hoefler SC'21, Table 2 and Sec. 3): bubble ratio (D-2)/(2N+D-2) with D = p
// stages and N = m micro-batches, at F = B: every rank idles exactly p-2 of 2m+p-2 for every
// m a multiple of p (units concatenated at an offset of 2p), against 1F1B's (p-1)/(m+p-1):
// 2(p-1) of 2m+2(p-1) at the same costs, so p-2 is "up to 50 % fewer bubbles"; every micro-
// batch runs in one pipeline, rank 0 hosts the down pipeline's first stage and the up one's
// last. At the default costs (B = 2F) the frozen order still runs, idling more.
TEST(PpSchedule, ChimeraIdlesPMinus2OfTwoMPlusPMinus2AtEqualCosts) {
  for (int p = 2; p <= 10; p += 2)
    for (int m = p; m <= 5 * p; m += p) {
      const Schedule s = make_schedule("chimera", p, 2, m);
      EXPECT_TRUE(s.bidir);
      EXPECT_FALSE(s.split_backward);
      const Costs equal{1, 1, 0};
      const SimResult r = check(s, equal);
      EXPECT_EQ(r.total, 2 * m + p - 2) << "p=" << p << " m=" << m;
      const SimResult base = simulate(make_schedule("1f1b", p, 1, m), equal);
      const Bubble b = analytic_bubble(s, equal);
      for (int k = 0; k < p; ++k) {
        const size_t K = size_t(k);
        EXPECT_EQ(r.idle[K], p - 2) << "p=" << p << " m=" << m << " rank " << k;
        EXPECT_EQ(r.idle[K] * b.den, b.num * r.total);
        EXPECT_EQ(base.idle[K], 2 * (p - 1));
        for (const Action& a : s.ranks[K])
          if (is_compute(a.op)) {
            EXPECT_EQ(a.chunk, a.mb < m / 2 ? 0 : 1);
          }
      }
      check(s, default_costs(s));  // B = 2F: the same order, valid and deadlock-free
    }
}

TEST(PpSchedule, ZeroBubbleVIdlesPMinus1WithTwoPChunksInFlight) {
  for (int p = 1; p <= 8; ++p)
    for (int m = 1; m <= 4 * p + 3; ++m) {
      const Schedule s = make_schedule("zb-v", p, 2, m);
      EXPECT_TRUE(s.vshape);
      EXPECT_TRUE(s.split_backward);
      EXPECT_EQ(s.v, 2);
      const Costs unit = default_costs(s);
      EXPECT_EQ(unit.F, 1);
      EXPECT_EQ(unit.B, 1);
      EXPECT_EQ(unit.W, 1);
      const SimResult r = check(s, unit);  // m F, B, W per chunk; every dependency; both send models
      // The same layers per rank as one stage: per-stage costs twice the chunk's.
      const SimResult h1 = simulate(make_schedule("zb-h1", p, 1, m), Costs{2, 2, 2});
      const SimResult base = simulate(make_schedule("1f1b", p, 1, m), Costs{2, 4, 0});
      for (int k = 0; k < p; ++k) {
        const size_t K = size_t(k);
        // 1F1B's activation memory: p micro-batches of full ranks = 2p chunks between F
        // and W (what a W frees is held from its F), and 2 min(p, m) in general.
        EXPECT_EQ(peak_f_to_w(s, k), r.peak_held[K]) << "p=" << p << " m=" << m << " rank " << k;
        EXPECT_LE(r.peak_held[K], 2 * base.peak_in_flight[0]) << "p=" << p << " m=" << m << " rank " << k;
        EXPECT_LE(r.peak_held[K], 2 * p);
        EXPECT_LE(r.peak_in_flight[K], r.peak_held[K]);
        if (m >= p) {
          // Exactly rank p-1's start-up (the p-1 forwards before its first): the least
          // possible, as every rank does the same work 6m.
          EXPECT_EQ(r.idle[K], p - 1) << "p=" << p << " m=" << m << " rank " << k;
          EXPECT_EQ(2 * r.idle[K], h1.idle[K]) << "p=" << p << " m=" << m << " rank " << k;
          EXPECT_EQ(6 * r.idle[K], base.idle[K]) << "p=" << p << " m=" << m << " rank " << k;
        } else {
          EXPECT_LT(r.idle[K], h1.idle[K]) << "p=" << p << " m=" << m << " rank " << k;
        }
      }
      if (m >= p) {
        EXPECT_EQ(r.total, 6 * m + p - 1);
      }
      // The most held rank holds exactly 1F1B's 2 min(p, m) chunks.
      EXPECT_EQ(*std::max_element(r.peak_held.begin(), r.peak_held.end()), 2 * base.peak_in_flight[0])
          << "p=" << p << " m=" << m;
      for (int k = 0; k < p; ++k) EXPECT_EQ(r.timeline[size_t(k)].front().start, k);  // rank k waits k forwards
    }
}

TEST(PpSchedule, ZeroBubbleVHasNoMessageAcrossTheTurn) {
  {  // the V placement: p = 4, 8 stages
    Schedule v;
    v.p = 4, v.v = 2, v.vshape = true;
    EXPECT_EQ(v.stage(0, 1), 7);
    EXPECT_EQ(v.stage(3, 1), 4);
    EXPECT_EQ(v.rank_of(4), 3);
    EXPECT_EQ(v.chunk_of(4), 1);
    EXPECT_EQ(v.rank_of(7), 0);
    for (int st = 0; st + 1 < v.stages(); ++st) EXPECT_EQ(v.local_boundary(st), st == 3) << st;
  }
  for (int p = 1; p <= 6; ++p)
    for (int m : {1, p, 2 * p + 1}) {
      const Schedule s = make_schedule("zb-v", p, 2, m);
      for (int r = 0; r < p; ++r) {
        int messages = 0;
        for (const Action& a : s.ranks[size_t(r)]) {
          if (is_compute(a.op)) continue;
          ++messages;
          const int st = s.stage(r, a.chunk), peer = a.op == Op::RecvF || a.op == Op::SendB ? st - 1 : st + 1;
          EXPECT_FALSE(s.local_boundary(std::min(st, peer))) << "p=" << p << " rank " << r << " " << op_name(a.op);
          EXPECT_NE(s.rank_of(peer), r);
        }
        // Per chunk and micro-batch one receive and one send each way, except towards the
        // ends of the model (rank 0) and across the turn (rank p-1).
        EXPECT_EQ(messages, 4 * m * ((r > 0) + (r < p - 1))) << "p=" << p << " m=" << m << " rank " << r;
      }
    }
  // Outside a V nothing changes: interleaved with p = 1 keeps its messages to itself.
  const Schedule il = make_schedule("interleaved", 1, 2, 3);
  EXPECT_FALSE(il.vshape);
  EXPECT_EQ(std::count(il.ranks[0].begin(), il.ranks[0].end(), Action{Op::SendF, 1, 0}), 1);
}

TEST(PpSchedule, ZeroBubbleVAtOtherCostsStaysBelowZeroBubbleH1) {
  // The order is planned at unit costs. At others its idle stops growing with m (no
  // bubble in the steady state) and stays at or below zb-h1's with the same per-stage
  // costs and the same activation memory. Not at B = 3F = 3W for p >= 5 (p = 8, m = 2p:
  // 56 against 42): there the receives that check_rendezvous() needs posted early make
  // their batches wait (the compute order alone, receives just before their computes,
  // idles 44); see ZeroBubbleVAtBThreeTimesF.
  for (const Costs& c : {Costs{1, 2, 1}, Costs{2, 3, 2}, Costs{1, 1, 2}, Costs{2, 2, 1}, Costs{2, 1, 1}, Costs{3, 5, 2}})
    for (int p = 2; p <= 6; ++p) {
      std::vector<int64_t> idle;
      for (int m : {p, 2 * p, 3 * p, 4 * p}) {
        const Schedule s = make_schedule("zb-v", p, 2, m);
        const SimResult r = simulate(s, c);
        expect_timeline_consistent(s, c, r);
        const SimResult h1 = simulate(make_schedule("zb-h1", p, 1, m), Costs{2 * c.F, 2 * c.B, 2 * c.W});
        for (int k = 0; k < p; ++k)
          EXPECT_LE(r.idle[size_t(k)], h1.idle[size_t(k)])
              << "costs " << c.F << "," << c.B << "," << c.W << " p=" << p << " m=" << m << " rank " << k;
        idle.push_back(*std::max_element(r.idle.begin(), r.idle.end()));
      }
      EXPECT_EQ(idle[1], idle[3]) << "costs " << c.F << "," << c.B << "," << c.W << " p=" << p;  // m = 2p, 4p
    }
}

TEST(PpSchedule, ZeroBubbleVAtBThreeTimesF) {
  // B = 3F = 3W: still no bubble in the steady state and below 1f1b's; above zb-h1's from
  // p = 5 (ZeroBubbleVAtOtherCostsStaysBelowZeroBubbleH1 says why).
  const Costs c{1, 3, 1};
  for (int p = 2; p <= 6; ++p) {
    std::vector<int64_t> idle;
    for (int m : {2 * p, 4 * p}) {
      const SimResult r = simulate(make_schedule("zb-v", p, 2, m), c);
      const SimResult base = simulate(make_schedule("1f1b", p, 1, m), Costs{2 * c.F, 2 * (c.B + c.W), 0});
      for (int k = 0; k < p; ++k) EXPECT_LT(r.idle[size_t(k)], base.idle[size_t(k)]) << "p=" << p << " m=" << m;
      idle.push_back(*std::max_element(r.idle.begin(), r.idle.end()));
    }
    EXPECT_EQ(idle[0], idle[1]) << "p=" << p;
  }
}

TEST(PpSchedule, CommunicationFollowsTheStages) {
  // Every compute action of a stage that talks to a neighbour has its send/receive, and the
  // send of one compute and the receive of the next share a batch (Megatron's pairing).
  const Schedule s = make_schedule("1f1b", 4, 1, 8);
  int paired = 0;
  for (int r = 0; r < s.p; ++r) {
    const auto& a = s.ranks[size_t(r)];
    EXPECT_EQ(a.size(), size_t(8 * 2 + 8 * ((r > 0) + (r < 3)) * 2)) << "rank " << r;
    for (size_t i = 0; i + 1 < a.size(); ++i) paired += a[i].op == Op::SendF && a[i + 1].op == Op::RecvB;
    if (r > 0) {
      EXPECT_EQ(a.front(), (Action{Op::RecvF, 0, 0}));
    }
    if (r == 0) {
      EXPECT_EQ(a.front(), (Action{Op::F, 0, 0}));
    }
  }
  EXPECT_GT(paired, 0);
  EXPECT_EQ(op_name(Op::SendB), std::string("SendB"));
  EXPECT_EQ(schedule_kinds(), (std::vector<std::string>{"gpipe", "1f1b", "interleaved", "zb-h1", "zb-h2", "zb-v", "dualpipev", "dualpipe",
                                                     "chimera", "pipedream", "pipedream-2bw", "terapipe"}));
  // Generation is deterministic; only zb-v and dualpipev place their chunks in a V.
  for (const std::string& kind : schedule_kinds()) {
    const int v = chunks(kind);
    EXPECT_EQ(make_schedule(kind, 4, v, 8).ranks, make_schedule(kind, 4, v, 8).ranks);
    EXPECT_EQ(make_schedule(kind, 4, v, 8).vshape, kind == "zb-v" || kind == "dualpipev") << kind;
    EXPECT_EQ(make_schedule(kind, 4, v, 8).bidir, kind == "dualpipe" || kind == "chimera") << kind;
    EXPECT_EQ(bidir_kind(kind), kind == "dualpipe" || kind == "chimera") << kind;
    EXPECT_EQ(vshape_kind(kind), kind == "zb-v" || kind == "dualpipev") << kind;
    EXPECT_EQ(async_kind(kind), kind == "pipedream" || kind == "pipedream-2bw") << kind;
  }
}

// ---- the validator against mutations ----

size_t find(const std::vector<Action>& acts, Action a) {
  const auto it = std::find(acts.begin(), acts.end(), a);
  EXPECT_NE(it, acts.end());
  return size_t(it - acts.begin());
}

TEST(PpScheduleValidator, CatchesDroppedActions) {
  for (const std::string& kind : schedule_kinds()) {
    const Schedule good = make_schedule(kind, 4, chunks(kind), 8);
    for (Op op : {Op::F, Op::B, Op::W, Op::RecvF, Op::SendF, Op::RecvB, Op::SendB}) {
      if (op == Op::W && !good.split_backward) continue;
      Schedule s = good;
      auto& acts = s.ranks[1];
      acts.erase(acts.begin() + long(find(acts, {op, 3, 0})));
      const std::string e = error_of([&] { simulate(s, default_costs(s)); });
      EXPECT_NE(e, "") << kind << " without " << op_name(op);
      EXPECT_EQ(e.find('\n'), std::string::npos);
      if (op == Op::SendF) {
        EXPECT_NE(e.find("has no matching SendF"), std::string::npos) << e;
      }
      if (op == Op::F || op == Op::B || op == Op::W) {
        EXPECT_NE(e.find("missing"), std::string::npos) << e;
      }
    }
  }
}

TEST(PpScheduleValidator, CatchesOrderDuplicatesAndRange) {
  const Schedule good = make_schedule("1f1b", 4, 1, 8);
  {  // B before its own F
    Schedule s = good;
    auto& a = s.ranks[2];
    std::swap(a[find(a, {Op::F, 1, 0})], a[find(a, {Op::B, 1, 0})]);
    EXPECT_NE(error_of([&] { simulate(s, default_costs(s)); }).find("comes before F(mb 1)"), std::string::npos);
  }
  {  // a send before the compute that produces it
    Schedule s = good;
    auto& a = s.ranks[0];
    std::swap(a[find(a, {Op::F, 2, 0})], a[find(a, {Op::SendF, 2, 0})]);
    EXPECT_NE(error_of([&] { simulate(s, default_costs(s)); }), "");
  }
  {  // a duplicate
    Schedule s = good;
    s.ranks[3].push_back({Op::B, 0, 0});
    EXPECT_NE(error_of([&] { simulate(s, default_costs(s)); }).find("appears twice"), std::string::npos);
  }
  {  // a receive that has no send: stage 0 receives no activation
    Schedule s = good;
    s.ranks[0].insert(s.ranks[0].begin(), {Op::RecvF, 0, 0});
    EXPECT_NE(error_of([&] { simulate(s, default_costs(s)); }).find("which is the first of its pipeline"), std::string::npos);
  }
  {  // out of range, W without split backward, wrong rank count, bad costs
    Schedule s = good;
    s.ranks[1].push_back({Op::F, 8, 0});
    EXPECT_NE(error_of([&] { simulate(s, default_costs(s)); }).find("out of range"), std::string::npos);
    s = good;
    s.ranks[1].push_back({Op::W, 0, 0});
    EXPECT_NE(error_of([&] { simulate(s, default_costs(s)); }).find("without split backward"), std::string::npos);
    s = good;
    s.ranks.pop_back();
    EXPECT_NE(error_of([&] { simulate(s, default_costs(s)); }), "");
    EXPECT_NE(error_of([&] { simulate(good, Costs{0, 2, 0}); }), "");
    const Schedule zb = make_schedule("zb-h1", 2, 1, 2);
    EXPECT_NE(error_of([&] { simulate(zb, Costs{1, 1, 0}); }), "");
  }
}

TEST(PpScheduleValidator, CatchesDeadlocks) {
  {  // 1f1b rank 1 sends micro-batch 0's activation only after its backward: rank 1 waits
     // for a gradient that needs that activation downstream.
    Schedule s = make_schedule("1f1b", 4, 1, 8);
    auto& a = s.ranks[1];
    a.erase(a.begin() + long(find(a, {Op::SendF, 0, 0})));
    a.insert(a.begin() + long(find(a, {Op::B, 0, 0})) + 1, {Op::SendF, 0, 0});
    const std::string e = error_of([&] { simulate(s, default_costs(s)); });
    EXPECT_NE(e.find("deadlock"), std::string::npos) << e;
    EXPECT_NE(e.find("rank 1 waits at RecvB(mb 0)"), std::string::npos) << e;
  }
  {  // gpipe on rank 0 with 1f1b-style interleaving, gpipe on rank 1: rank 0 waits for
     // B0 before sending F1, rank 1 for F1 before starting the backwards.
    Schedule s = make_schedule("gpipe", 2, 1, 2);
    s.ranks[0] = {{Op::F, 0, 0}, {Op::SendF, 0, 0}, {Op::RecvB, 0, 0}, {Op::B, 0, 0},
                  {Op::F, 1, 0}, {Op::SendF, 1, 0}, {Op::RecvB, 1, 0}, {Op::B, 1, 0}};
    const std::string e = error_of([&] { simulate(s, default_costs(s)); });
    EXPECT_NE(e.find("deadlock"), std::string::npos) << e;
    EXPECT_NE(e.find("rank 0 waits at RecvB(mb 0)"), std::string::npos) << e;
  }
  {  // interleaved with p = 1: a chunk's input sent to itself after it is awaited
    Schedule s = make_schedule("interleaved", 1, 2, 1);
    auto& a = s.ranks[0];
    a.erase(a.begin() + long(find(a, {Op::SendF, 0, 0})));
    a.push_back({Op::SendF, 0, 0});
    EXPECT_NE(error_of([&] { simulate(s, default_costs(s)); }), "");
  }
}

TEST(PpScheduleValidator, CatchesMessagesAndOrderAcrossTheTurn) {
  const Schedule good = make_schedule("zb-v", 3, 2, 4);  // the turn: stages 2 | 3 on rank 2
  auto error = [](const Schedule& s) {
    const std::string e = error_of([&] { simulate(s, default_costs(s)); });
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
    return e;
  };
  {  // a message across the turn, either way
    Schedule s = good;
    auto& a = s.ranks[2];
    a.insert(a.begin() + long(find(a, {Op::F, 0, 0})) + 1, {Op::SendF, 0, 0});
    EXPECT_NE(error(s).find("SendF(mb 0, chunk 0) at stage 2, across the local boundary to stage 3"), std::string::npos)
        << error(s);
  }
  {
    Schedule s = good;
    auto& a = s.ranks[2];
    a.insert(a.begin() + long(find(a, {Op::F, 1, 1})), {Op::RecvF, 1, 1});
    EXPECT_NE(error(s).find("RecvF(mb 1, chunk 1) at stage 3, across the local boundary to stage 2"),
              std::string::npos)
        << error(s);
  }
  {  // the second chunk's forward before the first's, on the turning rank
    Schedule s = good;
    auto& a = s.ranks[2];
    std::swap(a[find(a, {Op::F, 1, 0})], a[find(a, {Op::F, 1, 1})]);
    const std::string e = error(s);
    EXPECT_NE(e.find("F(mb 1, chunk 0)"), std::string::npos) << e;
    EXPECT_NE(e.find("across the local boundary of stages 2 and 3"), std::string::npos) << e;
  }
  {  // the first chunk's input gradient before the second's
    Schedule s = good;
    auto& a = s.ranks[2];
    std::swap(a[find(a, {Op::B, 1, 0})], a[find(a, {Op::B, 1, 1})]);
    const std::string e = error(s);
    EXPECT_NE(e.find("B(mb 1, chunk 0)"), std::string::npos) << e;
    EXPECT_NE(e.find("comes before B(mb 1, chunk 1)"), std::string::npos) << e;
  }
  {  // a V of 3 chunks
    Schedule s = good;
    s.v = 3;
    EXPECT_NE(error(s).find("a V places exactly 2 chunks per rank"), std::string::npos) << error(s);
  }
}

// NCCL matches by order: two activations sent to a rank in one order and received in the
// other are caught (MPI would still match them by tag); the same two in one batch are
// posted in tag order on both sides and pass.
TEST(PpScheduleValidator, ChannelOrderCatchesMessagesSentInAnotherOrder) {
  Schedule s;
  s.kind = "hand-made";
  s.p = 2, s.v = 1, s.m = 2;
  s.ranks = {{{Op::F, 0, 0}, {Op::SendF, 0, 0}, {Op::F, 1, 0}, {Op::SendF, 1, 0}},
             {{Op::RecvF, 0, 0}, {Op::F, 0, 0}, {Op::RecvF, 1, 0}, {Op::F, 1, 0}}};
  EXPECT_EQ(error_of([&] { check_channel_order(s); }), "");
  s.ranks[0] = {{Op::F, 1, 0}, {Op::SendF, 1, 0}, {Op::F, 0, 0}, {Op::SendF, 0, 0}};
  const std::string e = error_of([&] { check_channel_order(s); });
  EXPECT_NE(e.find("rank 0 sends to rank 1 in another order"), std::string::npos) << e;
  s.ranks[1] = {{Op::RecvF, 1, 0}, {Op::RecvF, 0, 0}, {Op::F, 0, 0}, {Op::F, 1, 0}};  // one batch
  s.ranks[0] = {{Op::F, 1, 0}, {Op::F, 0, 0}, {Op::SendF, 0, 0}, {Op::SendF, 1, 0}};
  EXPECT_EQ(error_of([&] { check_channel_order(s); }), "");
}

TEST(PpScheduleValidator, RendezvousCatchesSendsThatWaitForLaterReceives) {
  // Fine when sends never block; a deadlock when a send completes only once its receive is
  // posted: rank 0 sends F1 then computes F2 before posting RecvB0, rank 1 sends B0 then
  // computes W0 before posting RecvF1.
  Schedule s;
  s.kind = "hand";
  s.p = 2, s.v = 1, s.m = 3;
  s.split_backward = true;
  s.ranks = {{{Op::F, 0, 0}, {Op::SendF, 0, 0}, {Op::F, 1, 0}, {Op::SendF, 1, 0}, {Op::F, 2, 0},
              {Op::SendF, 2, 0}, {Op::RecvB, 0, 0}, {Op::B, 0, 0}, {Op::RecvB, 1, 0}, {Op::B, 1, 0},
              {Op::RecvB, 2, 0}, {Op::B, 2, 0}, {Op::W, 0, 0}, {Op::W, 1, 0}, {Op::W, 2, 0}},
             {{Op::RecvF, 0, 0}, {Op::F, 0, 0}, {Op::B, 0, 0}, {Op::SendB, 0, 0}, {Op::W, 0, 0},
              {Op::RecvF, 1, 0}, {Op::F, 1, 0}, {Op::B, 1, 0}, {Op::SendB, 1, 0}, {Op::W, 1, 0},
              {Op::RecvF, 2, 0}, {Op::F, 2, 0}, {Op::B, 2, 0}, {Op::SendB, 2, 0}, {Op::W, 2, 0}}};
  EXPECT_NO_THROW(simulate(s, default_costs(s)));
  const std::string e = error_of([&] { check_rendezvous(s); });
  EXPECT_NE(e.find("deadlock"), std::string::npos) << e;
  EXPECT_NE(e.find("rank 0 waits at SendF(mb 1)"), std::string::npos) << e;
}

TEST(PpSchedule, BadInputIsOneLine) {
  const std::vector<std::tuple<std::string, int, int, int, std::string>> bad = {
      {"warp", 4, 1, 8, "known: gpipe, 1f1b, interleaved, zb-h1, zb-h2, zb-v, dualpipev, dualpipe, chimera, pipedream, "
                           "pipedream-2bw, terapipe"},
      {"pipedream", 4, 2, 8, "pipedream has one chunk per rank: v must be 1, got 2"},
      {"chimera", 3, 2, 6, "needs an even number of pipeline ranks"},
      {"chimera", 4, 2, 6, "needs m a multiple of p"},
      {"chimera", 4, 1, 8, "v must be 2, got 1 (--vpp 2)"},
      {"dualpipev", 4, 2, 7, "needs m >= 2p micro-batches (DeepSeek's DualPipeV), got m = 7 < 2p = 8"},
      {"dualpipev", 4, 1, 8, "v must be 2, got 1 (--vpp 2)"},
      {"dualpipe", 3, 2, 8, "needs an even number of pipeline ranks"},
      {"dualpipe", 4, 2, 9, "needs an even m >= 2p micro-batches"},
      {"dualpipe", 4, 2, 6, "got m = 6 with p = 4"},
      {"dualpipe", 4, 1, 8, "v must be 2, got 1 (--vpp 2)"},
      {"zb-h2", 4, 2, 8, "v must be 1"},
      {"1f1b", 0, 1, 8, "p (pipeline ranks) must be >= 1"},
      {"1f1b", 4, 0, 8, "v (chunks per rank) must be >= 1"},
      {"gpipe", 4, 1, 0, "m (micro-batches) must be >= 1"},
      {"zb-h1", 4, 1, -3, "m (micro-batches) must be >= 1"},
      {"gpipe", 4, 2, 8, "v must be 1"},
      {"1f1b", 4, 2, 8, "v must be 1"},
      {"zb-h1", 4, 3, 8, "v must be 1"},
      {"interleaved", 4, 1, 8, "needs v >= 2"},
      {"interleaved", 4, 2, 6, "multiple of p"},
      {"interleaved", 4, 2, 2, "needs m >= p"},
      {"1f1b", 1000, 1, 1000000, "too large"},
      {"zb-v", 4, 1, 8, "v must be 2, got 1 (--vpp 2)"},
      {"zb-v", 4, 3, 8, "v must be 2, got 3"},
      {"zb-v", 4, 2, 0, "m (micro-batches) must be >= 1"},
      {"zb-v", 0, 2, 8, "p (pipeline ranks) must be >= 1"},
      {"zb-v", 1000, 2, 1000, "too large"},
  };
  for (const auto& [kind, p, v, m, what] : bad) {
    const std::string e = error_of([&] { make_schedule(kind, p, v, m); });
    EXPECT_NE(e.find(what), std::string::npos) << kind << " " << p << " " << v << " " << m << ": '" << e << "'";
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
  EXPECT_NO_THROW(make_schedule("interleaved", 1, 2, 1));
  EXPECT_NO_THROW(make_schedule("interleaved", 4, 2, 4));
  EXPECT_NO_THROW(make_schedule("zb-v", 4, 2, 1));  // any m >= 1; m < p only idles more
}

// ---- the asynchronous kinds (pp_async.h) ----

// PipeDream and 2BW run 1F1B's order; the weight versions walked through it equal the
// reference emulation's own walk (reference/model/async_pipeline.h) plus the current one,
// and their closed forms: PipeDream 1 + min(w, m-w), w = min(p-r-1, m-1) (the paper's
// "up to p-r versions" on stage r once m >= 2(p-r-1)); 2BW with g >= p-1 and m > g two on
// every rank but the last.
TEST(PpScheduleAsync, OneFOneBOrderAndWeightVersions) {
  for (int p = 1; p <= 8; ++p)
    for (int m = 1; m <= 24; ++m)
      for (int g = 1; g <= m; ++g) {
        if (m % g) continue;
        const bool dream = g == 1;
        if (!dream && g < p - 1) continue;
        const Schedule s = make_schedule(dream ? "pipedream" : "pipedream-2bw", p, 1, m, false, g);
        const Schedule f = make_schedule("1f1b", p, 1, m);
        ASSERT_EQ(s.ranks, f.ranks) << p << " " << m;
        EXPECT_EQ(s.update_every, g);
        EXPECT_NO_THROW(simulate(s, default_costs(s)));
        for (int r = 0; r < p; ++r) {
          const int v = weight_versions(s, r);
          EXPECT_EQ(v, 1 + ref::async_stashed_versions(p, r, m, g)) << p << " " << r << " " << m << " " << g;
          const int w = std::min(p - r - 1, m - 1);
          if (dream) EXPECT_EQ(v, m == 1 ? 1 : 1 + std::min(w, m - w)) << p << " " << r << " " << m;
          if (dream && m >= 2 * (p - r - 1) && m > 1) EXPECT_EQ(v, p - r) << p << " " << r << " " << m;
          if (!dream && m > g) EXPECT_EQ(v, r == p - 1 ? 1 : 2) << p << " " << r << " " << m << " " << g;
        }
      }
  EXPECT_EQ(make_schedule("pipedream-2bw", 4, 1, 8).update_every, 4);  // p by default
  EXPECT_EQ(weight_versions(make_schedule("1f1b", 4, 1, 8), 0), 1);
  // Below p-1 micro-batches per version 2BW would need three: refused.
  const std::string e = error_of([] { make_schedule("pipedream-2bw", 4, 1, 8, false, 2); });
  EXPECT_NE(e.find("at least p-1 = 3 micro-batches"), std::string::npos) << e;
  EXPECT_EQ(ref::async_stashed_versions(4, 0, 8, 2), 2);  // (the walk would hold 3)
}

// ---- TeraPipe (model/attention_terapipe.h) ----

// GPipe's order over the m*K units (micro-batch mb, slice i) = mb*K + i: the forwards in
// slice order, the backwards from the last unit down, so every micro-batch's slices in reverse;
// the bubble (p-1)/(mK+p-1) (TeraPipe, Li et al. ICML'21, equal slices): K times finer units
// than GPipe's.
TEST(PpScheduleTeraPipe, GpipeOverSlicesWithTheFinerBubble) {
  for (int p = 1; p <= 6; ++p)
    for (int m = 1; m <= 4; ++m)
      for (int K = 1; K <= 5; ++K) {
        const Schedule s = make_schedule("terapipe", p, 1, m, false, 0, K);
        EXPECT_EQ(s.slices, K);
        EXPECT_EQ(s.m, m * K);
        EXPECT_EQ(s.ranks, make_schedule("gpipe", p, 1, m * K).ranks);
        const SimResult r = simulate(s, default_costs(s));
        const Bubble b = analytic_bubble(s, default_costs(s));
        EXPECT_EQ(b.num * (m * K + p - 1), b.den * (p - 1)) << b.formula;
        for (int k = 0; k < p; ++k) EXPECT_EQ(r.idle[size_t(k)] * b.den, b.num * r.total) << p << " " << m << " " << K;
        std::vector<int> last(size_t(m), K);  // each micro-batch's slices backward: K-1 down to 0
        for (const Action& a : s.ranks[0])
          if (a.op == Op::B) {
            EXPECT_EQ(a.mb % K, last[size_t(a.mb / K)] - 1) << a.mb;
            last[size_t(a.mb / K)] = a.mb % K;
          }
      }
  const std::string e = error_of([] { make_schedule("terapipe", 4, 2, 4, false, 0, 2); });
  EXPECT_NE(e.find("terapipe has one chunk per rank"), std::string::npos) << e;
  const std::string f = error_of([] { make_schedule("gpipe", 4, 1, 4, false, 0, 2); });
  EXPECT_NE(f.find("are for terapipe's token slices"), std::string::npos) << f;
}

// ---- renderings ----

TEST(PpScheduleRender, TextHasOneFixedWidthRowPerRank) {
  const Schedule s = make_schedule("gpipe", 2, 1, 2);
  const SimResult r = simulate(s, default_costs(s));
  EXPECT_EQ(r.total, 9);
  const std::string text = timeline_text(s, r);
  EXPECT_NE(text.find("rank 0 |F0 F1 .  .  .  B1=== B0===|\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rank 1 |.  F0 F1 B1=== B0=== .  . |\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\nlegend: "), std::string::npos);

  const Schedule il = make_schedule("interleaved", 4, 2, 8);
  const SimResult ri = simulate(il, default_costs(il));
  const std::string t2 = timeline_text(il, ri);
  std::vector<std::string> rows;
  for (size_t at = 0, nl; (nl = t2.find('\n', at)) != std::string::npos; at = nl + 1)
    if (t2.compare(at, 5, "rank ") == 0) rows.push_back(t2.substr(at, nl - at));
  ASSERT_EQ(rows.size(), 4u);
  for (const auto& row : rows) EXPECT_EQ(row.size(), rows[0].size());
  EXPECT_EQ(rows[0].size(), std::string("rank 0 |").size() + size_t(ri.total) * 4);  // "F7b " cells
  EXPECT_EQ(rows[0].compare(8, 8, "F0a F1a "), 0) << rows[0];
}

TEST(PpScheduleRender, ZeroBubbleVTextLabelsBothChunks) {
  const Schedule s = make_schedule("zb-v", 4, 2, 8);
  const SimResult r = simulate(s, default_costs(s));
  EXPECT_EQ(r.total, 51);
  const std::string text = timeline_text(s, r);
  std::vector<std::string> rows;
  for (size_t at = 0, nl; (nl = text.find('\n', at)) != std::string::npos; at = nl + 1)
    if (text.compare(at, 5, "rank ") == 0) rows.push_back(text.substr(at, nl - at));
  ASSERT_EQ(rows.size(), 4u);
  for (const auto& row : rows) EXPECT_EQ(row.size(), std::string("rank 0 |").size() + size_t(r.total) * 4) << row;
  EXPECT_EQ(rows[0].compare(8, 8, "F0a F1a "), 0) << rows[0];
  EXPECT_EQ(rows[3].compare(8, 20, ".   .   .   F0a F0b "), 0) << rows[3];  // the turn: chunk 1 right after chunk 0
  EXPECT_NE(text.find("b = chunk 1 (stage 2p-1-r"), std::string::npos) << text;
}

TEST(PpScheduleRender, SvgAndChromeTrace) {
  for (const std::string& kind : schedule_kinds()) {
    const Schedule s = make_schedule(kind, 4, chunks(kind), 8);
    const SimResult r = simulate(s, default_costs(s));
    const std::string svg = timeline_svg(s, r);
    EXPECT_EQ(svg.rfind("<svg ", 0), 0u);
    EXPECT_NE(svg.find("</svg>\n"), std::string::npos);
    EXPECT_NE(svg.find(">rank 3</text>"), std::string::npos);
    size_t boxes = 0;
    for (size_t at = 0; (at = svg.find("<title>", at)) != std::string::npos; ++at) ++boxes;
    size_t compute = 0;
    for (const auto& line : r.timeline) compute += line.size();
    EXPECT_EQ(boxes, compute);

    const auto trace = nlohmann::json::parse(chrome_trace(s, r));
    size_t events = 0;
    for (const auto& e : trace.at("traceEvents")) {
      if (e.at("ph") != "X") continue;
      ++events;
      EXPECT_EQ(e.at("pid"), 0);
      EXPECT_GE(e.at("tid").get<int>(), 0);
      EXPECT_LT(e.at("tid").get<int>(), s.p);
      EXPECT_GT(e.at("dur").get<double>(), 0);
    }
    EXPECT_EQ(events, compute);
  }
  // The generic overload: names "F3.c1", microseconds as given.
  const auto t = nlohmann::json::parse(chrome_trace({{{{Op::F, 3, 1}, 10.0, 5.5}}, {{{Op::RecvB, 0, 0}, 1.0, 2.0}}},
                                                    "measured"));
  std::vector<std::string> names;
  for (const auto& e : t.at("traceEvents"))
    if (e.at("ph") == "X") names.push_back(e.at("name"));
  EXPECT_EQ(names, (std::vector<std::string>{"F3.c1", "RecvB0.c0"}));
  EXPECT_EQ(t.at("traceEvents")[0].at("args").at("name"), "measured");
}

}  // namespace
}  // namespace pb::pp
