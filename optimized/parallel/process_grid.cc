/* Process grid construction with MPI_Comm_split. */
#include "optimized/parallel/process_grid.h"

#include "optimized/comm/nccl_communicator.h"
#include "optimized/core/fatal.h"
#include "reference/common/error.h"

namespace pb {

// One group: an MPI communicator (owning the split), or NCCL over the split.
static std::unique_ptr<Communicator> make_group(MPI_Comm c, const char* name, bool nccl) {
  if (!nccl) return std::make_unique<MpiCommunicator>(name, c);
  auto g = make_nccl_communicator(name, c);
  MPI_CHECK(MPI_Comm_free(&c));
  return g;
}

ProcessGrid::ProcessGrid(MPI_Comm comm, const Layout& l, bool nccl, bool pp_nccl) : layout_(l) {
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
  auto split = [&](const char* name, int color, int key) {
    MPI_Comm c;
    MPI_CHECK(MPI_Comm_split(comm, color, key, &c));
    return make_group(c, name, nccl);
  };
  MPI_Comm dup;
  MPI_CHECK(MPI_Comm_dup(comm, &dup));
  world_ = make_group(dup, "world", nccl);
  const int dpcp_r = cp_r_ + l.cp * dp_r_;  // position in DP x CP
  const int tp_color = cp_r_ + l.cp * (dp_r_ + l.dp * pp_r_);
  MPI_CHECK(MPI_Comm_split(comm, tp_color, tp_r_, &raw_tp_));
  tp_ = split("tp", tp_color, tp_r_);
  cp_ = split("cp", tp_r_ + l.tp * (dp_r_ + l.dp * pp_r_), cp_r_);
  dp_ = split("dp", tp_r_ + l.tp * (cp_r_ + l.cp * pp_r_), dp_r_);
  {
    MPI_Comm c;
    MPI_CHECK(MPI_Comm_split(comm, tp_r_ + l.tp * (cp_r_ + l.cp * dp_r_), pp_r_, &c));
    pp_ = make_group(c, "pp", nccl && pp_nccl);
  }
  dp_cp_ = split("dp_cp", tp_r_ + l.tp * pp_r_, dpcp_r);
  ep_ = split("ep", tp_r_ + l.tp * (pp_r_ + l.pp * (dpcp_r / l.ep)), dpcp_r % l.ep);
  edp_ = split("expert_dp", tp_r_ + l.tp * (pp_r_ + l.pp * (dpcp_r % l.ep)), dpcp_r / l.ep);
  mp_ = split("mp", cp_r_ + l.cp * dp_r_, tp_r_ + l.tp * pp_r_);
}

ProcessGrid::~ProcessGrid() {
  int fin = 0;
  MPI_Finalized(&fin);
  if (!fin && raw_tp_ != MPI_COMM_NULL) MPI_Comm_free(&raw_tp_);
}

std::string ProcessGrid::describe() const {
  const auto& l = layout_;
  return "TP(" + std::to_string(tp_r_) + "/" + std::to_string(l.tp) + ")-CP(" + std::to_string(cp_r_) + "/" +
         std::to_string(l.cp) + ")-DP(" + std::to_string(dp_r_) + "/" + std::to_string(l.dp) + ")-PP(" +
         std::to_string(pp_r_) + "/" + std::to_string(l.pp) + ")";
}

}  // namespace pb
