/* Pipeline schedules as data (FEATURES.md: PP 1F1B, interleaved, zero-bubble; seed 001).
 *
 * p pipeline ranks, v model chunks per rank, m micro-batches. Chunk c on rank r is
 * virtual stage s = c*p + r (Megatron's interleaving: L=16, p=4, v=2 -> rank 0 holds
 * layers 0-1 and 8-9); the model runs through stages 0 .. p*v-1. zb-v places its v = 2
 * chunks in a V instead (Schedule::vshape): chunk 0 of rank r is stage r, chunk 1 is
 * stage 2p-1-r (L=16, p=4: rank 0 holds layers 0-1 and 14-15, rank 3 layers 6-9).
 *
 * A schedule is, for every rank, an ordered list of actions over (micro-batch, chunk):
 *   F     forward of one micro-batch through one chunk
 *   B     backward: the whole backward, or with split_backward only the input gradient
 *   W     the weight gradient of an earlier B (split_backward only; zero-bubble)
 *   SendF / RecvF   the chunk's output activation to / its input from the neighbouring
 *                   virtual stage (s+1 / s-1)
 *   SendB / RecvB   the input gradient to stage s-1 / the output gradient from stage s+1
 * Every F of a stage s > 0 is preceded by its RecvF, every B of a stage s < p*v-1 by its
 * RecvB; sends follow the compute that produced them. Across a local boundary (stages s
 * and s+1 on one rank: the turn of a V at rank p-1) there is no message: F of s+1 follows
 * F of s, and B of s follows B of s+1, in the rank's own order. Consecutive communication
 * actions form one batch (posted together, as Megatron's batched isend/irecv): sends never
 * block, a batch waits for its receives.
 *
 * Generators (all for m >= 1; each checks its own preconditions, pb::Error with one line):
 *   gpipe        all m forwards, then all m backwards (reverse order)
 *   1f1b         min(p-r-1, m) warm-up forwards, steady one-forward-one-backward, cool-down
 *   interleaved  Megatron's interleaved 1F1B, v >= 2 chunks, m % p == 0 (micro-batch group
 *                size p): warm-up (p-r-1)*2 + (v-1)*p forwards (at most m*v); Megatron's
 *                communication placement (steady state: F, B, then one batch of both sends
 *                and the next two receives)
 *   zb-h1        1F1B with the backward split into B and W (Qi et al. 2023, arXiv
 *                2401.10241, Fig. 3): rank r runs min(p-r, m) warm-up forwards, then B, the
 *                W deferred by r micro-batches, F; at most p micro-batches between F and W
 *                on every rank (1F1B's peak), p-r between F and B; with F = B = W every
 *                rank idles exactly p-1 units when m >= p
 *   zb-h2        ZB-H2 (same paper, Sec. 2.2): split backward, up to 2(p-r)-1 warm-up forwards on
 *                rank r and at most 2p-1 micro-batches between F and W on every rank (twice
 *                1F1B's peak of p, less one); with F = B = W no rank idles between its first
 *                and its last action when m >= 2p-1 (the idle p-1 is rank r's r before and
 *                p-1-r after: gone once the optimizer step is post-validated)
 *   zb-v         ZB-V (same paper): v = 2 chunks in a V, split backward; list scheduling
 *                at unit costs per chunk with at most 2p chunk-micro-batches between F and
 *                W on every rank (1F1B's activation memory: a chunk is half a rank's
 *                layers; an F held back by it runs a pending W instead); with F = B = W
 *                every rank idles exactly p-1 units when m >= p, the start-up of rank p-1
 *                and nothing else: half of zb-h1's 2(p-1) with the same layers per rank
 *                (per-stage costs 2, 2, 2), a sixth of 1f1b's 6(p-1)
 *   dualpipev    DeepSeek's DualPipeV (DeepSeek-V3, arXiv 2412.19437; the DualPipe repository's
 *                dualpipev.py): zb-v's V placement, m >= 2p, eight phases per rank with
 *                overlapped F & B pairs (run here in turn); with F = B = W every rank idles
 *                p-1 (the README's (PP/2-1)(F&B+B-3W), PP = 2p) and holds at most 2p+1
 *                chunks between F and W (the README's PP+1 against 1F1B's PP)
 *   dualpipe     DeepSeek's DualPipe (same sources, dualpipe.py): two pipelines in opposite
 *                directions over the ranks (the bidirectional placement, pp_placement.h:
 *                two copies of the model, chunk 0 of rank r down stage r, chunk 1 up stage
 *                p-1-r), micro-batches 0..m/2-1 fed down and m/2..m-1 up, p and m even,
 *                m >= 2p; the same eight phases with the pipelines as phases; with F = B = W
 *                every rank idles p/2-1 (the README's (PP/2-1)(F&B+B-3W), PP = p) and holds
 *                at most p+1 micro-batch chunks between F and W (the README's PP+1)
 *   pipedream    PipeDream (SOSP'19) and PipeDream-2BW (ICML'21), asynchronous (pp_async.h):
 *   pipedream-2bw  1f1b's order, with each stage's weight update after every update_every-th B
 *                (pipedream 1, 2bw default p, at least p-1: two versions; m a multiple of it);
 *                a B runs on its F's stashed weight version
 *   terapipe     TeraPipe (Li et al., ICML'21; model/attention_terapipe.h): each micro-batch's sequences
 *                in K token slices, gpipe's order over the m*K units (mb, slice) = unit mb*K + i:
 *                the forwards in slice order, the backwards in reverse (slice K-1 first)
 *   chimera      Chimera (Li & Hoefler, SC'21): dualpipe's two pipelines and copies, unsplit
 *                backward, p even, m a multiple of p; units of p/2 micro-batches per pipeline
 *                in waves (F every other slot, B back), the two pipelines in alternate slots;
 *                with F = B every rank idles p-2 of 2m+p-2 (the paper's (D-2)/(2N+D-2))
 * gpipe, 1f1b and zb-h1 post each receive just before its compute, right after the
 * previous compute's sends (one batch: Megatron's send_forward_recv_backward pairing).
 * zb-v, zb-h2, dualpipev, dualpipe and chimera start from that and post a receive earlier only where check_rendezvous() would
 * otherwise deadlock (neighbours exchange in both directions in a V), and only where the
 * rank idles anyway at unit costs. Every generated schedule is deadlock-free under both
 * models of a send: simulate() (a send never blocks) and check_rendezvous() (it completes
 * only once its receive is posted).
 */
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "optimized/parallel/pp_placement.h"

namespace pb::pp {

// R: the recompute of a checkpointed chunk's forward, ahead of its B (recompute in advance).
enum class Op { F, B, W, SendF, RecvF, SendB, RecvB, R };
constexpr int kNumOps = 8;
const char* op_name(Op op);  // "F", "B", "W", "SendF", ..., "R"
inline bool is_compute(Op op) { return op == Op::F || op == Op::B || op == Op::W || op == Op::R; }

struct Action {
  Op op;
  int mb;     // micro-batch 0 .. m-1
  int chunk;  // local model chunk 0 .. v-1
  bool operator==(const Action&) const = default;
};

struct Schedule : Placement {  // p, v, the chunk placement (V for ZB-V): pp_placement.h
  std::string kind;  // gpipe | 1f1b | interleaved | zb-h1 | ... | chimera | pipedream | pipedream-2bw
  int m = 1;
  bool split_backward = false;              // B is the input gradient only, W follows
  bool recompute_ahead = false;             // R actions: recompute in advance (add_recompute_ahead)
  int slices = 0;                           // terapipe: K token slices per micro-batch; m counts the
                                            // units (micro-batch mb's slice i is unit mb*K + i)
  int update_every = 0;                     // asynchronous kinds: each stage updates its weights after
                                            // every update_every-th B (0: synchronous, one step at the end)
  std::vector<std::vector<Action>> ranks;   // per pipeline rank, in execution order
  // Whether micro-batch mb runs through chunk c: always, except in the two pipelines of a
  // bidirectional placement, where micro-batches 0 .. m/2-1 run down (chunk 0) and the rest up.
  bool runs(int mb, int chunk) const { return !bidir || chunk == (mb < m / 2 ? 0 : 1); }
  int micro_batches_of(int chunk) const { return !bidir ? m : chunk == 0 ? m / 2 : m - m / 2; }
};

// Whether a kind places its chunks in a V (zb-v, dualpipev), known before any schedule is made.
bool vshape_kind(const std::string& kind);
// Whether a kind runs two pipelines in opposite directions (dualpipe, chimera): the bidirectional placement.
bool bidir_kind(const std::string& kind);
// Whether a kind is asynchronous (pipedream, pipedream-2bw): each stage updates its own weights
// during the schedule, every update_every micro-batches, and a micro-batch's backward uses the
// weights its forward used (weight stashing).
bool async_kind(const std::string& kind);
// The most weight versions rank `rank` holds at once: its current weights and the stashed older
// versions that micro-batches between their F and B still use (walked through the rank's order;
// 1 for a synchronous schedule). With w = min(p-r-1, m-1) and g = update_every < m:
// 1 + min(ceil(w/g), ceil((m-w)/g)); PipeDream (g = 1) 1 + min(w, m-w): the paper's "up to
// p-r versions" on rank r once m >= 2(p-r-1) (the drain at the step's end caps it below);
// 2BW with g >= p-1: 2 on every rank but the last (1).
int weight_versions(const Schedule& s, int rank);

const std::vector<std::string>& schedule_kinds();  // {"gpipe", ..., "zb-v", "dualpipev"}

// The schedule of a kind, with its communication actions. Bad input (unknown kind,
// p, v, m < 1, v > 1 for a kind without chunks, v < 2, m < p or m % p for interleaved,
// v != 2 for zb-v, p*v*m above 10^6) throws pb::Error with one line. zb-v takes any
// m >= 1 (m < p only idles more).
// recompute_ahead: with R actions (add_recompute_ahead; interleaved only).
// update_every: pipedream-2bw's micro-batches per weight version (0: p); pipedream: 1; 0 otherwise.
// slices: terapipe's K token slices per micro-batch (0: 1); its schedule has m*K units.
Schedule make_schedule(const std::string& kind, int p, int v, int m, bool recompute_ahead = false,
                       int update_every = 0, int slices = 0);

// Recompute in advance (MindSpeed's ripipe, --recompute-in-advance): in the interleaved
// schedule the recompute of a checkpointed chunk runs right after the batch that posts the
// receive of its output gradient, before the batch is waited for -- in the time the rank
// would wait for that gradient -- and its B then starts from the recomputed state. Every B
// with a RecvB gets its R (the model's last stage, which receives none, recomputes in its B
// as before, as MindSpeed does). The executor posts such a batch without waiting, runs the
// R, then waits; simulate() times the R between the batch's sends and its receives.
void add_recompute_ahead(Schedule& s);

// Unit costs of the compute actions (integers, so simulated times are exact). With a
// split backward B is the input gradient and W the weight gradient; otherwise W is unused.
struct Costs {
  int64_t F = 1, B = 2, W = 0;
  int64_t R = 1;  // a recompute ahead of its B (recompute_ahead): the forward again
  // Per stage (stage order) a multiplier of every cost, for uneven stages (pp_partition.h:
  // a stage's layers, its head); empty: every stage 1.
  std::vector<int64_t> stage = {};
  int64_t of(Op op, int st) const {
    const int64_t base = op == Op::F ? F : op == Op::B ? B : op == Op::R ? R : W;
    return stage.empty() ? base : base * stage[size_t(st)];
  }
};
Costs default_costs(const Schedule& s);  // F=1, B=2; split: F=1, B=1, W=1; R = F

// The analytic bubble of a schedule kind at the given costs: the fraction num/den of the
// total that every rank idles, its formula and its source.
//   gpipe, 1f1b   (p-1)/(m+p-1)                        Huang et al. 2019; Narayanan et al. 2021
//   interleaved   (p-1)/(v m+p-1)                      Narayanan et al. 2021
//   zb-h1         (p-1)(F+B-W)/(m(F+B+W)+(p-1)(F+B-W)) Qi et al. 2023
//   zb-h2         (p-1)F/(m(F+B+W)+(p-1)F)             only the start-up and the tail (F = B = W, m >= 2p-1)
//   zb-v          (p-1)F/(2m(F+B+W)+(p-1)F)            only rank p-1's start-up (F = B = W, m >= p)
//   dualpipev     (p-1)(F&B+B-3W)/(2m(F+B+W)+...)      DeepSeek's DualPipe README, PP = 2p, F&B = F+B+W
//   dualpipe      (p/2-1)(F&B+B-3W)/(m(F+B+W)+...)     the same README, PP = p
//   chimera       (p-2)/(2m+p-2)                       Li & Hoefler SC'21, at F = B
//   terapipe      (p-1)/(mK+p-1)                       Li et al. ICML'21 (m here: the m*K units)
struct Bubble {
  std::string formula, source;
  int64_t num = 0, den = 1;
};
Bubble analytic_bubble(const Schedule& s, const Costs& c);

struct TimedAction {
  Action action;
  int64_t start = 0, end = 0;  // compute actions only; communication takes no time
};

struct SimResult {
  int64_t total = 0;                       // makespan
  std::vector<int64_t> busy;               // per rank: sum of compute costs
  std::vector<int64_t> idle;               // per rank: total - busy
  std::vector<int64_t> gaps;               // per rank: idle between its first and its last compute
                                           // (the rest is the start-up and the tail: with the
                                           // optimizer step post-validated, the next step's)
  std::vector<int> peak_in_flight;         // per rank: max micro-batch chunks between F and B
  std::vector<int> peak_pending_w;         // per rank: max chunks between B and W (split only)
  std::vector<int> peak_held;              // per rank: max chunks between F and W (split), F and B
                                           // (otherwise): the micro-batches whose activations it holds
  std::vector<std::vector<TimedAction>> timeline;  // per rank, the compute actions in order
};

// Validates the schedule and simulates it: every (micro-batch, chunk) of every rank has
// exactly one F and one B (and one W when split), every dependency is met (F of stage s
// after F of stage s-1; B of s after B of s+1 and after its own F; W after its B; across
// a local boundary by the order on the rank and without a message, elsewhere through
// one), every receive has its send, and the ranks cannot deadlock (a receive waits for
// its send to be issued; sends never block). Each compute action starts when its rank reaches it and its
// inputs are ready. Throws pb::Error naming the first violation.
SimResult simulate(const Schedule& s, const Costs& c);

// The stricter model of NCCL groups and of MPI's rendezvous protocol (large messages): a
// batch completes only once the peers have posted the receives of its sends as well as the
// sends of its receives. Validates with simulate() first; throws pb::Error naming the
// blocked ranks if the schedule deadlocks under this model.
void check_rendezvous(const Schedule& s);

// The peer and tag of a communication action of rank `rank`: the activation entering
// stage t of micro-batch mb has tag (mb*S + t)*2, the gradient leaving stage t+1 for
// stage t has tag (mb*S + t)*2 + 1 (S stages), the same on the sending and the receiving
// side, so MPI matches by tag. Returns {peer rank, tag}.
std::pair<int, int> message_peer_tag(const Schedule& s, int rank, const Action& a);

// NCCL matches the sends and receives between two ranks by their order, not by tag. With
// every batch's transfers posted in (peer, tag) order (NcclCommunicator::batch_p2p does),
// this checks that for every ordered pair of ranks the sender's sequence of messages equals
// the receiver's; throws pb::Error naming the first pair that differs.
void check_channel_order(const Schedule& s);

// Renderings of a simulated schedule: one text row per rank, one fixed-width cell per cost
// unit ("F3" starts an action, "F3a" / "F3b" for chunk 0 / 1 when v > 1, in a V stages
// r / 2p-1-r; '=' continues it, '.' idle), with a time ruler and a legend line; an SVG; and a Chrome trace
// (chrome://tracing, Perfetto) with one thread per rank; one cost unit = 1 ms in the trace.
std::string timeline_text(const Schedule& s, const SimResult& r);
std::string timeline_svg(const Schedule& s, const SimResult& r);
std::string chrome_trace(const Schedule& s, const SimResult& r);

// A Chrome trace of any per-rank timeline (also the executor's measured one): a JSON
// object {"traceEvents": [...]} with complete ("ph": "X") events, pid 0, tid = rank,
// names like "F3.c1" (micro-batch 3, chunk 1), times in microseconds.
struct TraceEvent {
  Action action;
  double start_us = 0, dur_us = 0;
};
std::string chrome_trace(const std::vector<std::vector<TraceEvent>>& ranks, const std::string& title);

}  // namespace pb::pp
