/* Benchmark cases: model config x layout x features x backend x dtype x steps x seed,
 * read from JSON case files (suites/cases/NAME.json).
 *
 *   {"suite": "smoke",
 *    "models":   {"tiny": {<Hugging Face config fields>}},
 *    "defaults": {"backend": "cpu", "dtype": "fp32", "steps": 3, "seed": 1234,
 *                 "train": {"micro_batch_size": 2, "seq_length": 16, "num_micro_batches": 2, ...}},
 *    "cases": [{"name": "tp2_sp", "model": "tiny", "layout": {"tp": 2}, "features": ["sp"]},
 *              {"name": "pp2_vpp2", "model": "tiny", "layout": {"pp": 2, "vpp": 2}, "schedule": "interleaved"}, ...]}
 * A case's "model" is a name from "models" or an inline object; any default can be
 * overridden per case. num_micro_batches is per DP rank: the global batch is
 * micro_batch_size x num_micro_batches x dp sequences. Unknown keys are errors.
 */
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "optimized/model/features.h"
#include "optimized/parallel/layout.h"
#include "reference/model/config.h"

namespace pb::harness {

struct Case {
  std::string name;
  ref::ModelConfig model;
  ref::TrainConfig train;  // micro_batch_size, seq_length, num_micro_batches (per DP rank), optimizer, seed, steps
  Layout layout;
  std::vector<std::string> features;
  std::string backend = "cpu";  // cpu | cuda
  std::string dtype = "fp32";   // fp32 | bf16
  std::string schedule = "1f1b";  // pipeline schedule when pp > 1 (the registry lists the kinds)
  std::string cp_kind = "ring";     // with cp > 1: ring
  std::string cp_balance = "zigzag";  // with cp > 1: zigzag (rank r keeps chunks r, 2c-1-r) | contiguous
  int cp_ulysses = 1;                 // hybrid CP: the Ulysses degree u
  std::string moe_dispatcher = "alltoall";  // MoE token dispatcher: alltoall | allgather
  std::string recompute_method = "uniform";  // recompute_full: uniform | block
  int recompute_num_layers = 1;              // recompute_full: N (layers per group, or first N)
  int zero_stage = 1;                        // distributed_optimizer: 1 | 2 | 3
  int64_t bucket_size = 0;                   // distributed_optimizer stage 1: elements per bucket (0: one)
  int mc2_chunks = 2;                        // mc2: chunks each split linear runs in
  std::vector<int64_t> pp_layers;            // PP: layers per stage (train/pp_partition.h); empty: even
  bool pp_balanced = false;                  // PP: "pp_layers": "balanced", the partitioner's split
  int64_t pp_first_layers = 0, pp_last_layers = 0;  // PP: Megatron's first / last rank's layers (0: unset)
  int chimera_pipelines = 2;                 // schedule chimera: pipelines (model replicas), an even count
  int pp_update_every = 0;                   // schedule pipedream-2bw: micro-batches per weight version (0: p)
  int terapipe_slices = 0;                   // schedule terapipe: token slices per sequence (0: 1)
  std::string tp_kind = "1d";                // tp's arrangement: 1d | 2d | 2.5d | 3d (parallel/tp_grid.h)
  int tp_depth = 1;                          // tp_kind 2.5d: the depth d
  nlohmann::json model_json;    // the HF config of the model, for the results

  // The reference's view of the same step: all DP ranks' micro-batches accumulated; with
  // an MoE capacity factor, the rows each rank routes (its capacity group).
  ref::TrainConfig reference_train() const;
  int64_t global_batch() const { return train.micro_batch_size * train.num_micro_batches * layout.dp; }
  // The same training on one rank: no parallel degrees, dp times the micro-batches, and
  // only the features that need no parallel degree (the technique registry says which).
  Case one_rank() const;
  // The registry's typed features of the names, with the CP options.
  Features typed_features() const;
  // The layout's degrees and the arrangement of a grid's tp ranks: "dp2 tp8 (2.5d, d2)".
  std::string layout_str() const;
};

struct Suite {
  std::string name;
  std::vector<Case> cases;
};

// A suite by name (smoke, ci, full, qualification: suites/cases/NAME.json) or a file path.
Suite load_suite(const std::string& name_or_path);
Suite parse_suite(const nlohmann::json& j, const std::string& origin);
std::string cases_dir();  // $PB_CASES_DIR or the source tree's suites/cases
std::vector<std::string> suite_names();

}  // namespace pb::harness
