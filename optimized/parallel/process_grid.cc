/* Process grid construction with MPI_Comm_split. */
#include "optimized/parallel/process_grid.h"

#include "optimized/core/fatal.h"
#include "reference/common/error.h"

namespace pb {

static std::unique_ptr<MpiCommunicator> split(MPI_Comm parent, const char* name, int color, int key) {
  MPI_Comm c;
  MPI_CHECK(MPI_Comm_split(parent, color, key, &c));
  return std::make_unique<MpiCommunicator>(name, c);
}

ProcessGrid::ProcessGrid(MPI_Comm comm, const Layout& l) : layout_(l) {
  int size = 0;
  MPI_CHECK(MPI_Comm_rank(comm, &rank_));
  MPI_CHECK(MPI_Comm_size(comm, &size));
  PB_REQUIRE(size == l.world(), "invalid layout: ", l.str(), " needs dp*tp*pp*cp = ", l.world(), " ranks, the case has ",
             size);
  PB_REQUIRE((l.dp * l.cp) % l.ep == 0, "invalid layout: ep ", l.ep, " does not divide dp*cp = ", l.dp * l.cp);
  tp_r_ = rank_ % l.tp;
  cp_r_ = (rank_ / l.tp) % l.cp;
  dp_r_ = (rank_ / (l.tp * l.cp)) % l.dp;
  pp_r_ = rank_ / (l.tp * l.cp * l.dp);
  MPI_Comm dup;
  MPI_CHECK(MPI_Comm_dup(comm, &dup));
  world_ = std::make_unique<MpiCommunicator>("world", dup);
  const int dpcp_r = cp_r_ + l.cp * dp_r_;  // position in DP x CP
  tp_ = split(comm, "tp", cp_r_ + l.cp * (dp_r_ + l.dp * pp_r_), tp_r_);
  cp_ = split(comm, "cp", tp_r_ + l.tp * (dp_r_ + l.dp * pp_r_), cp_r_);
  dp_ = split(comm, "dp", tp_r_ + l.tp * (cp_r_ + l.cp * pp_r_), dp_r_);
  pp_ = split(comm, "pp", tp_r_ + l.tp * (cp_r_ + l.cp * dp_r_), pp_r_);
  dp_cp_ = split(comm, "dp_cp", tp_r_ + l.tp * pp_r_, dpcp_r);
  ep_ = split(comm, "ep", tp_r_ + l.tp * (pp_r_ + l.pp * (dpcp_r / l.ep)), dpcp_r % l.ep);
  edp_ = split(comm, "expert_dp", tp_r_ + l.tp * (pp_r_ + l.pp * (dpcp_r % l.ep)), dpcp_r / l.ep);
  mp_ = split(comm, "mp", cp_r_ + l.cp * dp_r_, tp_r_ + l.tp * pp_r_);
}

std::string ProcessGrid::describe() const {
  const auto& l = layout_;
  return "TP(" + std::to_string(tp_r_) + "/" + std::to_string(l.tp) + ")-CP(" + std::to_string(cp_r_) + "/" +
         std::to_string(l.cp) + ")-DP(" + std::to_string(dp_r_) + "/" + std::to_string(l.dp) + ")-PP(" +
         std::to_string(pp_r_) + "/" + std::to_string(l.pp) + ")";
}

}  // namespace pb
