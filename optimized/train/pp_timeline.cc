/* Renderings of a pipeline schedule (pp_schedule.h): the text timeline (one row per rank,
 * one cell per cost unit), a self-contained SVG, and Chrome traces (chrome://tracing,
 * Perfetto) of a simulated or a measured timeline. */
#include <algorithm>
#include <climits>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "optimized/train/pp_schedule.h"

namespace pb::pp {

namespace {

// "F3", or "F3a" / "F3b" for chunk 0 / 1 when v > 1 (".c27" past 26 chunks).
std::string cell_label(const Schedule& s, const Action& a) {
  std::string l = op_name(a.op) + std::to_string(a.mb);
  if (s.v > 1) l += s.v <= 26 ? std::string(1, char('a' + a.chunk)) : ".c" + std::to_string(a.chunk);
  return l;
}

std::string xml_escape(const std::string& t) {
  std::string o;
  for (char ch : t) {
    if (ch == '&') o += "&amp;";
    else if (ch == '<') o += "&lt;";
    else if (ch == '>') o += "&gt;";
    else if (ch == '"') o += "&quot;";
    else o += ch;
  }
  return o;
}

int digits(int64_t x) { return int(std::to_string(x).size()); }

// The cost of each compute op as simulated (first occurrence), for legends.
// The durations of each compute op in the timeline: "F=1 B=2", or ranges ("F=4..12") where
// stage weights (Costs::stage) make them differ.
std::string costs_seen(const Schedule& s, const SimResult& r) {
  int64_t lo[kNumOps], hi[kNumOps];
  for (int k = 0; k < kNumOps; ++k) lo[k] = INT64_MAX, hi[k] = 0;
  for (const auto& line : r.timeline)
    for (const auto& t : line) {
      const int k = int(t.action.op);
      lo[k] = std::min(lo[k], t.end - t.start), hi[k] = std::max(hi[k], t.end - t.start);
    }
  std::string o;
  for (const Op op : {Op::F, Op::B, Op::W, Op::R}) {
    const int k = int(op);
    if (hi[k] == 0 || (op == Op::W && !s.split_backward)) continue;
    o += (o.empty() ? "" : " ") + std::string(op_name(op)) + "=" + std::to_string(lo[k]) +
         (lo[k] == hi[k] ? "" : ".." + std::to_string(hi[k]));
  }
  return o;
}

}  // namespace

std::string timeline_text(const Schedule& s, const SimResult& r) {
  int label = 2;
  for (const auto& line : r.timeline)
    for (const auto& t : line) label = std::max(label, int(cell_label(s, t.action).size()));
  const int w = label + 1;  // characters per cost unit
  const int rw = digits(std::max(0, s.p - 1));
  const std::string prefix(size_t(5 + rw + 2), ' ');  // "rank " + digits + " |"
  std::string ruler = "time";
  ruler.resize(prefix.size(), ' ');
  for (int64_t t = 0; t <= r.total; t += 10) {
    const size_t at = prefix.size() + size_t(t * w);
    if (ruler.size() < at) ruler.resize(at, ' ');
    if (ruler.size() == at) ruler += std::to_string(t);
  }
  std::ostringstream os;
  os << ruler << "\n";
  for (int rk = 0; rk < s.p; ++rk) {
    std::string row = "rank " + std::string(size_t(rw - digits(rk)), ' ') + std::to_string(rk) + " |";
    int64_t t = 0;
    for (const auto& ta : r.timeline[size_t(rk)]) {
      for (; t < ta.start; ++t) row += "." + std::string(size_t(w - 1), ' ');
      std::string cell = cell_label(s, ta.action);
      const size_t width = size_t((ta.end - ta.start) * w);
      cell.resize(width - 1, ta.end - ta.start > 1 ? '=' : ' ');
      row += cell + " ";
      t = ta.end;
    }
    for (; t < r.total; ++t) row += "." + std::string(size_t(w - 1), ' ');
    while (!row.empty() && row.back() == ' ') row.pop_back();
    row.resize(prefix.size() + size_t(r.total * w) - 1, ' ');
    os << row << "|\n";
  }
  os << "legend: Fk forward, B" << (s.split_backward ? "k input gradient, Wk weight gradient" : "k backward")
     << " of micro-batch k"
     << (s.vshape ? "; suffix a = chunk 0 (stage r), b = chunk 1 (stage 2p-1-r, the V's way back)"
                  : s.v > 1 ? "; suffix a, b, ... = chunk 0, 1, ..." : "")
     << "; '=' continues an action; '.' idle; one cell = one cost unit (" << costs_seen(s, r) << ")\n";
  return os.str();
}

std::string timeline_svg(const Schedule& s, const SimResult& r) {
  const int64_t total = std::max<int64_t>(r.total, 1);
  const int64_t u = std::clamp<int64_t>(1200 / total, total > 4000 ? 1 : 6, 40);  // pixels per cost unit
  const int64_t left = 70, top = 40, row_h = 28, box_h = 22;
  const int64_t width = std::max<int64_t>(left + total * u + 30, 760), axis_y = top + s.p * row_h + 6, height = axis_y + 70;
  // Fill colours per op, shaded by chunk.
  static const char* fills[3][4] = {{"#9ecae1", "#c6dbef", "#6baed6", "#deebf7"},
                                    {"#fdae6b", "#fdd0a2", "#fd8d3c", "#fee6ce"},
                                    {"#a1d99b", "#c7e9c0", "#74c476", "#e5f5e0"}};
  std::ostringstream os;
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
     << "\" viewBox=\"0 0 " << width << " " << height << "\" font-family=\"sans-serif\" font-size=\"11\">\n"
     << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
     << "<text x=\"" << left << "\" y=\"22\" font-size=\"14\">" << xml_escape(s.kind) << " pipeline schedule: p="
     << s.p << " v=" << s.v << " m=" << s.m << ", total " << r.total << " units (" << costs_seen(s, r) << ")</text>\n";
  for (int rk = 0; rk < s.p; ++rk) {
    const int64_t y = top + rk * row_h;
    os << "<text x=\"8\" y=\"" << y + box_h / 2 + 4 << "\">rank " << rk << "</text>\n"
       << "<rect x=\"" << left << "\" y=\"" << y << "\" width=\"" << total * u << "\" height=\"" << box_h
       << "\" fill=\"#f4f4f4\"/>\n";
    for (const auto& ta : r.timeline[size_t(rk)]) {
      const int op = int(ta.action.op);
      const int64_t x = left + ta.start * u, bw = (ta.end - ta.start) * u;
      const std::string label = cell_label(s, ta.action);
      os << "<rect x=\"" << x << "\" y=\"" << y << "\" width=\"" << bw << "\" height=\"" << box_h << "\" fill=\""
         << fills[op][ta.action.chunk % 4] << "\" stroke=\"#333\" stroke-width=\"0.6\"><title>" << label << ": "
         << ta.start << "-" << ta.end << "</title></rect>\n";
      if (bw >= 7 * int64_t(label.size()) - 1)
        os << "<text x=\"" << x + bw / 2 << "\" y=\"" << y + box_h / 2 + 4 << "\" text-anchor=\"middle\">" << label
           << "</text>\n";
    }
  }
  // Time axis: a tick every 1, 2, 5, 10, 20, 50, ... units, at least 36 px apart.
  int64_t step = 0;
  for (int64_t base = 1; step == 0; base *= 10)
    for (int64_t k : {1, 2, 5})
      if (step == 0 && k * base * u >= 36) step = k * base;
  os << "<line x1=\"" << left << "\" y1=\"" << axis_y << "\" x2=\"" << left + total * u << "\" y2=\"" << axis_y
     << "\" stroke=\"#333\"/>\n";
  for (int64_t t = 0; t <= total; t += step)
    os << "<line x1=\"" << left + t * u << "\" y1=\"" << axis_y << "\" x2=\"" << left + t * u << "\" y2=\""
       << axis_y + 5 << "\" stroke=\"#333\"/><text x=\"" << left + t * u << "\" y=\"" << axis_y + 17
       << "\" text-anchor=\"middle\">" << t << "</text>\n";
  os << "<text x=\"" << left + total * u << "\" y=\"" << axis_y + 30 << "\" text-anchor=\"end\">time (cost units)</text>\n";
  // Legend.
  const char* names[3] = {"F forward", s.split_backward ? "B input gradient" : "B backward", "W weight gradient"};
  int64_t lx = left;
  for (int op = 0; op < (s.split_backward ? 3 : 2); ++op) {
    os << "<rect x=\"" << lx << "\" y=\"" << axis_y + 40 << "\" width=\"14\" height=\"14\" fill=\"" << fills[op][0]
       << "\" stroke=\"#333\" stroke-width=\"0.6\"/><text x=\"" << lx + 18 << "\" y=\"" << axis_y + 51 << "\">"
       << names[op] << "</text>\n";
    lx += 130;
  }
  os << "<text x=\"" << lx << "\" y=\"" << axis_y + 51 << "\">label: micro-batch"
     << (s.vshape ? " + chunk letter (a = chunk 0: stage r, b = chunk 1: stage 2p-1-r, lighter)"
                  : s.v > 1 ? " + chunk letter (a = chunk 0, lighter shades for later chunks)" : "")
     << "</text>\n";
  os << "</svg>\n";
  return os.str();
}

std::string chrome_trace(const std::vector<std::vector<TraceEvent>>& ranks, const std::string& title) {
  using nlohmann::json;
  json events = json::array();
  events.push_back({{"name", "process_name"}, {"ph", "M"}, {"pid", 0}, {"tid", 0}, {"args", {{"name", title}}}});
  for (size_t r = 0; r < ranks.size(); ++r) {
    events.push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", 0}, {"tid", r},
                      {"args", {{"name", "rank " + std::to_string(r)}}}});
    events.push_back({{"name", "thread_sort_index"}, {"ph", "M"}, {"pid", 0}, {"tid", r}, {"args", {{"sort_index", r}}}});
    for (const auto& e : ranks[r])
      events.push_back({{"name", std::string(op_name(e.action.op)) + std::to_string(e.action.mb) + ".c" +
                                     std::to_string(e.action.chunk)},
                        {"cat", op_name(e.action.op)},
                        {"ph", "X"},
                        {"pid", 0},
                        {"tid", r},
                        {"ts", e.start_us},
                        {"dur", e.dur_us},
                        {"args", {{"mb", e.action.mb}, {"chunk", e.action.chunk}}}});
  }
  const json trace = {{"traceEvents", events}, {"displayTimeUnit", "ms"}, {"otherData", {{"title", title}}}};
  return trace.dump() + "\n";
}

std::string chrome_trace(const Schedule& s, const SimResult& r) {
  std::vector<std::vector<TraceEvent>> ranks(r.timeline.size());
  for (size_t k = 0; k < r.timeline.size(); ++k)
    for (const auto& t : r.timeline[k])
      ranks[k].push_back({t.action, double(t.start) * 1000.0, double(t.end - t.start) * 1000.0});
  return chrome_trace(ranks, "parabench schedule " + s.kind + " p=" + std::to_string(s.p) + " v=" +
                                 std::to_string(s.v) + " m=" + std::to_string(s.m) + " (" + costs_seen(s, r) +
                                 "; 1 cost unit = 1 ms)");
}

}  // namespace pb::pp
