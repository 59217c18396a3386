/* The process grid: every group and neighbour of this rank, derived once.
 *
 * Rank order is Megatron's: TP fastest, then CP, then DP, then PP:
 *   rank = tp_r + TP * (cp_r + CP * (dp_r + DP * pp_r))
 * Groups: tp (same cp, dp, pp), cp, dp (same tp, cp, pp), pp, dp_cp (gradient reduction
 * group when CP > 1), ep (EP consecutive ranks of dp_cp), expert_dp (the ranks holding the
 * same experts: every TP rank, since experts are not TP-sharded, times the DP x CP / EP
 * positions of the same place in their EP group), tp_cp (the ranks sharing one sequence:
 * the MoE load-balancing counts), and mp (tp x pp: the model-parallel group of the
 * gradient norm). Under 2.5D TP dp_cp spans the depth too (the layers' gradients are
 * averaged over it with DP, parallel/tp2d_linear.h). Prints itself as
 * TP(1/2)-CP(0/1)-DP(0/4)-PP(1/2).
 */
#pragma once

#include <mpi.h>

#include <memory>
#include <string>

#include "optimized/comm/mpi_communicator.h"
#include "optimized/parallel/layout.h"
#include "optimized/parallel/tp_grid.h"

namespace pb {

class ProcessGrid {
 public:
  // A rank's position in the grid. The rank order lives only here (coords_of, rank_of);
  // the harness and the training step ask these instead of repeating the formula.
  struct Coords {
    int tp = 0, cp = 0, dp = 0, pp = 0;
  };
  static Coords coords_of(const Layout& l, int rank);
  static int rank_of(const Layout& l, const Coords& c);

  // comm: the ranks of this case (its size must equal layout.world()). With nccl, every
  // group communicates through NCCL (device buffers); otherwise through MPI.
  // pp_nccl false keeps the pp group on MPI even with nccl (a pipeline schedule whose
  // sends and receives NCCL could not match by order: pp::check_channel_order).
  // cp_ulysses: hybrid CP's Ulysses degree u (1 < u < cp): the groups cp_ulysses (u
  // consecutive CP ranks) and cp_ring (the CP ranks of one place in their Ulysses group).
  // tp_grid: multi-dimensional TP (tp_grid.h) over the tp group's ranks: its row, column and
  // depth groups (tp_row varies j, tp_col varies i, tp_depth varies k); 1d by default.
  ProcessGrid(MPI_Comm comm, const Layout& layout, bool nccl = false, bool pp_nccl = true, int cp_ulysses = 1,
              const TpGrid& tp_grid = {});
  ~ProcessGrid();

  const Layout& layout() const { return layout_; }
  int rank() const { return rank_; }
  int tp_rank() const { return tp_r_; }
  int cp_rank() const { return cp_r_; }
  int dp_rank() const { return dp_r_; }
  int pp_rank() const { return pp_r_; }
  Communicator& world() { return *world_; }
  Communicator& tp() { return *tp_; }
  Communicator& cp() { return *cp_; }
  Communicator& dp() { return *dp_; }
  Communicator& pp() { return *pp_; }
  Communicator& dp_cp() { return *dp_cp_; }
  Communicator& ep() { return *ep_; }
  Communicator& expert_dp() { return *edp_; }
  Communicator& tp_cp() { return *tp_cp_; }
  Communicator& mp() { return *mp_; }
  // Pipeline ranks r and p-1-r (same TP, CP, DP place): the two copies of a model stage in
  // a bidirectional placement (train/pp_placement.h), whose gradients are summed.
  Communicator& pp_mirror() { return *mirror_; }
  const TpGrid& tp_grid() const { return tpg_; }
  Communicator* tp_row() { return row_.get(); }  // null under 1d TP
  Communicator* tp_col() { return col_.get(); }
  Communicator* tp_depth() { return depth_.get(); }
  Communicator* cp_ulysses() { return cpu_.get(); }  // null without hybrid CP
  Communicator* cp_ring() { return cpr_.get(); }
  std::string describe() const;
  // Raw MPI communicators, for harness bookkeeping that must stay out of the accounting.
  MPI_Comm raw_tp() const { return raw_tp_; }
  MPI_Comm raw_dp_cp() const { return raw_dp_cp_; }  // the distributed optimizer's shards
  MPI_Comm raw_expert_dp() const { return raw_expert_dp_; }  // its shards of the experts

 private:
  Layout layout_;
  int rank_ = 0, tp_r_ = 0, cp_r_ = 0, dp_r_ = 0, pp_r_ = 0;
  TpGrid tpg_;
  std::unique_ptr<Communicator> world_, tp_, cp_, dp_, pp_, dp_cp_, ep_, edp_, tp_cp_, mp_, cpu_, cpr_, mirror_;
  std::unique_ptr<Communicator> row_, col_, depth_;
  MPI_Comm raw_tp_ = MPI_COMM_NULL, raw_dp_cp_ = MPI_COMM_NULL, raw_expert_dp_ = MPI_COMM_NULL;
};

}  // namespace pb
