/* The results report: four Markdown tables (and CSV sections) from a results document;
 * FAIL where a check fails, comm shares summing to 100 % per case, "—" for null or
 * missing optional fields, a line for an incomplete document, and the refusals of compare
 * (one schema validation for both). */
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "results_fixture.h"
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "harness/compare.h"
#include "harness/report.h"

namespace pb::test {

using harness::csv_tables;
using harness::markdown_report;
using nlohmann::json;

static json make_case(const std::string& name, json layout, double median) {
  json c = case_skeleton(name, layout, json::array({"sp"}));
  c["checks"] = json::array({check("loss.step1", 1.2e-7), check("loss.step2", 1.5e-7),
                             check("grad.model.layers.0.mlp.up_proj.weight", 3e-7), check("grad.lm_head.weight", 4e-7),
                             check("param.lm_head.weight", 2e-7), json{{"tensor", "comm"}, {"rel_err", 0}, {"max_abs", 0}, {"tol", 0}, {"pass", true}}});
  c["throughput"] = throughput(median, 0.0031);
  c["memory"] = json::array({json{{"rank", 0}, {"category", "params"}, {"measured_bytes", 1048576}, {"predicted_bytes", 1048576}},
                             json{{"rank", 0}, {"category", "activations"}, {"measured_bytes", 3000}, {"predicted_bytes", 2000}},
                             json{{"rank", 1}, {"category", "workspace"}, {"measured_bytes", 512}, {"predicted_bytes", 0}}});
  c["comm"] = json::array();
  return c;
}

// Two cases following parabench.results/1: dp2 x tp2 with TP and DP traffic, and pp2.
static json make_results() {
  json a = make_case("dp2_tp2", {{"dp", 2}, {"tp", 2}, {"pp", 1}, {"vpp", 1}, {"cp", 1}, {"ep", 1}}, 12.5);
  a["comm"] = {comm_row("dp", "all_reduce", "optimizer", 3, 4194304),
               comm_row("tp", "all_reduce", "backward", 30, 122880),
               comm_row("tp", "all_reduce", "forward", 30, 122880), comm_row("tp", "all_gather", "forward", 10, 40960)};
  json b = make_case("pp2", {{"dp", 1}, {"tp", 1}, {"pp", 2}, {"vpp", 1}, {"cp", 1}, {"ep", 1}}, 20.0);
  b["features"] = json::array();
  b["throughput"]["mfu"] = 0.4;
  b["throughput"]["peak_tflops"] = 100.0;
  b["comm"] = {comm_row("pp", "send", "forward", 6, 24576), comm_row("pp", "recv", "backward", 6, 24576)};
  return {{"schema", "parabench.results/1"},
          {"created", "2026-11-22T01:00:00Z"},
          {"suite", "smoke"},
          {"env",
           {{"git_sha", "ca8826c"},
            {"host", "node1"},
            {"cpu_model", "Intel(R) Xeon(R)"},
            {"cores", 2},
            {"world_size", 4},
            {"mpi_library", "Open MPI v4.1.4"},
            {"cuda_version", nullptr},
            {"gpu", nullptr}}},
          {"cases", {a, b}}};
}

static std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cell;
  std::istringstream in(s);
  while (std::getline(in, cell, sep)) out.push_back(cell);
  return out;
}

static std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(' '), e = s.find_last_not_of(' ');
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// Body rows of the Markdown table under "## title", cells trimmed.
static std::vector<std::vector<std::string>> md_rows(const std::string& md, const std::string& title) {
  std::vector<std::vector<std::string>> rows;
  size_t at = md.find("## " + title + "\n");
  if (at == std::string::npos) return rows;
  std::vector<std::string> lines = split(md.substr(at), '\n');
  for (size_t i = 4; i < lines.size() && !lines[i].empty() && lines[i][0] == '|'; ++i) {  // title, blank, header, rule
    std::vector<std::string> cells;
    for (const auto& c : split(lines[i].substr(1), '|')) cells.push_back(trim(c));
    rows.push_back(cells);
  }
  return rows;
}

TEST(Report, HasTheFourSectionsAndTheEnvironment) {
  const std::string md = markdown_report(make_results());
  for (const char* title : {"## Equivalence", "## Throughput", "## Memory", "## Communication"})
    EXPECT_NE(md.find(title), std::string::npos) << title << "\n" << md;
  for (const char* env :
       {"smoke", "2026-11-22T01:00:00Z", "ca8826c", "node1", "Intel(R) Xeon(R)", "world size 4", "Open MPI v4.1.4"})
    EXPECT_NE(md.find(env), std::string::npos) << env;
  EXPECT_EQ(md.find("FAIL"), std::string::npos) << md;
  const std::string csv = csv_tables(make_results());
  for (const char* title : {"# equivalence\n", "# throughput\n", "# memory\n", "# communication\n"})
    EXPECT_NE(csv.find(title), std::string::npos) << title;
  EXPECT_NE(csv.find(",4194304,"), std::string::npos) << "CSV bytes are exact";
}

TEST(Report, EquivalenceGroupsChecksByKindAndShowsFail) {
  json r = make_results();
  r["cases"][0]["checks"][3]["rel_err"] = 2e-3;
  r["cases"][0]["checks"][3]["pass"] = false;
  auto rows = md_rows(markdown_report(r), "Equivalence");
  ASSERT_EQ(rows.size(), 8u);  // 2 cases x {loss, grad, param, comm}
  // case, status, kind, tensors, worst rel_err, worst tensor, worst max_abs, tol, result
  EXPECT_EQ(rows[1][2], "grad");
  EXPECT_EQ(rows[1][3], "2");
  EXPECT_EQ(rows[1][4], "2.00e-03");
  EXPECT_EQ(rows[1][5], "grad.lm_head.weight");
  EXPECT_EQ(rows[1][8], "FAIL");
  EXPECT_EQ(rows[0][8], "PASS");
  EXPECT_EQ(rows[0][4], "1.50e-07");
}

TEST(Report, CommSharesSumToHundredPerCaseAndRowsAreSortedByPhase) {
  auto rows = md_rows(markdown_report(make_results()), "Communication");
  ASSERT_EQ(rows.size(), 6u);
  // case, group, op, phase, bytes/call, calls, total bytes, bus bytes/call, total bus bytes, share %,
  // predicted calls, predicted bytes, predicted bus bytes, match
  double dp_tp = 0, pp = 0;
  for (const auto& row : rows) (row[0] == "pp2" ? pp : dp_tp) += std::stod(row[9]);
  EXPECT_NEAR(dp_tp, 100.0, 0.05);
  EXPECT_NEAR(pp, 100.0, 0.05);
  EXPECT_EQ(rows[0][3], "forward");
  EXPECT_EQ(rows[0][2], "all_gather");  // forward tp rows: all_gather before all_reduce
  EXPECT_EQ(rows[2][3], "backward");
  EXPECT_EQ(rows[3][3], "optimizer");
  EXPECT_EQ(rows[3][4], "1.33 MiB");  // 4194304 / 3: a row without bytes_per_call (older results)
  EXPECT_EQ(rows[3][6], "4.00 MiB");
  EXPECT_EQ(rows[0][13], "✓");
  EXPECT_EQ(rows[3][12], "—");  // no predicted bus bytes in older results
}

TEST(Report, CommMismatchShowsCross) {
  json r = make_results();
  r["cases"][1]["comm"][1]["predicted_bytes"] = 24577;
  auto rows = md_rows(markdown_report(r), "Communication");
  ASSERT_EQ(rows.size(), 6u);
  EXPECT_EQ(rows[5][13], "✗");
}

// A row of one call size, as the runner writes it: bus bytes = payload x the nccl-tests factor.
static json sized_row(const std::string& group, const std::string& op, const std::string& phase, int64_t calls,
                      int64_t per_call, double factor) {
  json r = comm_row(group, op, phase, calls, calls * per_call);
  r["bytes_per_call"] = per_call;
  r["bus_bytes"] = factor * double(calls * per_call);
  r["predicted_bus_bytes"] = r["bus_bytes"];
  return r;
}

// dp2: the gradient all-reduce and the 8-byte loss all-reduce of one group and phase are
// two rows with their own sizes (largest first), never one average; CSV keeps exact bytes.
TEST(Report, TwoCallSizesInOneGroupAndPhaseAreTwoRows) {
  json r = make_results();
  r["cases"][0]["comm"] = {sized_row("dp", "all_reduce", "optimizer", 3, 8, 1.0),
                           sized_row("dp", "all_reduce", "optimizer", 3, 131072, 1.0)};
  auto rows = md_rows(markdown_report(r), "Communication");
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[0][4], "128.00 KiB");
  EXPECT_EQ(rows[0][5], "3");
  EXPECT_EQ(rows[0][6], "384.00 KiB");
  EXPECT_EQ(rows[1][4], "8 B");
  EXPECT_EQ(rows[1][6], "24 B");
  EXPECT_EQ(rows[1][13], "✓");
  const std::string csv = csv_tables(r);
  EXPECT_NE(csv.find("dp2_tp2,dp,all_reduce,optimizer,131072,3,393216,131072,393216,"), std::string::npos) << csv;
  EXPECT_NE(csv.find("dp2_tp2,dp,all_reduce,optimizer,8,3,24,8,24,"), std::string::npos) << csv;
}

// The same payload on tp2 and tp4: the bus bytes show the ring's 2(n-1)/n (1x against 1.5x).
TEST(Report, BusBytesShowTheGroupSize) {
  json r = make_results();
  r["cases"][0]["comm"] = {sized_row("tp", "all_reduce", "forward", 2, 4096, 2.0 * 1 / 2)};
  r["cases"][1]["comm"] = {sized_row("tp", "all_reduce", "forward", 2, 4096, 2.0 * 3 / 4)};
  auto rows = md_rows(markdown_report(r), "Communication");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0][4], rows[1][4]);  // the same payload per call
  EXPECT_EQ(rows[0][7], "4.00 KiB");
  EXPECT_EQ(rows[1][7], "6.00 KiB");
  EXPECT_EQ(rows[1][8], "12.00 KiB");
  EXPECT_EQ(rows[1][12], "12.00 KiB");
  r["cases"][1]["comm"][0]["predicted_bus_bytes"] = 8192.0;  // a wrong bus factor in the prediction
  EXPECT_EQ(md_rows(markdown_report(r), "Communication")[1][13], "✗");
}

TEST(Report, ThroughputLayoutFeaturesAndMfu) {
  auto rows = md_rows(markdown_report(make_results()), "Throughput");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0][1], "dp2 tp2");
  EXPECT_EQ(rows[1][1], "pp2");
  EXPECT_EQ(rows[0][2], "sp");
  EXPECT_EQ(rows[0][5], "12.50");
  EXPECT_EQ(rows[0][10], "—");  // null mfu
  EXPECT_EQ(rows[0][11], "—");  // null peak
  EXPECT_EQ(rows[1][10], "40.00%");
}

TEST(Report, MemoryRatioAndBytes) {
  auto rows = md_rows(markdown_report(make_results()), "Memory");
  ASSERT_EQ(rows.size(), 6u);
  EXPECT_EQ(rows[0][3], "1.00 MiB");
  EXPECT_EQ(rows[0][5], "1.000");
  EXPECT_EQ(rows[1][3], "2.93 KiB");
  EXPECT_EQ(rows[1][5], "1.500");
  EXPECT_EQ(rows[2][3], "512 B");
  EXPECT_EQ(rows[2][5], "—");  // predicted 0
}

TEST(Report, ErrorCaseShowsItsMessage) {
  json r = make_results();
  json& c = r["cases"][1];
  c["status"] = "error";
  c["error"] = "rank 1: MPI timeout | after 60 s";
  c.erase("checks");
  c.erase("throughput");
  c.erase("memory");
  c.erase("comm");
  const std::string md = markdown_report(r);
  EXPECT_NE(md.find("error: rank 1: MPI timeout \\| after 60 s"), std::string::npos) << md;
  EXPECT_NE(md.find("ERROR"), std::string::npos);
  EXPECT_EQ(md_rows(md, "Throughput")[1][5], "—");
}

TEST(Report, MissingOptionalFieldsPrintDashes) {
  json r = make_results();
  r.erase("env");
  r.erase("created");
  json& c = r["cases"][0];
  for (const char* k : {"features", "layout", "backend", "dtype", "memory", "comm"}) c.erase(k);
  c["throughput"] = {{"step_ms_median", nullptr}};
  c["checks"][0]["max_abs"] = nullptr;
  EXPECT_NO_THROW(markdown_report(r));
  EXPECT_NO_THROW(csv_tables(r));
  EXPECT_EQ(md_rows(markdown_report(r), "Throughput")[0][1], "1 rank");
  json no_cases = make_results();
  no_cases["cases"] = json::array();
  EXPECT_NE(markdown_report(no_cases).find("_no rows_"), std::string::npos);
  json partial = make_results();  // a job that ended early: its finished cases, said so
  partial["complete"] = false;
  EXPECT_NE(markdown_report(partial).find("**incomplete**"), std::string::npos);
  EXPECT_EQ(markdown_report(make_results()).find("incomplete"), std::string::npos);
}

// The message of a pb::Error thrown by f, or "" when none is thrown.
template <class F>
std::string thrown(F f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

// report refuses exactly what compare refuses, with the same line (but the document's name).
TEST(Report, RefusesWhatCompareRefuses) {
  std::vector<std::pair<std::string, json>> bad;
  auto mutate = [&](const std::string& what, auto f) {
    json r = make_results();
    f(r);
    bad.push_back({what, r});
  };
  mutate("schema /2", [](json& r) { r["schema"] = "parabench.results/2"; });
  mutate("no schema", [](json& r) { r.erase("schema"); });
  mutate("a case file", [](json& r) {
    r = {{"suite", "x"}, {"models", json::object()}, {"cases", json::array({{{"name", "a"}, {"layout", {{"dp", 2}}}}})}};
  });
  mutate("checks oops", [](json& r) { r["cases"][0]["checks"] = "oops"; });
  mutate("pass a string", [](json& r) { r["cases"][0]["checks"][0]["pass"] = "yes"; });
  mutate("rel_err missing", [](json& r) { r["cases"][0]["checks"][0].erase("rel_err"); });
  mutate("status missing", [](json& r) { r["cases"][0].erase("status"); });
  mutate("status unknown", [](json& r) { r["cases"][0]["status"] = "great"; });
  mutate("median a string", [](json& r) { r["cases"][0]["throughput"] = {{"step_ms_median", "fast"}}; });
  mutate("comm row 42", [](json& r) { r["cases"][0]["comm"][1] = 42; });
  mutate("comm calls missing", [](json& r) { r["cases"][0]["comm"][0].erase("calls"); });
  mutate("memory bytes text", [](json& r) { r["cases"][0]["memory"][0]["measured_bytes"] = "1 MiB"; });
  mutate("memory rank missing", [](json& r) { r["cases"][0]["memory"][0].erase("rank"); });
  mutate("pipeline a list", [](json& r) { r["cases"][1]["pipeline"] = json::array(); });
  mutate("complete text", [](json& r) { r["complete"] = "no"; });
  mutate("duplicate names", [](json& r) { r["cases"][1]["name"] = r["cases"][0]["name"]; });
  mutate("cases an object", [](json& r) { r["cases"] = json::object(); });
  mutate("not an object", [](json& r) { r = json::array(); });
  for (const auto& [what, doc] : bad) {
    const std::string md = thrown([&] { markdown_report(doc); }), csv = thrown([&] { csv_tables(doc); });
    const std::string gate = thrown([&] { harness::compare_results(make_results(), doc, {}); });
    ASSERT_FALSE(gate.empty()) << what << ": compare accepts it";
    ASSERT_EQ(gate.rfind("current: ", 0), 0u) << gate;
    EXPECT_EQ(md, "results: " + gate.substr(9)) << what;
    EXPECT_EQ(csv, md) << what;
    EXPECT_EQ(md.find('\n'), std::string::npos) << what << ": one line";
  }
  EXPECT_EQ(thrown([&] { markdown_report(make_results()); }), "");
  EXPECT_EQ(thrown([&] { harness::compare_results(make_results(), make_results(), {}); }), "");
}

}  // namespace pb::test

namespace pb::test {

// A pipeline case gets a Pipeline section: per stage, measured vs simulated idle and the
// stage's activation peak next to its prediction; results without PP have no such section.
TEST(Report, PipelineSectionPerStage) {
  EXPECT_EQ(markdown_report(make_results()).find("## Pipeline"), std::string::npos);
  nlohmann::json r = make_results();
  nlohmann::json c = case_skeleton("pp2_1f1b", {{"pp", 2}}, nlohmann::json::array());
  c["throughput"] = throughput(500.0, 0.01);
  c["memory"] = nlohmann::json::array(
      {{{"rank", 0}, {"category", "activations"}, {"measured_bytes", 2048}, {"predicted_bytes", 2048}},
       {{"rank", 1}, {"category", "activations"}, {"measured_bytes", 1024}, {"predicted_bytes", 1024}}});
  c["pipeline"] = {{"schedule", "1f1b"}, {"pp", 2}, {"vpp", 1}, {"micro_batches", 8},
                   {"stages", nlohmann::json::array(
                                  {{{"stage", 0}, {"rank", 0}, {"measured_idle_fraction", 0.2},
                                    {"simulated_idle_fraction", 1.0 / 9}, {"simulated_peak_in_flight", 2},
                                    {"simulated_peak_held", 2}, {"weight_versions", 1}},
                                   {{"stage", 1}, {"rank", 1}, {"measured_idle_fraction", 0.05},
                                    {"simulated_idle_fraction", 1.0 / 9}, {"simulated_peak_in_flight", 1}}})}};
  r["cases"].push_back(c);
  const auto rows = md_rows(markdown_report(r), "Pipeline");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0][1], "1f1b");
  EXPECT_EQ(rows[0][5], "500.00");
  EXPECT_EQ(rows[0][6], "0.200");
  EXPECT_EQ(rows[0][7], "0.111");
  EXPECT_EQ(rows[0][8], "2");
  EXPECT_EQ(rows[0][9], "2");
  EXPECT_EQ(rows[0][10], "1");
  EXPECT_EQ(rows[0][11], "2.00 KiB");
  EXPECT_EQ(rows[1][4], "1");
  EXPECT_EQ(rows[1][9], "—");  // an older result without the fields
  EXPECT_EQ(rows[1][10], "—");
  EXPECT_EQ(rows[1][12], "1.00 KiB");
}

// A CP case gets a Context parallelism section: per rank the attention work and max/min.
TEST(Report, ContextParallelSectionPerRank) {
  EXPECT_EQ(markdown_report(make_results()).find("## Context parallelism"), std::string::npos);
  nlohmann::json r = make_results();
  nlohmann::json c = case_skeleton("cp2_ring", {{"cp", 2}}, nlohmann::json::array());
  c["cp"] = {{"kind", "ring"}, {"balance", "contiguous"}, {"cp", 2}, {"attention_pairs", {10, 26}},
             {"attention_pairs_max_over_min", 2.6}};
  r["cases"].push_back(c);
  const auto rows = md_rows(markdown_report(r), "Context parallelism");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0][2], "contiguous");
  EXPECT_EQ(rows[1][4], "1");
  EXPECT_EQ(rows[1][5], "26");
  EXPECT_EQ(rows[1][6], "2.600");
  c["cp"]["attention_pairs"] = "many";  // refused like compare refuses it
  r["cases"].back() = c;
  EXPECT_THROW(markdown_report(r), std::runtime_error);
}

}  // namespace pb::test
