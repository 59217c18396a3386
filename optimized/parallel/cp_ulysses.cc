/* Ulysses' head counts and terms (see cp_ulysses.h). */
#include "optimized/parallel/cp_ulysses.h"

namespace pb {

int64_t ulysses_kv_heads(int64_t g, int64_t c) { return g % c == 0 ? g : c % g == 0 ? c : 0; }

void cp_ulysses_terms(const Dims& d, Terms& t, const char* group, int64_t u) {
  if (u == 0) u = d.c;
  const int64_t layers = d.mb * d.Lr, q = d.e * d.N * d.a * d.D, kv = d.e * d.N * ulysses_kv_heads(d.g, u) * d.D;
  for (const Phase ph : {Phase::Forward, Phase::Backward}) {
    t.call(group, CommOp::AllToAll, ph, layers * 2, q, u);   // q in, o back; dO in, dq back
    t.call(group, CommOp::AllToAll, ph, layers * 2, kv, u);  // k, v in; dk, dv back
  }
}

}  // namespace pb
