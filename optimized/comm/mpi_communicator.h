/* MPI backend of the Communicator (host buffers; device buffers will be staged through
 * pinned host memory by the CUDA backend). */
#pragma once

#include <mpi.h>

#include "optimized/comm/communicator.h"

namespace pb {

class MpiCommunicator : public Communicator {
 public:
  // Takes ownership of comm (freed in the destructor unless it is MPI_COMM_WORLD/SELF).
  MpiCommunicator(std::string name, MPI_Comm comm);
  ~MpiCommunicator() override;
  MPI_Comm comm() const { return comm_; }

  void all_reduce(Tensor& buf, ReduceOp op) override;
  void all_gather(Tensor& out, const Tensor& in) override;
  void reduce_scatter(Tensor& out, const Tensor& in) override;
  void all_to_all(Tensor& out, const Tensor& in) override;
  void all_to_all_v(Tensor& out, const std::vector<int64_t>& recv_rows, const Tensor& in,
                    const std::vector<int64_t>& send_rows) override;
  void broadcast(Tensor& buf, int root) override;
  void send(const Tensor& buf, int peer, int tag) override;
  void recv(Tensor& buf, int peer, int tag) override;
  RequestPtr iall_reduce(Tensor& buf, ReduceOp op) override;
  RequestPtr iall_gather(Tensor& out, const Tensor& in) override;
  RequestPtr ireduce_scatter(Tensor& out, const Tensor& in) override;
  RequestPtr isend(const Tensor& buf, int peer, int tag) override;
  RequestPtr irecv(Tensor& buf, int peer, int tag) override;
  void batch_p2p(const std::vector<P2POp>& ops) override;
  void barrier() override;
  double all_reduce_scalar(double v, ReduceOp op) override;

 private:
  MPI_Comm comm_;
};

}  // namespace pb
