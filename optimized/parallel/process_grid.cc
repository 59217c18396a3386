/* Process grid construction with MPI_Comm_split. */
#include "optimized/parallel/process_grid.h"

#include <algorithm>
#include <cstdio>

#include "optimized/comm/nccl_communicator.h"
#include "optimized/core/fatal.h"
#include "reference/common/error.h"

namespace pb {

// One group: an MPI communicator (owning the split), or NCCL over the split. NCCL only
// where it moves tensors between several ranks: a group of one rank short-circuits every
// call, and `world` and `mp` only all-reduce host scalars (mp: the squared gradient norm),
// so they stay on MPI and hold no NCCL communicator. Where NCCL's setup fails for a group
// (after the runner's probe succeeded), that group falls back to MPI, said once per process
// by the group's first rank.
static std::unique_ptr<Communicator> make_group(MPI_Comm c, const char* name, bool nccl) {
  int size = 1, rank = 0;
  MPI_CHECK(MPI_Comm_size(c, &size));
  MPI_CHECK(MPI_Comm_rank(c, &rank));
  const std::string n = name;
  const bool moves_tensors = n != "world" && n != "mp";
  if (!nccl || size == 1 || !moves_tensors) return std::make_unique<MpiCommunicator>(name, c);
  std::string error;
  auto g = try_make_nccl_communicator(name, c, &error);
  if (!g) {
    static bool said = false;
    if (!said && rank == 0) std::fprintf(stderr, "group %s: NCCL setup failed (%s): MPI carries it\n", name, error.c_str());
    said = true;
    return std::make_unique<MpiCommunicator>(name, c);
  }
  MPI_CHECK(MPI_Comm_free(&c));
  return g;
}

ProcessGrid::Coords ProcessGrid::coords_of(const Layout& l, int rank) {
  return {rank % l.tp, (rank / l.tp) % l.cp, (rank / (l.tp * l.cp)) % l.dp, rank / (l.tp * l.cp * l.dp)};
}

int ProcessGrid::rank_of(const Layout& l, const Coords& c) { return c.tp + l.tp * (c.cp + l.cp * (c.dp + l.dp * c.pp)); }

ProcessGrid::ProcessGrid(MPI_Comm comm, const Layout& l, bool nccl, bool pp_nccl, int u, const TpGrid& tpg)
    : layout_(l), tpg_(tpg.kind == TpKind::OneD ? TpGrid::of("1d", l.tp) : tpg) {
  int size = 0;
  MPI_CHECK(MPI_Comm_rank(comm, &rank_));
  MPI_CHECK(MPI_Comm_size(comm, &size));
  PB_REQUIRE(size == l.world(), "invalid layout: ", l.str(), " needs dp*tp*pp*cp = ", l.world(), " ranks, the case has ",
             size);
  PB_REQUIRE((l.dp * l.cp) % l.ep == 0, "invalid layout: ep ", l.ep, " does not divide dp*cp = ", l.dp * l.cp);
  const Coords me = coords_of(l, rank_);
  tp_r_ = me.tp;
  cp_r_ = me.cp;
  dp_r_ = me.dp;
  pp_r_ = me.pp;
  auto split = [&](const char* name, int color, int key) {
    MPI_Comm c;
    MPI_CHECK(MPI_Comm_split(comm, color, key, &c));
    return make_group(c, name, nccl);
  };
  MPI_Comm dup;
  MPI_CHECK(MPI_Comm_dup(comm, &dup));
  world_ = make_group(dup, "world", nccl);
  // A group's colour is the rank of its first member (the coordinates it spans set to 0).
  const int dpcp_r = cp_r_ + l.cp * dp_r_;  // position in DP x CP
  const int tp_color = rank_of(l, {0, me.cp, me.dp, me.pp});
  MPI_CHECK(MPI_Comm_split(comm, tp_color, tp_r_, &raw_tp_));
  tp_ = split("tp", tp_color, tp_r_);
  cp_ = split("cp", rank_of(l, {me.tp, 0, me.dp, me.pp}), cp_r_);
  dp_ = split("dp", rank_of(l, {me.tp, me.cp, 0, me.pp}), dp_r_);
  {
    MPI_Comm c;
    MPI_CHECK(MPI_Comm_split(comm, rank_of(l, {me.tp, me.cp, me.dp, 0}), pp_r_, &c));
    pp_ = make_group(c, "pp", nccl && pp_nccl);
  }
  dp_cp_ = split("dp_cp", rank_of(l, {me.tp, 0, 0, me.pp}), dpcp_r);
  MPI_CHECK(MPI_Comm_split(comm, rank_of(l, {me.tp, 0, 0, me.pp}), dpcp_r, &raw_dp_cp_));
  ep_ = split("ep", tp_r_ + l.tp * (pp_r_ + l.pp * (dpcp_r / l.ep)), dpcp_r % l.ep);
  // Experts are not TP-sharded (expert TP = 1): their gradients are reduced over TP too.
  edp_ = split("expert_dp", pp_r_ + l.pp * (dpcp_r % l.ep), tp_r_ + l.tp * (dpcp_r / l.ep));
  MPI_CHECK(MPI_Comm_split(comm, pp_r_ + l.pp * (dpcp_r % l.ep), tp_r_ + l.tp * (dpcp_r / l.ep), &raw_expert_dp_));
  tp_cp_ = split("tp_cp", rank_of(l, {0, 0, me.dp, me.pp}), tp_r_ + l.tp * cp_r_);
  mp_ = split("mp", rank_of(l, {0, me.cp, me.dp, 0}), tp_r_ + l.tp * pp_r_);
  mirror_ = split("pp_mirror", rank_of(l, {me.tp, me.cp, me.dp, std::min(pp_r_, l.pp - 1 - pp_r_)}), pp_r_);
  if (tpg.kind != TpKind::OneD) {  // a group's colour: the global rank of its first member
    PB_REQUIRE(tpg.size() == l.tp, "tp grid of ", tpg.size(), " ranks for tp ", l.tp);
    const TpGrid::Coords c = tpg.coords(tp_r_);
    auto first = [&](TpGrid::Coords f) { return rank_of(l, {tpg.rank(f), me.cp, me.dp, me.pp}); };
    row_ = split("tp_row", first({c.i, 0, c.k}), c.j);
    col_ = split("tp_col", first({0, c.j, c.k}), c.i);
    depth_ = split("tp_depth", first({c.i, c.j, 0}), c.k);
    if (tpg.d > 1) {  // 2.5D: the depth layers share the batch, so gradients are averaged over them with DP x CP
      const int color = rank_of(l, {tpg.rank({c.i, c.j, 0}), 0, 0, me.pp}), key = c.k + tpg.d * dpcp_r;
      dp_cp_ = split("dp_cp", color, key);
      MPI_CHECK(MPI_Comm_free(&raw_dp_cp_));
      MPI_CHECK(MPI_Comm_split(comm, color, key, &raw_dp_cp_));
    }
  }
  if (u > 1 && u < l.cp && l.cp % u == 0) {  // hybrid CP
    cpu_ = split("cp_ulysses", rank_of(l, {me.tp, me.cp / u * u, me.dp, me.pp}), me.cp % u);
    cpr_ = split("cp_ring", rank_of(l, {me.tp, me.cp % u, me.dp, me.pp}), me.cp / u);
  }
}

ProcessGrid::~ProcessGrid() {
  int fin = 0;
  MPI_Finalized(&fin);
  if (!fin && raw_tp_ != MPI_COMM_NULL) MPI_Comm_free(&raw_tp_);
  if (!fin && raw_dp_cp_ != MPI_COMM_NULL) MPI_Comm_free(&raw_dp_cp_);
  if (!fin && raw_expert_dp_ != MPI_COMM_NULL) MPI_Comm_free(&raw_expert_dp_);
}

std::string ProcessGrid::describe() const {
  const auto& l = layout_;
  return "TP(" + std::to_string(tp_r_) + "/" + std::to_string(l.tp) + ")-CP(" + std::to_string(cp_r_) + "/" +
         std::to_string(l.cp) + ")-DP(" + std::to_string(dp_r_) + "/" + std::to_string(l.dp) + ")-PP(" +
         std::to_string(pp_r_) + "/" + std::to_string(l.pp) + ")";
}

}  // namespace pb
