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

// The fields every case entry has, status "pass", before checks, memory and comm.
inline nlohmann::json case_skeleton(const std::string& name, nlohmann::json layout, nlohmann::json features) {
  return {{"name", name},     {"features", features}, {"layout", layout}, {"backend", "cpu"},
          {"dtype", "fp32"},  {"steps", 3},           {"seed", 1234},     {"status", "pass"}};
}

inline nlohmann::json throughput(double median, double tflops) {
  return {{"step_ms_median", median},       {"step_ms_min", median * 0.9}, {"step_ms_max", median * 1.2},
          {"tokens_per_s", 64000.0 / median}, {"model_tflops", tflops},     {"mfu", nullptr},
          {"peak_tflops", nullptr}};
}

}  // namespace pb::test
