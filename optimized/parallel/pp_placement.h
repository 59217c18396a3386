/* Where the pipeline's model chunks live (Narayanan et al., arXiv 2104.04473; ZB-V: Qi et
 * al., arXiv 2401.10241), and which layers each holds: the one place of these formulas.
 *
 * p pipeline ranks, v chunks per rank, stages 0 .. p*v-1 in model order.
 *   interleaved (default): chunk c of rank r is virtual stage s = c*p + r
 *                          (L=16, p=4, v=2: rank 0 holds layers 0-1 and 8-9)
 *   V (ZB-V, v = 2):       chunk 0 of rank r is stage r, chunk 1 is stage 2p-1-r, so rank 0
 *                          holds the first and the last stage and the turn at rank p-1
 *                          stays local (L=16, p=4: rank 0 holds layers 0-1 and 14-15)
 * Stage s holds layers [s*L/(p*v), (s+1)*L/(p*v)), or with a split (train/pp_partition.h)
 * [bounds[s], bounds[s+1]); stage 0 also embeds, the last stage also runs the final norm,
 * the LM head and the loss.
 */
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace pb::pp {

struct Placement {
  int p = 1, v = 1;
  bool vshape = false;
  int stages() const { return p * v; }
  int stage(int rank, int chunk) const { return vshape && chunk == 1 ? 2 * p - 1 - rank : chunk * p + rank; }
  int rank_of(int stage) const { return vshape && stage >= p ? 2 * p - 1 - stage : stage % p; }
  int chunk_of(int stage) const { return vshape ? (stage >= p ? 1 : 0) : stage / p; }
  // Stages s and s+1 on one rank (ZB-V's turn): no Send/Recv between them; the output
  // of stage s is the input of stage s+1 (and the gradient back) on that rank.
  // Only the V placement hands over locally (interleaved with p = 1 sends to itself).
  bool local_boundary(int s) const { return vshape && s >= 0 && s + 1 < stages() && rank_of(s) == rank_of(s + 1); }
  // Layer boundaries of an uneven split: stages()+1 prefix sums from 0 to L; empty: even.
  std::vector<int64_t> bounds;
  void set_split(const std::vector<int64_t>& layers_per_stage) {
    bounds.assign(1, 0);
    for (const int64_t n : layers_per_stage) bounds.push_back(bounds.back() + n);
  }
  // The global layers [first, last) of stage s in a model of L layers (without a split p*v
  // divides L).
  std::pair<int64_t, int64_t> layers(int64_t L, int s) const {
    if (!bounds.empty()) return {bounds[size_t(s)], bounds[size_t(s) + 1]};
    const int64_t per = L / stages();
    return {s * per, (s + 1) * per};
  }
  bool holds_first(int rank) const { return rank_of(0) == rank; }
  bool holds_last(int rank) const { return rank_of(stages() - 1) == rank; }
};

}  // namespace pb::pp
