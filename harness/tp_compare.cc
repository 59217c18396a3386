/* The TP arrangements side by side (see tp_compare.h). */
#include "harness/tp_compare.h"

#include <cstdio>
#include <tuple>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "harness/analytic.h"
#include "harness/runner.h"
#include "optimized/parallel/tp_grid.h"
#include "reference/common/error.h"

namespace pb::harness {

namespace {

struct Column {
  std::string title;
  Case c;
  bool ok = false;
  std::string why;  // when not
  Prediction p;
  std::map<std::string, int64_t> group_bytes;
  int64_t bytes = 0, calls = 0;
  double bus = 0;
};

std::vector<Column> arrangements(const Case& base) {
  const int t = base.layout.tp;
  // (kind, depth, with SP): Megatron's 1d alone and, where the case has no sp, with it
  std::vector<std::tuple<std::string, int, bool>> kinds = {{"1d", 1, false}};
  if (!base.typed_features().sp) kinds.emplace_back("1d", 1, true);
  kinds.emplace_back("2d", 1, false);
  for (int d = 2; d <= t; ++d)
    if (t % d == 0) {
      int q = 2;
      while (q * q < t / d) ++q;
      if (q * q == t / d) kinds.emplace_back("2.5d", d, false);
    }
  kinds.emplace_back("3d", 1, false);
  std::vector<Column> out;
  for (const auto& [kind, d, with_sp] : kinds) {
    Column col;
    col.title = kind == "2.5d" ? "2.5d, d = " + std::to_string(d) : with_sp ? kind + " + sp" : kind;
    col.c = base;
    col.c.tp_kind = kind, col.c.tp_depth = d;
    if (with_sp) col.c.features.push_back("sp");
    try {
      validate_case(col.c, col.c.layout.world());
      col.p = predict(col.c);
      col.ok = true;
    } catch (const Error& e) {
      col.why = e.what();
    }
    for (const auto& r : col.p.comm) {
      col.group_bytes[r.group] += r.bytes;
      col.bytes += r.bytes, col.calls += r.calls, col.bus += r.bus_bytes;
    }
    out.push_back(std::move(col));
  }
  return out;
}

std::string mib(int64_t b) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.2f", double(b) / (1024.0 * 1024.0));
  return buf;
}

}  // namespace

void print_tp_comparison(const Case& base) {
  const std::vector<Column> cols = arrangements(base);
  std::printf("\nTP arrangements of tp %d (per rank of pipeline stage 0; MiB unless said)\n\n| |", base.layout.tp);
  for (const auto& c : cols) std::printf(" %s |", c.title.c_str());
  std::printf("\n|---|");
  for (size_t i = 0; i < cols.size(); ++i) std::printf("---:|");
  std::printf("\n");
  auto row = [&](const std::string& name, auto&& value) {
    std::printf("| %s |", name.c_str());
    for (const auto& c : cols) std::printf(" %s |", c.ok ? value(c).c_str() : "—");
    std::printf("\n");
  };
  row("parameters (elements)", [](const Column& c) { return std::to_string(c.p.params_local); });
  std::set<MemCategory> cats;
  for (const auto& c : cols)
    for (const auto& [cat, b] : c.p.memory) cats.insert(cat);
  for (const MemCategory cat : cats)
    row(std::string("memory: ") + category_name(cat), [cat](const Column& c) {
      const auto it = c.p.memory.find(cat);
      return mib(it == c.p.memory.end() ? 0 : it->second);
    });
  std::set<std::string> groups;
  for (const auto& c : cols)
    for (const auto& [g, b] : c.group_bytes) groups.insert(g);
  for (const auto& g : groups)
    row("bytes: " + g, [&g](const Column& c) {
      const auto it = c.group_bytes.find(g);
      return mib(it == c.group_bytes.end() ? 0 : it->second);
    });
  row("bytes: all groups", [](const Column& c) { return mib(c.bytes); });
  row("bus bytes (nccl-tests factors)", [](const Column& c) { return mib(int64_t(c.bus)); });
  row("collective calls", [](const Column& c) { return std::to_string(c.calls); });
  for (const auto& c : cols)
    if (!c.ok) std::printf("\n%s: %s", c.title.c_str(), c.why.c_str());
  std::printf("\n");
}

}  // namespace pb::harness
