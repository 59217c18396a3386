/* The regression gate: identical results pass; a slower median, a check over its tolerance,
 * a non-pass status, any comm row change, a memory peak above its tolerance or gone and a
 * missing case fail; a step faster beyond 20%, a smaller memory peak and a category the
 * baseline lacks warn (a baseline refresh) and pass; a new case is a note; a wrong schema
 * or a malformed document throws one line. */
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "results_fixture.h"
#include <stdexcept>
#include <string>

#include "harness/compare.h"

namespace pb::test {

using harness::compare_results;
using harness::CompareOptions;
using nlohmann::json;

static json make_case(const std::string& name, json layout, double median) {
  json c = case_skeleton(name, layout, json::array());
  c["checks"] = json::array({check("loss.step1", 1.2e-7), check("grad.model.layers.0.mlp.up_proj.weight", 3e-7),
                             check("param.lm_head.weight", 2e-7), json{{"tensor", "comm"}, {"rel_err", 0}, {"max_abs", 0}, {"tol", 0}, {"pass", true}}});
  c["throughput"] = throughput(median, 0.003);
  c["memory"] = json::array({json{{"rank", 0}, {"category", "params"}, {"measured_bytes", 1048576}, {"predicted_bytes", 1048576}}});
  c["comm"] = json::array();
  return c;
}

// Two cases following parabench.results/1: dp2 x tp2 with TP and DP traffic, and pp2.
static json make_results() {
  json a = make_case("dp2_tp2", {{"dp", 2}, {"tp", 2}, {"pp", 1}, {"vpp", 1}, {"cp", 1}, {"ep", 1}}, 12.5);
  a["comm"] = {comm_row("tp", "all_reduce", "forward", 30, 122880),
               comm_row("tp", "all_reduce", "backward", 30, 122880),
               comm_row("dp", "all_reduce", "optimizer", 3, 4194304)};
  json b = make_case("pp2", {{"dp", 1}, {"tp", 1}, {"pp", 2}, {"vpp", 1}, {"cp", 1}, {"ep", 1}}, 20.0);
  b["comm"] = {comm_row("pp", "send", "forward", 6, 24576), comm_row("pp", "recv", "backward", 6, 24576)};
  return {{"schema", "parabench.results/1"},
          {"created", "2026-11-22T01:00:00Z"},
          {"suite", "smoke"},
          {"env", {{"git_sha", "ca8826c"}, {"host", "node1"}, {"world_size", 4}, {"mpi_library", "Open MPI v4.1.4"}}},
          {"cases", {a, b}}};
}

static bool mentions(const harness::CompareResult& r, const std::string& needle) {
  for (const auto& p : r.problems)
    if (p.find(needle) != std::string::npos) return true;
  return false;
}

static void expect_throws_one_line(const json& base, const json& cur, const std::string& needle) {
  try {
    compare_results(base, cur, {});
    ADD_FAILURE() << "accepted, expected an error containing '" << needle << "'";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line: " << msg;
  }
}

TEST(Compare, IdenticalDocumentsPass) {
  auto r = compare_results(make_results(), make_results(), {});
  EXPECT_TRUE(r.ok);
  EXPECT_TRUE(r.problems.empty());
  EXPECT_NE(r.table.find("| dp2_tp2 |"), std::string::npos) << r.table;
  EXPECT_NE(r.table.find("same"), std::string::npos);
}

TEST(Compare, TimingRegressionFailsOnlyWithTiming) {
  json cur = make_results();
  cur["cases"][0]["throughput"]["step_ms_median"] = 25.0;  // x2
  auto r = compare_results(make_results(), cur, {});
  EXPECT_FALSE(r.ok);
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_NE(r.problems[0].find("25.00"), std::string::npos) << r.problems[0];
  EXPECT_NE(r.problems[0].find("12.50"), std::string::npos) << r.problems[0];
  EXPECT_NE(r.problems[0].find("2.00"), std::string::npos) << r.problems[0];
  CompareOptions no_timing;
  no_timing.timing = false;
  EXPECT_TRUE(compare_results(make_results(), cur, no_timing).ok);
}

TEST(Compare, TimingWithinToleranceIsOk) {
  json cur = make_results();
  cur["cases"][0]["throughput"]["step_ms_median"] = 12.5 * 1.2;  // +20% < 25%
  cur["cases"][1]["throughput"]["step_ms_median"] = 10.0;        // faster
  EXPECT_TRUE(compare_results(make_results(), cur, {}).ok);
  CompareOptions tight;
  tight.time_tol = 0.1;
  EXPECT_FALSE(compare_results(make_results(), cur, tight).ok);
}

TEST(Compare, CheckOverToleranceFails) {
  json cur = make_results();
  cur["cases"][1]["checks"][1]["rel_err"] = 2e-3;  // pass still says true: rel_err > tol decides
  auto r = compare_results(make_results(), cur, {});
  EXPECT_FALSE(r.ok);
  EXPECT_TRUE(mentions(r, "grad.model.layers.0.mlp.up_proj.weight"));
  EXPECT_TRUE(mentions(r, "2.00e-03"));
  EXPECT_TRUE(mentions(r, "1.00e-05"));
}

TEST(Compare, CheckWithPassFalseOrNullRelErrFails) {
  json cur = make_results();
  cur["cases"][0]["checks"][0]["pass"] = false;
  EXPECT_FALSE(compare_results(make_results(), cur, {}).ok);
  cur = make_results();
  cur["cases"][0]["checks"][2]["rel_err"] = nullptr;  // NaN written as null
  auto r = compare_results(make_results(), cur, {});
  EXPECT_FALSE(r.ok);
  EXPECT_TRUE(mentions(r, "param.lm_head.weight"));
}

TEST(Compare, NonPassStatusFails) {
  json cur = make_results();
  cur["cases"][1]["status"] = "fail";
  auto r = compare_results(make_results(), cur, {});
  EXPECT_FALSE(r.ok);
  EXPECT_TRUE(mentions(r, "pp2: status fail"));
  cur["cases"][1]["status"] = "error";
  cur["cases"][1]["error"] = "rank 1: timeout";
  EXPECT_TRUE(mentions(compare_results(make_results(), cur, {}), "rank 1: timeout"));
}

TEST(Compare, CommBytesChangedByOneFails) {
  json cur = make_results();
  cur["cases"][0]["comm"][1]["bytes"] = 122881;
  auto r = compare_results(make_results(), cur, {});
  EXPECT_FALSE(r.ok);
  EXPECT_TRUE(mentions(r, "(tp, all_reduce, backward)"));
  EXPECT_TRUE(mentions(r, "122880 -> 122881"));
  EXPECT_NE(r.table.find("differs"), std::string::npos);
  cur = make_results();
  cur["cases"][1]["comm"][0]["calls"] = 7;
  EXPECT_FALSE(compare_results(make_results(), cur, {}).ok);
}

TEST(Compare, CommRowMissingOrExtraFails) {
  json cur = make_results();
  cur["cases"][0]["comm"].erase(2);
  auto r = compare_results(make_results(), cur, {});
  EXPECT_FALSE(r.ok);
  EXPECT_TRUE(mentions(r, "(dp, all_reduce, optimizer) missing in current"));
  auto extra = compare_results(cur, make_results(), {});
  EXPECT_FALSE(extra.ok);
  EXPECT_TRUE(mentions(extra, "not in baseline"));
}

// A row of one call size, as the runner writes it.
static json sized_row(const std::string& group, const std::string& op, const std::string& phase, int64_t calls,
                      int64_t per_call) {
  json r = comm_row(group, op, phase, calls, calls * per_call);
  r["bytes_per_call"] = per_call;
  r["predicted_bus_bytes"] = r["bus_bytes"];
  return r;
}

// dp2 today: the gradient and the loss all-reduce are two rows of one group and phase.
static json sized_results() {
  json r = make_results();
  r["cases"][0]["comm"] = {sized_row("tp", "all_reduce", "forward", 30, 4096),
                           sized_row("dp", "all_reduce", "optimizer", 3, 1398101),
                           sized_row("dp", "all_reduce", "optimizer", 3, 8)};
  return r;
}

TEST(Compare, TwoCallSizesInOneGroupAndPhaseAreTwoRows) {
  EXPECT_TRUE(compare_results(sized_results(), sized_results(), {}).ok);
  json cur = sized_results();
  cur["cases"][0]["comm"][2]["calls"] = 4;  // one more loss all-reduce
  cur["cases"][0]["comm"][2]["bytes"] = 32;
  auto r = compare_results(sized_results(), cur, {});
  EXPECT_FALSE(r.ok);
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_TRUE(mentions(r, "(dp, all_reduce, optimizer, 8 B/call) calls 3 -> 4"));
  cur = sized_results();
  cur["cases"][0]["comm"][1]["bytes_per_call"] = 1398100;  // the same totals at another size
  r = compare_results(sized_results(), cur, {});
  EXPECT_FALSE(r.ok);
  EXPECT_TRUE(mentions(r, "(dp, all_reduce, optimizer, 1398101 B/call) missing in current"));
  EXPECT_TRUE(mentions(r, "(dp, all_reduce, optimizer, 1398100 B/call) not in baseline"));
  cur = sized_results();
  cur["cases"][0]["comm"].push_back(cur["cases"][0]["comm"][2]);
  expect_throws_one_line(sized_results(), cur, "duplicate row (dp, all_reduce, optimizer, 8 B/call)");
}

// A baseline written before rows were one call size (one dp row of 6 calls averaging both
// sizes) still compares: per (group, op, phase), the current rows summed over their sizes.
TEST(Compare, OldRowLayoutIsComparedPerPhase) {
  json old = sized_results();
  old["cases"][0]["comm"] = {comm_row("tp", "all_reduce", "forward", 30, 30 * 4096),
                             comm_row("dp", "all_reduce", "optimizer", 6, 3 * 1398101 + 3 * 8)};
  EXPECT_TRUE(compare_results(old, sized_results(), {}).ok);
  EXPECT_TRUE(compare_results(sized_results(), old, {}).ok);
  json cur = sized_results();
  cur["cases"][0]["comm"][2]["bytes"] = 28;
  auto r = compare_results(old, cur, {});
  EXPECT_FALSE(r.ok);
  EXPECT_TRUE(mentions(r, "(dp, all_reduce, optimizer) calls 6 -> 6, bytes 4194327 -> 4194331"));
}

TEST(Compare, CaseMissingInCurrentFails) {
  json cur = make_results();
  cur["cases"].erase(0);
  auto r = compare_results(make_results(), cur, {});
  EXPECT_FALSE(r.ok);
  EXPECT_TRUE(mentions(r, "dp2_tp2: in baseline, missing in current"));
}

TEST(Compare, ExtraCaseInCurrentIsANote) {
  json cur = make_results();
  json extra = cur["cases"][1];
  extra["name"] = "pp2_vpp2";
  cur["cases"].push_back(extra);
  auto r = compare_results(make_results(), cur, {});
  EXPECT_TRUE(r.ok);
  EXPECT_NE(r.table.find("pp2_vpp2"), std::string::npos);
  EXPECT_NE(r.table.find("not in baseline"), std::string::npos);
}

TEST(Compare, WrongSchemaThrows) {
  json bad = make_results();
  bad["schema"] = "parabench.results/0";
  expect_throws_one_line(bad, make_results(), "baseline: schema");
  expect_throws_one_line(make_results(), bad, "current: schema");
  bad.erase("schema");
  expect_throws_one_line(make_results(), bad, "schema is missing");
}

TEST(Compare, MalformedDocumentsThrowOneLine) {
  json bad = make_results();
  bad["cases"] = json::object({{"dp2_tp2", 1}});
  expect_throws_one_line(make_results(), bad, "'cases' is not an array");
  bad = make_results();
  bad["cases"][0]["comm"][0]["bytes"] = "many";
  expect_throws_one_line(make_results(), bad, "current: cases[0] (dp2_tp2): comm[0]: 'bytes' is not an integer");
  bad = make_results();
  bad["cases"][1]["checks"] = 3;
  expect_throws_one_line(bad, make_results(), "'checks' is not an array");
  bad = make_results();
  bad["cases"][0].erase("name");
  expect_throws_one_line(bad, make_results(), "missing 'name'");
  expect_throws_one_line(json::array(), make_results(), "not a JSON object");
  bad = make_results();
  bad["cases"].push_back(bad["cases"][0]);
  expect_throws_one_line(make_results(), bad, "duplicate case name 'dp2_tp2'");
}

static bool warns(const harness::CompareResult& r, const std::string& needle) {
  for (const auto& w : r.warnings)
    if (w.find(needle) != std::string::npos) return true;
  return false;
}

TEST(Compare, MemoryAboveItsToleranceFailsWithinPassesBelowWarns) {
  json cur = make_results();
  cur["cases"][0]["memory"][0]["measured_bytes"] = 1048576 + 1048576 / 10;  // +10% > 5%
  auto r = compare_results(make_results(), cur, {});
  EXPECT_FALSE(r.ok);
  EXPECT_TRUE(mentions(r, "dp2_tp2: memory rank 0 params 1048576 -> 1153433 B"));
  EXPECT_NE(r.table.find("differs"), std::string::npos);
  cur["cases"][0]["memory"][0]["measured_bytes"] = 1048576 + 1048576 / 50;  // +2%
  r = compare_results(make_results(), cur, {});
  EXPECT_TRUE(r.ok);
  EXPECT_NE(r.table.find("within"), std::string::npos) << r.table;
  CompareOptions tight;
  tight.mem_tol = 0.01;
  EXPECT_FALSE(compare_results(make_results(), cur, tight).ok);
  cur["cases"][0]["memory"][0]["measured_bytes"] = 1048576 / 2;  // halved: a refresh is due
  r = compare_results(make_results(), cur, {});
  EXPECT_TRUE(r.ok);
  EXPECT_TRUE(warns(r, "smaller, refresh the baseline"));
}

TEST(Compare, MemoryCategoryGoneFailsNewOneWarns) {
  json cur = make_results();
  cur["cases"][1]["memory"] = json::array();
  EXPECT_TRUE(mentions(compare_results(make_results(), cur, {}), "pp2: memory rank 0 params missing in current"));
  cur = make_results();
  cur["cases"][1]["memory"].push_back({{"rank", 0}, {"category", "host"}, {"measured_bytes", 0}, {"predicted_bytes", 0}});
  auto r = compare_results(make_results(), cur, {});
  EXPECT_TRUE(r.ok);
  EXPECT_TRUE(warns(r, "pp2: memory rank 0 host not in baseline"));
}

TEST(Compare, FasterStepBeyondTheRefreshToleranceWarnsAndPasses) {
  json cur = make_results();
  cur["cases"][0]["throughput"]["step_ms_median"] = 12.5 * 0.7;  // 30% faster
  auto r = compare_results(make_results(), cur, {});
  EXPECT_TRUE(r.ok);
  EXPECT_TRUE(warns(r, "dp2_tp2: step_ms_median 8.75 ms vs baseline 12.50 ms, ratio 0.70 < 0.80: faster, refresh the baseline"));
  cur["cases"][0]["throughput"]["step_ms_median"] = 12.5 * 0.9;  // 10%: nothing
  EXPECT_TRUE(compare_results(make_results(), cur, {}).warnings.empty());
  CompareOptions no_timing;
  no_timing.timing = false;
  cur["cases"][0]["throughput"]["step_ms_median"] = 1.0;
  EXPECT_TRUE(compare_results(make_results(), cur, no_timing).warnings.empty());
}

}  // namespace pb::test
