/* The Communicator interface (DESIGN.md, "Backends, communication, groups"): the
 * collectives and point-to-point calls that technique code uses, on one process group.
 *
 * Conventions (for a group of n ranks, this rank r):
 *   all_reduce(buf)              buf = sum (or max) over ranks, in place
 *   all_gather(out, in)          out (n*rows(in), ...) = [in_0; in_1; ...; in_{n-1}]
 *   all_gather_in_place(buf)     buf (n*q) = [b_0; ...; b_{n-1}] where rank r's part b_r was
 *                                already in its place (elements [r q, (r+1) q) of buf)
 *   all_gather_at(out, in, row0) out (n*R, ...) seen as n row blocks of R rows: rank j's in
 *                                (q rows) lands at rows [j R + row0, j R + row0 + q) (MC2's
 *                                chunks, gathered into their places of the whole tensor);
 *                                accounted as an all-gather of n*q rows
 *   reduce_scatter(out, in)      out = row block r of sum over ranks of in (n*rows(out), ...)
 *   reduce_scatter_in_place(buf) buf (n*q): its block r [r q, (r+1) q) becomes block r of the
 *                                sum over ranks; the other blocks are left undefined
 *   all_to_all(out, in)          row block j of in goes to rank j, arriving as block r
 *   all_to_all_v(out, recv_rows, in, send_rows)   the same with per-rank row counts
 *   broadcast(buf, root), send/recv(buf, peer)
 *   batch_p2p(ops)               posts every send and receive of the batch together and
 *                                waits for all of them (Megatron's batch_isend_irecv;
 *                                NCCL: one group), so paired exchanges cannot deadlock;
 *                                ibatch_p2p posts the same and returns one Request for all
 * Non-blocking variants return a Request to wait on. Every call is accounted in the
 * CommLedger under the group's name and the current phase, on the calling thread when it
 * is posted; a group of size 1 short-circuits (copies where needed) and records nothing.
 *
 * Asynchronous semantics (DESIGN.md, "Streams"): a non-blocking call takes its inputs as
 * they are after the work queued so far on the caller's current stream, and runs off the
 * caller's queue -- MPI on one worker thread per communicator, which starts the posted
 * calls in program order (so collectives of one communicator are issued in the same
 * order on every rank) and progresses them while the caller computes; NCCL on the
 * communicator's own CUDA stream, ordered after the caller's stream by an event.
 * Request::wait() orders the caller's current stream after the call: MPI returns once the
 * worker completed it (results staged back to the device); NCCL makes the current stream
 * wait on the call's done event, without blocking the host. A Request destroyed unwaited
 * waits. Blocking calls are post + wait, with the same results and accounting (MPI runs
 * them on the calling thread once the worker has drained what was posted before; the
 * reducing ones through the same non-blocking MPI call, so the sums are bitwise those of
 * the non-blocking variants).
 * Buffers must stay untouched until wait() returns. One communicator is driven by one
 * thread.
 */
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "optimized/comm/ledger.h"
#include "optimized/core/tensor.h"

namespace pb {

enum class ReduceOp { Sum, Max };

// A host-clock interval in milliseconds (core/device.h: host_clock_ms()).
struct Span {
  double start_ms = 0, end_ms = 0;
};

class Request {
 public:
  virtual ~Request() = default;
  virtual void wait() = 0;
  // When the call ran where it was progressed (MPI: from its start on the worker to its
  // completion, staging included), on the host clock; {0, 0} where it is not measured
  // (NCCL runs on the device).
  virtual Span span() const { return {}; }
};
using RequestPtr = std::unique_ptr<Request>;

// Several requests waited as one, in order.
class Requests final : public Request {
 public:
  explicit Requests(std::vector<RequestPtr> all) : all_(std::move(all)) {}
  void wait() override {
    for (auto& r : all_) r->wait();
  }

 private:
  std::vector<RequestPtr> all_;
};

// One point-to-point transfer of a batch; accounted under its own phase (pipeline
// activations in the forward, gradients in the backward).
struct P2POp {
  bool send;
  Tensor* buf;
  int peer;
  int tag = 0;
  Phase phase = Phase::Forward;
};

// The row width of all_to_all_v's tensors: the elements per row of whichever has rows (a
// rank may send nothing and receive rows, or the reverse; an empty tensor's cols() is 0).
inline int64_t row_width(const Tensor& in, const Tensor& out) {
  return in.rows() ? in.cols() : out.rows() ? out.cols() : 0;
}

class Communicator {
 public:
  virtual ~Communicator() = default;
  int rank() const { return rank_; }
  int size() const { return size_; }
  const std::string& name() const { return name_; }

  virtual void all_reduce(Tensor& buf, ReduceOp op = ReduceOp::Sum) = 0;
  virtual void all_gather(Tensor& out, const Tensor& in) = 0;
  virtual void reduce_scatter(Tensor& out, const Tensor& in) = 0;
  virtual void all_to_all(Tensor& out, const Tensor& in) = 0;
  virtual void all_to_all_v(Tensor& out, const std::vector<int64_t>& recv_rows, const Tensor& in,
                            const std::vector<int64_t>& send_rows) = 0;
  virtual void broadcast(Tensor& buf, int root) = 0;
  virtual void send(const Tensor& buf, int peer, int tag = 0) = 0;
  virtual void recv(Tensor& buf, int peer, int tag = 0) = 0;
  virtual RequestPtr iall_reduce(Tensor& buf, ReduceOp op = ReduceOp::Sum) = 0;
  virtual RequestPtr iall_gather(Tensor& out, const Tensor& in) = 0;
  virtual RequestPtr iall_gather_in_place(Tensor& buf) = 0;
  void all_gather_in_place(Tensor& buf) { iall_gather_in_place(buf)->wait(); }
  virtual RequestPtr iall_gather_at(Tensor& out, const Tensor& in, int64_t row0) = 0;
  virtual RequestPtr ireduce_scatter(Tensor& out, const Tensor& in) = 0;
  virtual RequestPtr ireduce_scatter_in_place(Tensor& buf) = 0;
  virtual RequestPtr isend(const Tensor& buf, int peer, int tag = 0) = 0;
  virtual RequestPtr irecv(Tensor& buf, int peer, int tag = 0) = 0;
  virtual void batch_p2p(const std::vector<P2POp>& ops) = 0;
  virtual RequestPtr ibatch_p2p(const std::vector<P2POp>& ops) = 0;
  virtual void barrier() = 0;
  // All-reduce of one double (losses, norms), accounted as 8 bytes.
  virtual double all_reduce_scalar(double v, ReduceOp op = ReduceOp::Sum) = 0;
  // One double to / from a peer (the optimizer's post-validation chain), 8 bytes each way.
  virtual void send_scalar(double v, int peer, int tag = 0) = 0;
  virtual double recv_scalar(int peer, int tag = 0) = 0;

 protected:
  Communicator(std::string name, int rank, int size) : name_(std::move(name)), rank_(rank), size_(size) {}
  std::string name_;
  int rank_ = 0, size_ = 1;
};

// A new (size * rows(in), cols) CommBuffers tensor holding g's all-gather of in (the rows of
// g's ranks in order): the gathered copy of a TP strategy.
inline Tensor all_gathered(Communicator& g, const Tensor& in) {
  Tensor out = Tensor::empty({g.size() * in.rows(), in.cols()}, MemCategory::CommBuffers, in.dtype());
  g.all_gather(out, in);
  return out;
}

}  // namespace pb
