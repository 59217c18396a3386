/* The report page (see report_page.h). */
#include "harness/report_page.h"

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "harness/results_schema.h"
#include "reference/common/error.h"

namespace pb::harness {

namespace {

void check_input(const std::string& path) {
  PB_REQUIRE(std::filesystem::is_regular_file(path), "report: cannot open ", path);
  std::ifstream in(path);
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": malformed JSON (" + std::string(e.what()) + ")");
  }
  if (doc.is_object() && doc.value("schema", "") == "parabench-collectives-1") {
    PB_REQUIRE(doc.contains("rows") && doc["rows"].is_array(), path, ": a collectives file without rows");
    return;
  }
  read_results(doc, path);  // the strict reader: one line naming the field
}

}  // namespace

void write_report_page(const std::vector<std::string>& files, const std::string& html, const std::string& md) {
  std::error_code ec;
  const std::string self = std::filesystem::read_symlink("/proc/self/exe", ec).string();  // for the schedule diagrams
  PB_REQUIRE(!files.empty(), "report: no results file");
  for (const auto& f : files) check_input(f);
  const std::string script = PB_SOURCE_DIR "/scripts/report_page.py";
  PB_REQUIRE(std::filesystem::exists(script), "report: ", script, " is missing");
  const std::string python = std::filesystem::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
  std::vector<std::string> args = {python, script, "--html", html};
  if (!md.empty()) args.insert(args.end(), {"--md", md});
  if (!self.empty()) args.insert(args.end(), {"--parabench", self});
  args.insert(args.end(), files.begin(), files.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  PB_REQUIRE(pid >= 0, "report: cannot start ", python);
  if (pid == 0) {
    execvp(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  PB_REQUIRE(code == 0, "report: ", script, " failed (exit ", code, code == 127 ? ": no python3" : "",
             "; it needs matplotlib: Debian's python3-matplotlib)");
}

}  // namespace pb::harness
