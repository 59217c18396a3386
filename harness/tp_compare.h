/* `parabench analyze --compare-tp`: the analytic model of one case under every TP
 * arrangement its tp degree allows (parallel/tp_grid.h), side by side: 1d (Megatron), 2d
 * (q x q, SUMMA), 2.5d (q x q x d for every depth d > 1 with t/d a square) and 3d (q^3).
 * Rows: parameters per rank, each memory category per rank, bytes per rank in each group
 * and in all, collective calls, bus bytes; the other degrees, the features and the batch
 * as the case gives them. An arrangement the case does not fit (or this build does not
 * run) is a column of "—" with its reason below the table. */
#pragma once

#include "harness/case.h"

namespace pb::harness {

void print_tp_comparison(const Case& c);

}  // namespace pb::harness
