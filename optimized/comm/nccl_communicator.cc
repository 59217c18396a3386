/* NCCL Communicator (see nccl_communicator.h). */
#include "optimized/comm/nccl_communicator.h"

#include "optimized/core/fatal.h"
#include "reference/common/error.h"

#ifdef PB_WITH_NCCL
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <algorithm>
#include <vector>

#include "optimized/core/cuda_check.h"
#include "optimized/core/device.h"
#include "optimized/core/stream.h"
#include "optimized/core/timeline.h"

#define NCCL_CHECK(comm, call)                                                                                  \
  do {                                                                                                          \
    const ncclResult_t pb_r_ = (call);                                                                          \
    if (pb_r_ != ncclSuccess)                                                                                   \
      ::pb::abort_job(std::string("NCCL error: ") + ncclGetErrorString(pb_r_) + " (" + ncclGetLastError(comm) + \
                      "), " #call ", " __FILE__ ":" + std::to_string(__LINE__));                                \
  } while (0)
#endif

namespace pb {

#ifdef PB_WITH_NCCL
namespace {

ncclDataType_t nccl_type(const Tensor& t) { return t.dtype() == DType::F32 ? ncclFloat32 : ncclBfloat16; }

void require_device(const Tensor& t, const char* what) {
  PB_REQUIRE(t.device() == Device::CUDA, "nccl ", what, ": buffer ", t.shape_str(), " is not on the GPU");
}

class DoneRequest : public Request {
 public:
  void wait() override {}
};

// The call's completion on the communication stream: wait() makes the caller's current
// stream wait for it on the device (the host goes on). With the timeline on, the wait is
// a device-timed Wait span: marks on the waiting stream before and after its wait.
class StreamRequest : public Request {
 public:
  StreamRequest(Event done, std::string what) : done_(std::move(done)), what_(std::move(what)) {}
  void wait() override {
    const Stream s = current_stream(Device::CUDA);
    if (!Timeline::get().device_timed()) return s.wait(done_);
    auto before = std::make_shared<DeviceMark>(Device::CUDA), after = std::make_shared<DeviceMark>(Device::CUDA);
    before->record();
    s.wait(done_);
    after->record();
    Timeline::get().add_marks(SpanKind::Wait, what_ + " wait", std::move(before), std::move(after));
  }

 private:
  Event done_;
  std::string what_;
};

// NCCL over the ranks of comm, bootstrapped through MPI (every rank of comm calls it). A
// failure on any rank is agreed on over comm (no rank is left waiting in a collective of
// the bootstrap): null on every rank, with NCCL's message in `error`.
ncclComm_t init_nccl(MPI_Comm comm, int rank, int size, std::string& error) {
  ncclUniqueId id{};
  ncclResult_t r = rank == 0 ? ncclGetUniqueId(&id) : ncclSuccess;
  int ok = r == ncclSuccess ? 1 : 0;
  MPI_CHECK(MPI_Bcast(&ok, 1, MPI_INT, 0, comm));
  if (!ok) {
    error = rank == 0 ? std::string("ncclGetUniqueId: ") + ncclGetErrorString(r) : "ncclGetUniqueId failed on rank 0";
    return nullptr;
  }
  MPI_CHECK(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, comm));
  ncclComm_t c = nullptr;
  r = ncclCommInitRank(&c, size, id, rank);
  int mine = r == ncclSuccess ? 1 : 0, all = 0;
  MPI_CHECK(MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, comm));
  if (all) return c;
  if (mine) ncclCommDestroy(c);
  error = mine ? std::string("ncclCommInitRank failed on another rank")
               : std::string("ncclCommInitRank: ") + ncclGetErrorString(r) + " " + ncclGetLastError(nullptr);
  return nullptr;
}

class NcclCommunicator : public Communicator {
 public:
  // comm_: an initialized NCCL communicator over the ranks of comm (init_nccl), owned.
  NcclCommunicator(std::string name, MPI_Comm comm, int rank, int size, ncclComm_t nccl)
      : Communicator(std::move(name), rank, size), stream_(Stream::create(Device::CUDA)), comm_(nccl) {
    MPI_CHECK(MPI_Comm_dup(comm, &mpi_));
  }
  ~NcclCommunicator() override {
    cudaStreamSynchronize(cs());  // unchecked: may run at exit
    ncclCommDestroy(comm_);
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Comm_free(&mpi_);
  }

  // Blocking calls: post + wait (the current stream waits on the device).
  void all_reduce(Tensor& buf, ReduceOp op) override { iall_reduce(buf, op)->wait(); }
  void all_gather(Tensor& out, const Tensor& in) override { iall_gather(out, in)->wait(); }
  void reduce_scatter(Tensor& out, const Tensor& in) override { ireduce_scatter(out, in)->wait(); }
  void send(const Tensor& buf, int peer, int tag) override { isend(buf, peer, tag)->wait(); }
  void recv(Tensor& buf, int peer, int tag) override { irecv(buf, peer, tag)->wait(); }

  void all_to_all(Tensor& out, const Tensor& in) override {
    const int64_t rows = in.rows() / size_;
    all_to_all_v(out, std::vector<int64_t>(size_t(size_), rows), in, std::vector<int64_t>(size_t(size_), rows));
  }

  void all_to_all_v(Tensor& out, const std::vector<int64_t>& recv_rows, const Tensor& in,
                    const std::vector<int64_t>& send_rows) override {
    require_device(in, "all_to_all");
    require_device(out, "all_to_all");
    if (size_ > 1) CommLedger::get().record(name_, CommOp::AllToAll, size_, int64_t(in.bytes()));
    const int64_t cols = row_width(in, out), es = int64_t(dtype_bytes(in.dtype()));
    int64_t so = 0, ro = 0;
    enter("all_to_all");
    NCCL_CHECK(comm_, ncclGroupStart());
    for (int q = 0; q < size_; ++q) {
      const int64_t sn = send_rows[size_t(q)] * cols, rn = recv_rows[size_t(q)] * cols;
      NCCL_CHECK(comm_,
                 ncclSend(static_cast<const char*>(in.raw()) + so * es, size_t(sn), nccl_type(in), q, comm_, cs()));
      NCCL_CHECK(comm_, ncclRecv(static_cast<char*>(out.raw()) + ro * es, size_t(rn), nccl_type(out), q, comm_, cs()));
      so += sn;
      ro += rn;
    }
    NCCL_CHECK(comm_, ncclGroupEnd());
    leave({&in, &out})->wait();
  }

  void broadcast(Tensor& buf, int root) override {
    if (size_ == 1) return;
    require_device(buf, "broadcast");
    CommLedger::get().record(name_, CommOp::Broadcast, size_, int64_t(buf.bytes()));
    enter("broadcast");
    NCCL_CHECK(comm_, ncclBroadcast(buf.raw(), buf.raw(), size_t(buf.numel()), nccl_type(buf), root, comm_, cs()));
    leave({&buf})->wait();
  }

  RequestPtr iall_reduce(Tensor& buf, ReduceOp op) override {
    if (size_ == 1) return std::make_unique<DoneRequest>();
    require_device(buf, "all_reduce");
    CommLedger::get().record(name_, CommOp::AllReduce, size_, int64_t(buf.bytes()));
    enter("all_reduce");
    NCCL_CHECK(comm_, ncclAllReduce(buf.raw(), buf.raw(), size_t(buf.numel()), nccl_type(buf),
                                    op == ReduceOp::Sum ? ncclSum : ncclMax, comm_, cs()));
    return leave({&buf});
  }

  RequestPtr iall_gather(Tensor& out, const Tensor& in) override {
    PB_REQUIRE(out.numel() == in.numel() * size_, "all_gather: output ", out.shape_str(), " is not ", size_,
               " x input ", in.shape_str());
    require_device(in, "all_gather");
    if (size_ > 1) CommLedger::get().record(name_, CommOp::AllGather, size_, int64_t(out.bytes()));
    enter("all_gather");
    NCCL_CHECK(comm_, ncclAllGather(in.raw(), out.raw(), size_t(in.numel()), nccl_type(in), comm_, cs()));
    return leave({&in, &out});
  }

  RequestPtr iall_gather_in_place(Tensor& buf) override {
    PB_REQUIRE(buf.numel() % size_ == 0, "all_gather_in_place: ", buf.shape_str(), " does not divide by ", size_);
    require_device(buf, "all_gather_in_place");
    if (size_ > 1) CommLedger::get().record(name_, CommOp::AllGather, size_, int64_t(buf.bytes()));
    const int64_t q = buf.numel() / size_;
    enter("all_gather");
    // NCCL's in-place all-gather: the send buffer is this rank's part of the receive buffer.
    const void* mine = static_cast<const char*>(buf.raw()) + q * rank_ * int64_t(dtype_bytes(buf.dtype()));
    NCCL_CHECK(comm_, ncclAllGather(mine, buf.raw(), size_t(q), nccl_type(buf), comm_, cs()));
    return leave({&buf});
  }

  // One group of sends and receives: rank j's rows straight to their place (j R + row0).
  RequestPtr iall_gather_at(Tensor& out, const Tensor& in, int64_t row0) override {
    const int64_t R = out.rows() / size_, q = in.rows();
    PB_REQUIRE(out.rows() == R * size_ && out.cols() == in.cols() && out.dtype() == in.dtype() && row0 >= 0 &&
                   row0 + q <= R, "all_gather_at: ", in.shape_str(), " at row ", row0, " of each of ", size_,
               " row blocks of ", out.shape_str());
    require_device(in, "all_gather_at");
    require_device(out, "all_gather_at");
    if (size_ > 1) CommLedger::get().record(name_, CommOp::AllGather, size_, int64_t(in.bytes()) * size_);
    const int64_t row_bytes = in.cols() * int64_t(dtype_bytes(in.dtype()));
    auto place = [&](int j) { return static_cast<char*>(out.raw()) + (j * R + row0) * row_bytes; };
    enter("all_gather");
    CUDA_CHECK(cudaMemcpyAsync(place(rank_), in.raw(), in.bytes(), cudaMemcpyDeviceToDevice, cs()));
    NCCL_CHECK(comm_, ncclGroupStart());
    for (int j = 0; j < size_; ++j) {
      if (j == rank_) continue;
      NCCL_CHECK(comm_, ncclSend(in.raw(), size_t(in.numel()), nccl_type(in), j, comm_, cs()));
      NCCL_CHECK(comm_, ncclRecv(place(j), size_t(in.numel()), nccl_type(in), j, comm_, cs()));
    }
    NCCL_CHECK(comm_, ncclGroupEnd());
    return leave({&in, &out});
  }

  RequestPtr ireduce_scatter(Tensor& out, const Tensor& in) override {
    PB_REQUIRE(in.numel() == out.numel() * size_, "reduce_scatter: input ", in.shape_str(), " is not ", size_,
               " x output ", out.shape_str());
    require_device(in, "reduce_scatter");
    if (size_ > 1) CommLedger::get().record(name_, CommOp::ReduceScatter, size_, int64_t(in.bytes()));
    enter("reduce_scatter");
    NCCL_CHECK(comm_, ncclReduceScatter(in.raw(), out.raw(), size_t(out.numel()), nccl_type(in), ncclSum, comm_, cs()));
    return leave({&in, &out});
  }

  // NCCL's in-place reduce-scatter: the receive buffer is this rank's block of the send buffer.
  RequestPtr ireduce_scatter_in_place(Tensor& buf) override {
    PB_REQUIRE(buf.numel() % size_ == 0, "reduce_scatter_in_place: ", buf.shape_str(), " does not divide by ", size_);
    require_device(buf, "reduce_scatter_in_place");
    if (size_ == 1) return std::make_unique<DoneRequest>();
    CommLedger::get().record(name_, CommOp::ReduceScatter, size_, int64_t(buf.bytes()));
    const int64_t q = buf.numel() / size_;
    enter("reduce_scatter");
    void* mine = static_cast<char*>(buf.raw()) + q * rank_ * int64_t(dtype_bytes(buf.dtype()));
    NCCL_CHECK(comm_, ncclReduceScatter(buf.raw(), mine, size_t(q), nccl_type(buf), ncclSum, comm_, cs()));
    return leave({&buf});
  }

  RequestPtr isend(const Tensor& buf, int peer, int) override {
    enter("send");
    post_send(buf, peer);
    return leave({&buf});
  }

  RequestPtr irecv(Tensor& buf, int peer, int) override {
    enter("recv");
    post_recv(buf, peer);
    return leave({&buf});
  }

  // One NCCL group: the sends and receives progress together. NCCL matches them by peer
  // and order, not by tag, so they are posted in (peer, tag) order: both sides of a pair
  // then agree wherever their sequences of tags agree (pp::check_channel_order).
  void batch_p2p(const std::vector<P2POp>& in) override { ibatch_p2p(in)->wait(); }
  RequestPtr ibatch_p2p(const std::vector<P2POp>& in) override {
    std::vector<P2POp> ops = in;
    std::stable_sort(ops.begin(), ops.end(),
                     [](const P2POp& a, const P2POp& b) { return std::pair(a.peer, a.tag) < std::pair(b.peer, b.tag); });
    std::vector<const Tensor*> bufs;
    enter("batch_p2p");
    NCCL_CHECK(comm_, ncclGroupStart());
    for (const auto& op : ops) {
      PhaseScope phase(op.phase);
      if (op.send)
        post_send(*op.buf, op.peer);
      else
        post_recv(*op.buf, op.peer);
      bufs.push_back(op.buf);
    }
    NCCL_CHECK(comm_, ncclGroupEnd());
    return leave(bufs);
  }

  // Every rank's queued work (this rank's current and communication streams) has been
  // issued and completed before the ranks meet.
  void barrier() override {
    current_stream(Device::CUDA).synchronize();
    stream_.synchronize();
    MPI_CHECK(MPI_Barrier(mpi_));
  }

  // Host scalars (losses, norms) go through MPI; accounted like the MPI backend's. They
  // come from the host, so no stream is involved.
  double all_reduce_scalar(double v, ReduceOp op) override {
    if (size_ == 1) return v;
    CommLedger::get().record(name_, CommOp::AllReduce, size_, 8);
    double out = 0;
    MPI_CHECK(MPI_Allreduce(&v, &out, 1, MPI_DOUBLE, op == ReduceOp::Sum ? MPI_SUM : MPI_MAX, mpi_));
    return out;
  }
  void send_scalar(double v, int peer, int tag) override {
    CommLedger::get().record(name_, CommOp::Send, size_, 8);
    MPI_CHECK(MPI_Send(&v, 1, MPI_DOUBLE, peer, tag, mpi_));
  }
  double recv_scalar(int peer, int tag) override {
    CommLedger::get().record(name_, CommOp::Recv, size_, 8);
    double v = 0;
    MPI_CHECK(MPI_Recv(&v, 1, MPI_DOUBLE, peer, tag, mpi_, MPI_STATUS_IGNORE));
    return v;
  }

 private:
  cudaStream_t cs() const { return static_cast<cudaStream_t>(stream_.cuda_stream()); }

  // The communication stream starts after the work queued so far on the caller's stream
  // (which wrote the inputs). With the timeline on, the call is a device-timed Async span:
  // marks on the communication stream before and after it.
  void enter(const char* what) {
    Event ready(Device::CUDA);
    ready.record(current_stream(Device::CUDA));
    stream_.wait(ready);
    what_ = name_ + " " + what;
    if (Timeline::get().device_timed()) {
      start_ = std::make_shared<DeviceMark>(Device::CUDA);
      const StreamScope on(stream_, Device::CUDA);
      start_->record();
    }
  }
  // The buffers are in use on the communication stream until the call's done event: the
  // allocator keeps them from other streams until then (Tensor::record_stream).
  RequestPtr leave(const std::vector<const Tensor*>& bufs) {
    for (const Tensor* t : bufs) t->record_stream(stream_);
    Event done(Device::CUDA);
    done.record(stream_);
    if (start_) {
      auto end = std::make_shared<DeviceMark>(Device::CUDA);
      const StreamScope on(stream_, Device::CUDA);
      end->record();
      Timeline::get().add_marks(SpanKind::Async, what_, std::move(start_), std::move(end));
    }
    return std::make_unique<StreamRequest>(std::move(done), what_);
  }

  void post_send(const Tensor& buf, int peer) {
    require_device(buf, "send");
    CommLedger::get().record(name_, CommOp::Send, size_, int64_t(buf.bytes()));
    NCCL_CHECK(comm_, ncclSend(buf.raw(), size_t(buf.numel()), nccl_type(buf), peer, comm_, cs()));
  }
  void post_recv(Tensor& buf, int peer) {
    require_device(buf, "recv");
    CommLedger::get().record(name_, CommOp::Recv, size_, int64_t(buf.bytes()));
    NCCL_CHECK(comm_, ncclRecv(buf.raw(), size_t(buf.numel()), nccl_type(buf), peer, comm_, cs()));
  }

  Stream stream_;  // the communication stream
  std::string what_;                    // the call between enter() and leave(): "group op"
  std::shared_ptr<DeviceMark> start_;  // its start mark (device-timed timeline)
  ncclComm_t comm_ = nullptr;
  MPI_Comm mpi_ = MPI_COMM_NULL;
};

}  // namespace

bool nccl_built() { return true; }

std::string nccl_version() {
  int v = 0;
  ncclGetVersion(&v);
  return std::to_string(v / 10000) + "." + std::to_string((v / 100) % 100) + "." + std::to_string(v % 100);
}

std::unique_ptr<Communicator> try_make_nccl_communicator(const std::string& name, MPI_Comm comm,
                                                         std::string* error) {
  int rank = 0, size = 1;
  MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MPI_CHECK(MPI_Comm_size(comm, &size));
  std::string why;
  ncclComm_t c = init_nccl(comm, rank, size, why);
  if (!c) {
    if (error) *error = why;
    return nullptr;
  }
  return std::make_unique<NcclCommunicator>(name, comm, rank, size, c);
}

bool nccl_probe(MPI_Comm comm, std::string* error) {  // NCCL's setup alone: no stream, no MPI dup
  int rank = 0, size = 1;
  MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MPI_CHECK(MPI_Comm_size(comm, &size));
  std::string why;
  ncclComm_t c = init_nccl(comm, rank, size, why);
  if (c) ncclCommDestroy(c);
  else if (error) *error = why;
  return c != nullptr;
}
#else
bool nccl_built() { return false; }
std::string nccl_version() { return ""; }
std::unique_ptr<Communicator> try_make_nccl_communicator(const std::string&, MPI_Comm, std::string* error) {
  if (error) *error = "this build has no NCCL";
  return nullptr;
}
bool nccl_probe(MPI_Comm, std::string* error) {
  if (error) *error = "this build has no NCCL";
  return false;
}
#endif

std::unique_ptr<Communicator> make_nccl_communicator(const std::string& name, MPI_Comm comm) {
  std::string error;
  auto c = try_make_nccl_communicator(name, comm, &error);
  PB_REQUIRE(c, "nccl ", name, ": ", error);
  return c;
}

}  // namespace pb
