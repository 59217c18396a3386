/* What the case tests of the distributed model share: bf16 copies of cases, and the
 * expectations on rank 0's results entry of one case: it passes, its communication equals
 * the analytic terms row by row, and every memory category of every rank equals the
 * prediction. */
#pragma once

#include <gtest/gtest.h>
#include <cstring>
#include <functional>
#include <utility>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "harness/case.h"
#include "harness/runner.h"
#include "reference/common/error.h"
#include "reference/io/checkpoint.h"
#include "optimized/core/allocator.h"
#include "optimized/model/dist_model.h"
#include "optimized/train/registry.h"

namespace pb::test {

// A small training case: model m over dp x tp (tp > 1 with SP), micro-batches of 2 x 8
// tokens, mb of them per step, 2 steps at lr 3e-3, with the given features.
inline harness::Case small_case(const std::string& name, const ref::ModelConfig& m, std::vector<std::string> features,
                                int dp = 1, int tp = 1, int64_t mb = 2) {
  harness::Case c;
  c.name = name;
  c.model = m;
  c.model_json = io::hf_config_json(m);
  c.layout.dp = dp;
  c.layout.tp = tp;
  c.features = std::move(features);
  if (tp > 1) c.features.push_back("sp");
  c.train.micro_batch_size = 2;
  c.train.seq_length = 8;
  c.train.num_micro_batches = mb;
  c.train.steps = 2;
  c.train.lr = 3e-3;
  return c;
}

// A model of the case's techniques (B = 2, S = 8), for tests that drive DistModel directly.
inline DistModelConfig model_config(const harness::Case& c, uint64_t seed) {
  const Features f = c.typed_features();
  DistModelConfig mc{c.model, 2, 8, strategies_for({c.model, c.train, c.layout, f, c.schedule}), seed};
  mc.distributed_optimizer = f.distributed_optimizer, mc.zero_stage = f.zero_stage, mc.bucket_size = f.bucket_size;
  return mc;
}

// The same case without one of its features.
inline harness::Case without_feature(harness::Case c, const std::string& feature) {
  std::erase(c.features, feature);
  return c;
}

// The case is refused with one line that contains needle.
inline void expect_invalid(const harness::Case& c, const std::string& needle) {
  try {
    harness::validate_case(c, c.layout.world());
    ADD_FAILURE() << c.name << " accepted";
  } catch (const pb::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

// Adds a copy of each named case, renamed prefix + name and changed by edit.
inline void add_variants(std::vector<harness::Case>& all, const std::vector<std::string>& names,
                         const std::string& prefix, const std::function<void(harness::Case&)>& edit) {
  for (const auto& name : names)
    for (const auto& c : std::vector<harness::Case>(all))
      if (c.name == name) {
        harness::Case v = c;
        v.name = prefix + c.name;
        edit(v);
        all.push_back(v);
      }
}

// Adds a bf16 copy ("bf16_" + name) of each named case.
inline void add_bf16_copies(std::vector<harness::Case>& all, const std::vector<std::string>& names) {
  add_variants(all, names, "bf16_", [](harness::Case& c) { c.dtype = "bf16"; });
}

// Status "pass" and every check passing.
inline void expect_pass(const nlohmann::json& r) {
  EXPECT_EQ(r["status"], "pass");
  for (const auto& ch : r["checks"]) EXPECT_TRUE(ch["pass"].get<bool>()) << ch.dump();
}

// Every (group, op, phase, call size) row: calls and bytes as predicted.
inline void expect_exact_comm(const nlohmann::json& r) {
  for (const auto& row : r["comm"]) {
    EXPECT_EQ(row["bytes"], row["predicted_bytes"]) << row.dump();
    EXPECT_EQ(row["calls"], row["predicted_calls"]) << row.dump();
  }
}

// Every category on every rank, each to the byte; in bf16 the CPU kernels' fp32 promotion
// copies add to the workspace (kernel-internal, not the model's term): at least it.
inline void expect_exact_memory(const nlohmann::json& r, const harness::Case& c) {
  int rows = 0;
  for (const auto& row : r["memory"]) {
    if (row["category"] == "workspace" && c.dtype == "bf16") {
      EXPECT_GE(row["measured_bytes"], row["predicted_bytes"]) << row.dump();
    } else {
      EXPECT_EQ(row["measured_bytes"], row["predicted_bytes"]) << row.dump();
    }
    ++rows;
  }
  EXPECT_EQ(rows, kMemCategories * c.layout.world());
}

// Every case run on all of MPI_COMM_WORLD's ranks (each case's world): on rank 0 it passes
// with exact communication and memory, then `more` checks its results entry.
inline void run_exact(const std::vector<harness::Case>& cases, int rank,
                      const std::function<void(const harness::Case&, const nlohmann::json&)>& more = {}) {
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    harness::validate_case(c, c.layout.world());
    const auto o = harness::run_case(c, MPI_COMM_WORLD, {});
    if (rank != 0) continue;
    expect_pass(o.result);
    expect_exact_comm(o.result);
    expect_exact_memory(o.result, c);
    if (more) more(c, o.result);
  }
}

// Two runs of the same training (a memory technique and the case without it): the losses
// of every rank and the final parameters (rank 0) bitwise equal.
inline void expect_bitwise_equal(const harness::CaseOutcome& a, const harness::CaseOutcome& b, bool rank0) {
  ASSERT_EQ(a.losses.size(), b.losses.size());
  EXPECT_EQ(std::memcmp(a.losses.data(), b.losses.data(), a.losses.size() * sizeof(double)), 0);
  if (!rank0) return;
  ASSERT_EQ(a.params.size(), b.params.size());
  for (size_t i = 0; i < a.params.size(); ++i)
    EXPECT_EQ(std::memcmp(a.params[i].data(), b.params[i].data(), a.params[i].size() * sizeof(float)), 0) << i;
}

// A memory technique's case and `plain`, the same training without it, run on comm's
// ranks: bitwise equal, and on rank 0 the case passes with exact communication and every
// memory category exact. Returns (case, plain).
inline std::pair<harness::CaseOutcome, harness::CaseOutcome> run_beside_plain(const harness::Case& c,
                                                                              const harness::Case& plain, int rank) {
  harness::validate_case(c, c.layout.world());
  auto o = harness::run_case(c, MPI_COMM_WORLD, {});
  auto p = harness::run_case(plain, MPI_COMM_WORLD, {});
  expect_bitwise_equal(o, p, rank == 0);
  if (rank == 0) {
    expect_pass(o.result);
    expect_exact_comm(o.result);
    expect_exact_memory(o.result, c);
  }
  return {std::move(o), std::move(p)};
}

// Every rank's measured peak of a category lower in a than in b, by exactly the predicted
// difference.
inline void expect_saving_as_predicted(const nlohmann::json& a, const nlohmann::json& b, const std::string& category) {
  auto rows = [&](const nlohmann::json& res) {
    std::vector<std::pair<int64_t, int64_t>> out;  // (measured, predicted) per rank
    for (const auto& row : res["memory"])
      if (row["category"] == category) out.emplace_back(row["measured_bytes"], row["predicted_bytes"]);
    return out;
  };
  const auto x = rows(a), y = rows(b);
  ASSERT_EQ(x.size(), y.size());
  for (size_t k = 0; k < x.size(); ++k) {
    EXPECT_LT(x[k].first, y[k].first) << category << " rank " << k;
    EXPECT_EQ(y[k].first - x[k].first, y[k].second - x[k].second) << category << " rank " << k;
  }
}

}  // namespace pb::test
