/* Parallel layout (degrees) and its validation against a model and training config.
 *
 * world = DP * TP * PP * CP; EP is carved from DP x CP (EP must divide DP*CP). Every
 * check throws pb::Error with one line naming the first thing that does not fit.
 */
#pragma once

#include <string>
#include <vector>

#include "reference/model/config.h"

namespace pb {

struct Layout {
  int dp = 1, tp = 1, pp = 1, vpp = 1, cp = 1, ep = 1;
  int world() const { return dp * tp * pp * cp; }
  // The degree of a key ("dp", "tp", "pp", "vpp", "cp", "ep"), nullptr for another key:
  // the one place that maps the case files' and --layout's keys to the fields.
  int* degree(const std::string& key);
  static const std::vector<std::string>& keys();
  std::string str() const;  // "dp2 tp2" (degrees > 1), or "1 rank"
};

// The checks every case needs (degrees >= 1, what PP must divide, what this build does not
// run yet); each technique adds its own in its registry entry (TP's divisibility there).
// split_given: the layers are split over the stages by the case (train/pp_partition.h), so
// pp x vpp need not divide them.
void validate_layout(const Layout& l, const ref::ModelConfig& mc, bool split_given = false);

}  // namespace pb
