/* What the case tests of the distributed model share: bf16 copies of cases, and the
 * expectations on rank 0's results entry of one case: it passes, its communication equals
 * the analytic terms row by row, and every memory category of every rank equals the
 * prediction. */
#pragma once

#include <gtest/gtest.h>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "harness/case.h"

namespace pb::test {

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

// Six categories on every rank, each to the byte; in bf16 the CPU kernels' fp32 promotion
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
  EXPECT_EQ(rows, 6 * c.layout.world());
}

}  // namespace pb::test
