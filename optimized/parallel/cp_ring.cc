/* The ring's data layout, hop and terms (see cp_ring.h). */
#include "optimized/parallel/cp_ring.h"

#include <atomic>

#include "reference/common/error.h"

namespace pb {

std::array<int64_t, 2> cp_chunks(int c, int r, bool contiguous) {
  return contiguous ? std::array<int64_t, 2>{2 * r, 2 * r + 1} : std::array<int64_t, 2>{r, 2 * c - 1 - r};
}

std::vector<int64_t> cp_positions(int64_t S, int c, int r, bool contiguous, int u) {
  std::vector<int64_t> pos;
  if (contiguous) {  // tokens [r S/c, (r+1) S/c): also Ulysses' split
    PB_REQUIRE(S % c == 0, "cp ", c, ": seq_length ", S, " is not divisible by c");
    for (int64_t i = 0; i < S / c; ++i) pos.push_back(r * (S / c) + i);
    return pos;
  }
  PB_REQUIRE(S % (2 * c) == 0 && c % u == 0, "cp ", c, ": seq_length ", S, " is not divisible by 2c = ", 2 * c);
  const int ring = c / u;
  const int64_t m = S / (2 * ring), p = m / u, mu = r % u;  // chunk rows, piece rows, the piece
  for (const int64_t chunk : cp_chunks(ring, r / u, false))
    for (int64_t i = 0; i < p; ++i) pos.push_back(chunk * m + mu * p + i);
  return pos;
}

std::vector<int64_t> cp_rows(int64_t B, int64_t S, int c, int r, bool contiguous, int u) {
  const std::vector<int64_t> pos = cp_positions(S, c, r, contiguous, u);
  std::vector<int64_t> rows;
  for (int64_t b = 0; b < B; ++b)
    for (const int64_t p : pos) rows.push_back(b * S + p);
  return rows;
}

RingHop::RingHop(Communicator& cp, const std::vector<const Tensor*>& out, const std::vector<Tensor*>& in, int tag0) {
  const int c = cp.size(), next = (cp.rank() + 1) % c, prev = (cp.rank() + c - 1) % c;
  for (size_t i = 0; i < in.size(); ++i) reqs_.push_back(cp.irecv(*in[i], prev, tag0 + int(i)));
  for (size_t i = 0; i < out.size(); ++i) reqs_.push_back(cp.isend(*out[i], next, tag0 + int(i)));
}

void RingHop::wait() {
  for (auto& r : reqs_) r->wait();
  reqs_.clear();
}

namespace {
std::atomic<int64_t> g_pairs{0};
}
int64_t cp_attention_pairs() { return g_pairs.load(); }
void add_cp_attention_pairs(int64_t n) { g_pairs += n; }
void reset_cp_attention_pairs() { g_pairs = 0; }

void cp_ring_terms(const Dims& d, Terms& t, const char* group) {
  const int64_t layers = d.mb * d.Lr, x = d.e * d.N * d.g * d.D, dx = Dims::fp * d.N * d.g * d.D;
  for (const CommOp op : {CommOp::Send, CommOp::Recv}) {
    t.call(group, op, Phase::Forward, layers * 2 * (d.c - 1), x, d.c);
    t.call(group, op, Phase::Backward, layers * 2 * (d.c - 1), x, d.c);
    t.call(group, op, Phase::Backward, layers * 2 * d.c, dx, d.c);
  }
}

}  // namespace pb
