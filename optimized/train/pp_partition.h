/* Stage partitioning: how many decoder layers each pipeline stage holds (seed 004,
 * inter-layer partitioning; seed 001, partitioning algorithms).
 *
 * S = p*v stages in model order (pp_placement.h places stage s on its rank); stage 0 also
 * embeds, the last also runs the final norm, the LM head and the loss. A split is a list
 * of layers per stage, each >= 1, summing to L. Ways to choose it (case keys):
 *   uniform    L/S each (the default; S must divide L)
 *   pp_layers  [n_0, .., n_{S-1}] given
 *   pp_first_layers N1 / pp_last_layers NL   Megatron-LM's --decoder-first-pipeline-num-layers
 *              and --decoder-last-pipeline-num-layers: pipeline rank 0 holds N1 layers, rank
 *              p-1 NL (either may be left out), the other ranks split the rest evenly; with v
 *              chunks per rank each of a rank's stages holds a v-th of its layers (so v must
 *              divide each rank's count)
 *   pp_layers "balanced"  the partitioner: contiguous layers per stage minimizing the largest
 *              stage cost (PipeDream's planner objective, Narayanan et al. SOSP'19, without
 *              replication; DAPPLE balances stages the same way), by dynamic programming over
 *              (stage, last layer) in O(S L^2); costs per layer from the model's training FLOPs
 *              (reference/model/flops.h: projections, attention core, MLP or experts), the LM
 *              head's added to the last stage, the embedding's (a lookup: 0 FLOPs) to stage 0;
 *              or costs given (`parabench schedule --layer-costs`), e.g. measured
 * Among the splits with the least largest stage the partitioner takes the most even one
 * (the least sum of squared stage costs, a second pass of the same programming), ties going
 * to the earliest stages' holding the most layers: deterministic.
 */
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "optimized/parallel/pp_placement.h"
#include "reference/model/config.h"

namespace pb::pp {

struct LayerCosts {
  std::vector<double> layer;   // per decoder layer, L entries, >= 0
  double embed = 0, head = 0;  // added to stage 0 and to the last stage
};

// Training FLOPs per token of each layer and of the head (S_seq: the sequence length).
LayerCosts analytic_layer_costs(const ref::ModelConfig& mc, int64_t seq_length);

// The splits; each throws pb::Error with one line on bad input.
std::vector<int64_t> uniform_split(int64_t L, int S);
std::vector<int64_t> megatron_split(const Placement& pl, int64_t L, int64_t first, int64_t last);
std::vector<int64_t> balanced_split(const LayerCosts& c, int S);
// Checks a given split: S entries, each >= 1, summing to L.
void check_split(const std::vector<int64_t>& layers, int64_t L, int S);

// The cost of each stage under a split.
std::vector<double> stage_costs(const LayerCosts& c, const std::vector<int64_t>& layers);

// Integer stage weights for the simulator (Costs::stage): each stage's cost in units of a
// quarter of the mean layer's, rounded, at least 1.
std::vector<int64_t> stage_weights(const LayerCosts& c, const std::vector<int64_t>& layers);

// "2, 3, 3, 2" (for messages and tables).
std::string split_str(const std::vector<int64_t>& layers);

}  // namespace pb::pp
