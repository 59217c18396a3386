/* Size bounds and the memory fit of a case (see size_check.h). */
#include "harness/size_check.h"

#include <vector>

#include "harness/analytic.h"
#include "optimized/parallel/process_grid.h"
#include "reference/model/sizes.h"

namespace pb::harness {

void check_case_sizes(const Case& c) { ref::check_size_bounds(c.model, c.train, c.layout.dp, "case " + c.name + ": "); }

std::string memory_fit(const Case& c, int local_ranks, int64_t available) {
  if (available < 0) return "";
  using ref::human_bytes;
  const bool host_ranks = c.backend != "cuda";
  double ranks = 0, most = 0;
  std::string most_parts;
  const int n = std::min(local_ranks, c.layout.world());
  std::vector<Prediction> stage(size_t(c.layout.pp));
  for (int s = 0; s < c.layout.pp; ++s) stage[size_t(s)] = predict(c, s);
  for (int r = 0; r < n && host_ranks; ++r) {
    const Prediction& pr = stage[size_t(ProcessGrid::coords_of(c.layout, r).pp)];
    double total = 0;
    for (const auto& [cat, bytes] : pr.memory) total += double(bytes);
    ranks += total;
    if (total > most) {
      most = total;
      most_parts.clear();
      for (const auto& [cat, bytes] : pr.memory)
        if (double(bytes) >= 0.05 * total)
          most_parts += std::string(most_parts.empty() ? "" : ", ") + category_name(cat) + " " + human_bytes(double(bytes));
    }
  }
  // fp64 parameters, gradients and moments, and the fp32 run's results kept as fp64
  const double reference = ref::reference_bytes_lower_bound(c.model, c.train, 8) + 16.0 * double(stage[0].params_total);
  const double need = ranks + reference;
  if (need <= double(available)) return "";
  const std::string where = host_ranks ? std::to_string(n) + (n == 1 ? " rank" : " ranks") + ", the most " +
                                             human_bytes(most) + ": " + most_parts + "; "
                                       : std::string();
  return "case " + c.name + ": needs " + human_bytes(need) + " on this node (" + where +
         "the reference on rank 0 at least " + human_bytes(reference) + "); this machine has " +
         human_bytes(double(available)) + " available";
}

}  // namespace pb::harness
