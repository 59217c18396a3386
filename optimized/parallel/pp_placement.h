/* Where the pipeline's model chunks live (Narayanan et al., arXiv 2104.04473; ZB-V: Qi et
 * al., arXiv 2401.10241), and which layers each holds: the one place of these formulas.
 *
 * p pipeline ranks, v chunks per rank, stages 0 .. p*v-1 in model order.
 *   interleaved (default): chunk c of rank r is virtual stage s = c*p + r
 *                          (L=16, p=4, v=2: rank 0 holds layers 0-1 and 8-9)
 *   V (ZB-V, v = 2):       chunk 0 of rank r is stage r, chunk 1 is stage 2p-1-r, so rank 0
 *                          holds the first and the last stage and the turn at rank p-1
 *                          stays local (L=16, p=4: rank 0 holds layers 0-1 and 14-15)
 *   bidirectional (DualPipe, Chimera; v = 2): two pipelines over the same ranks, each a whole
 *                          copy of the model in p stages: "down" (chunk 0 of rank r is its
 *                          stage r, fed at rank 0) and "up" (chunk 1 of rank r is its stage
 *                          p-1-r, fed at rank p-1). Virtual stages are numbered as in the V
 *                          (chunk 1 of rank r is 2p-1-r), so virtual stage p+t is the up
 *                          pipeline's stage t; stages p-1 and p do not meet: each micro-batch
 *                          runs through one pipeline (Schedule::runs), and the two copies of
 *                          a model stage (rank r chunk 0, rank p-1-r chunk 1) sum their
 *                          gradients before the step.
 * Model stage s holds layers [s*L/S, (s+1)*L/S) of the S = p*v model stages (p when
 * bidirectional), or with a split (train/pp_partition.h) [bounds[s], bounds[s+1]); the
 * first model stage also embeds, the last also runs the final norm, the LM head and the loss.
 */
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace pb::pp {

struct Placement {
  int p = 1, v = 1;
  bool vshape = false;
  bool bidir = false;  // two pipelines in opposite directions (v = 2), numbered as the V
  int stages() const { return p * v; }  // virtual stages (2p when bidirectional: both pipelines')
  bool v_numbered() const { return vshape || bidir; }
  int stage(int rank, int chunk) const { return v_numbered() && chunk == 1 ? 2 * p - 1 - rank : chunk * p + rank; }
  int rank_of(int stage) const { return v_numbered() && stage >= p ? 2 * p - 1 - stage : stage % p; }
  int chunk_of(int stage) const { return v_numbered() ? (stage >= p ? 1 : 0) : stage / p; }
  // The model's stages (layers split over them) and the one a virtual stage runs.
  int model_stages() const { return bidir ? p : stages(); }
  int model_stage(int s) const { return bidir && s >= p ? s - p : s; }
  bool first_of(int s) const { return model_stage(s) == 0; }                   // embeds
  bool last_of(int s) const { return model_stage(s) == model_stages() - 1; }   // head and loss
  // Whether stage s gets its input from a message (not the first of its pipeline, not across
  // a local boundary), and whether it sends its output on.
  bool from_prev(int s) const { return !first_of(s) && !local_boundary(s - 1); }
  bool to_next(int s) const { return !last_of(s) && !local_boundary(s); }
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
    const int64_t t = model_stage(s);
    if (!bounds.empty()) return {bounds[size_t(t)], bounds[size_t(t) + 1]};
    const int64_t per = L / model_stages();
    return {t * per, (t + 1) * per};
  }
  // The layers of each model stage, and a per-model-stage list spread over the virtual stages.
  std::vector<int64_t> layer_counts(int64_t L) const {
    std::vector<int64_t> n;
    for (int s = 0; s < model_stages(); ++s) n.push_back(layers(L, s).second - layers(L, s).first);
    return n;
  }
  std::vector<int64_t> per_stage(const std::vector<int64_t>& per_model_stage) const {
    std::vector<int64_t> out;
    for (int s = 0; s < stages(); ++s) out.push_back(per_model_stage[size_t(model_stage(s))]);
    return out;
  }
  bool holds_first(int rank) const {
    for (int c = 0; c < v; ++c)
      if (first_of(stage(rank, c))) return true;
    return false;
  }
  bool holds_last(int rank) const {
    for (int c = 0; c < v; ++c)
      if (last_of(stage(rank, c))) return true;
    return false;
  }
};

}  // namespace pb::pp
