/* Pieces of synthetic parabench.results/1 documents for the report and compare tests. */
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace pb::test {

inline nlohmann::json check(const std::string& tensor, double rel_err, double tol = 1e-5) {
  return {{"tensor", tensor}, {"rel_err", rel_err}, {"max_abs", rel_err * 10}, {"tol", tol}, {"pass", rel_err <= tol}};
}

inline nlohmann::json comm_row(const std::string& group, const std::string& op, const std::string& phase,
                               int64_t calls, int64_t bytes) {
  return {{"group", group},           {"op", op},
          {"phase", phase},           {"calls", calls},
          {"bytes", bytes},           {"bus_bytes", double(bytes)},
          {"predicted_calls", calls}, {"predicted_bytes", bytes}};
}

}  // namespace pb::test
