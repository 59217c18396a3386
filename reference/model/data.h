/* Deterministic synthetic token batches: every token is a pure function of
 * (seed, global sequence index i, position s), so any rank can make any slice alone.
 *
 * A sequence has S+1 tokens; inputs are positions 0..S-1, labels positions 1..S.
 *   key_i      = U{0..V-1} from stream "data.key", counter i
 *   noise_i,s  = U[0,1) < 0.25 from stream "data.noise", counter i*(S+1)+s
 *   token_i,s  = noise ? U{0..V-1} from "data.token" : (key_i + s) mod V
 * The ramp gives the model something to learn (next = current + 1 three times in four), so
 * the loss falls below log V on fresh batches, and the noise keeps it from being trivial.
 * Batch n (global batch of GB sequences) holds sequences n*GB .. n*GB+GB-1.
 */
#pragma once

#include "reference/common/counter_rng.h"
#include "reference/common/tensor.h"

namespace pb::ref {

inline int64_t data_token(uint64_t seed, int64_t seq, int64_t pos, int64_t S, int64_t V) {
  const uint64_t c = uint64_t(seq) * uint64_t(S + 1) + uint64_t(pos);
  if (CounterRng(seed, "data.noise").uniform(c) < 0.25) return int64_t(CounterRng(seed, "data.token").below(c, uint64_t(V)));
  const int64_t key = int64_t(CounterRng(seed, "data.key").below(uint64_t(seq), uint64_t(V)));
  return (key + pos) % V;
}

struct Batch {
  Tokens tokens;  // (nseq*S) inputs,  row t = b*S + s
  Tokens labels;  // (nseq*S) targets, the next token
};

// Sequences first_seq .. first_seq+nseq-1, positions 0..S-1.
inline Batch make_batch(uint64_t seed, int64_t first_seq, int64_t nseq, int64_t S, int64_t V) {
  Batch b;
  b.tokens.resize(size_t(nseq * S));
  b.labels.resize(size_t(nseq * S));
  for (int64_t i = 0; i < nseq; ++i)
    for (int64_t s = 0; s < S; ++s) {
      b.tokens[size_t(i * S + s)] = data_token(seed, first_seq + i, s, S, V);
      b.labels[size_t(i * S + s)] = data_token(seed, first_seq + i, s + 1, S, V);
    }
  return b;
}

}  // namespace pb::ref
