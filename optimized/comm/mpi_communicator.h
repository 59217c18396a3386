/* MPI backend of the Communicator: host buffers; device buffers are staged through pinned
 * host memory. Non-blocking calls run on one worker thread per communicator (started on
 * the first of them), which posts them to MPI in program order and progresses them
 * (MPI_Testsome) while the caller goes on; blocking calls drain the worker first and run
 * on the calling thread. Needs MPI_THREAD_MULTIPLE (harness/main.cc, suites/mpi/
 * mpi_main.cc); with less, the non-blocking calls start on the calling thread and
 * progress only inside MPI calls, as before. */
#pragma once

#include <mpi.h>

#include <functional>
#include <memory>

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
  RequestPtr iall_gather_in_place(Tensor& buf) override;
  RequestPtr iall_gather_at(Tensor& out, const Tensor& in, int64_t row0) override;
  RequestPtr ireduce_scatter(Tensor& out, const Tensor& in) override;
  RequestPtr ireduce_scatter_in_place(Tensor& buf) override;
  RequestPtr isend(const Tensor& buf, int peer, int tag) override;
  RequestPtr irecv(Tensor& buf, int peer, int tag) override;
  void batch_p2p(const std::vector<P2POp>& ops) override;
  RequestPtr ibatch_p2p(const std::vector<P2POp>& ops) override;
  void barrier() override;
  double all_reduce_scalar(double v, ReduceOp op) override;
  void send_scalar(double v, int peer, int tag) override;
  double recv_scalar(int peer, int tag) override;

 private:
  struct AsyncOp;
  class Worker;
  // Queues op on the worker (or, without MPI_THREAD_MULTIPLE, starts it here).
  RequestPtr post(AsyncOp op, const std::vector<const Tensor*>& buffers, const char* what);
  void drain();  // before a blocking call: every posted call has completed

  MPI_Comm comm_;
  std::unique_ptr<Worker> worker_;
};

}  // namespace pb
