/* The "overlap" object of a case's results: every rank's communication time, the part of
 * it its compute thread waited on, the hidden fraction, and the ranks' timelines of the
 * last step as one Chrome trace (optimized/core/timeline.h). */
#include <mpi.h>

#include <string>
#include <vector>

#include "harness/case_result.h"
#include "optimized/core/fatal.h"

namespace pb::harness {

using nlohmann::json;

json gather_overlap(const TrainRun& run, MPI_Comm comm) {
  int rank = 0, size = 1;
  MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MPI_CHECK(MPI_Comm_size(comm, &size));
  // Numbers: total, exposed, then (kind, start, end) per span; names: '\0'-terminated.
  std::vector<double> nums = {run.comm.total_ms, run.comm.exposed_ms};
  std::string names;
  for (const auto& s : run.last_timeline) {
    nums.insert(nums.end(), {double(int(s.kind)), s.start_ms, s.end_ms});
    names += s.name;
    names += '\0';
  }
  auto gather = [&](const auto* data, int n, MPI_Datatype type, auto& all, std::vector<int>& counts,
                    std::vector<int>& displs) {
    counts.assign(size_t(size), 0), displs.assign(size_t(size), 0);
    MPI_CHECK(MPI_Gather(&n, 1, MPI_INT, counts.data(), 1, MPI_INT, 0, comm));
    int total = 0;
    for (int r = 0; r < size; ++r) displs[size_t(r)] = total, total += counts[size_t(r)];
    all.resize(size_t(rank == 0 ? total : 0));
    MPI_CHECK(MPI_Gatherv(data, n, type, all.data(), counts.data(), displs.data(), type, 0, comm));
  };
  std::vector<double> all_nums;
  std::vector<char> all_names;
  std::vector<int> nc, nd, sc, sd;
  gather(nums.data(), int(nums.size()), MPI_DOUBLE, all_nums, nc, nd);
  gather(names.data(), int(names.size()), MPI_CHAR, all_names, sc, sd);
  if (rank != 0) return nullptr;
  json ranks = json::array(), events = json::array();
  double total = 0, exposed = 0;
  for (int r = 0; r < size; ++r) {
    const double* d = all_nums.data() + nd[size_t(r)];
    const char* name = all_names.data() + sd[size_t(r)];
    const CommTime t{d[0], d[1]};
    total += t.total_ms, exposed += t.exposed_ms;
    ranks.push_back({{"rank", r}, {"comm_ms", t.total_ms}, {"exposed_ms", t.exposed_ms},
                     {"hidden_fraction", t.hidden_fraction()}});
    for (int k = 2; k + 3 <= nc[size_t(r)]; k += 3) {
      const auto kind = SpanKind(int(d[k]));
      const std::string n = name;
      name += n.size() + 1;
      // The caller's thread (compute, blocking calls, waits) and the communicator's (async calls).
      events.push_back({{"name", n}, {"cat", span_kind_name(kind)}, {"ph", "X"}, {"pid", r},
                        {"tid", kind == SpanKind::Async ? 1 : 0}, {"ts", d[k + 1] * 1e3},
                        {"dur", (d[k + 2] - d[k + 1]) * 1e3}});
    }
  }
  const CommTime all{total, exposed};
  return {{"comm_ms", total}, {"exposed_ms", exposed}, {"hidden_fraction", all.hidden_fraction()},
          {"ranks", ranks}, {"trace", {{"traceEvents", events}, {"displayTimeUnit", "ms"}}}};
}

}  // namespace pb::harness
