/* MPI backend of the Communicator: blocking and non-blocking collectives on host
 * buffers, every call accounted in the CommLedger. */
#include "optimized/comm/mpi_communicator.h"

#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <new>

#include "optimized/core/device.h"
#include "optimized/core/fatal.h"
#include "reference/common/error.h"
#ifdef PB_WITH_CUDA
#include <cuda_runtime_api.h>

#include "optimized/core/cuda_check.h"
#endif

namespace pb {

namespace {

MPI_Datatype mpi_type(const Tensor& t) { return t.dtype() == DType::F32 ? MPI_FLOAT : MPI_UINT16_T; }

// bf16 reductions for MPI (which has no bf16 type): each pairwise step adds in fp32 and
// rounds to bf16, as a ring reduction on bf16 buffers does.
void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const uint16_t*>(in);
  auto* b = static_cast<uint16_t*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = float_to_bf16(bf16_to_float(a[i]) + bf16_to_float(b[i]));
}

void bf16_max(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const uint16_t*>(in);
  auto* b = static_cast<uint16_t*>(inout);
  for (int i = 0; i < *len; ++i)
    if (bf16_to_float(a[i]) > bf16_to_float(b[i])) b[i] = a[i];
}

MPI_Op mpi_op(const Tensor& t, ReduceOp op) {
  if (t.dtype() == DType::F32) return op == ReduceOp::Sum ? MPI_SUM : MPI_MAX;
  static MPI_Op sum = MPI_OP_NULL, max = MPI_OP_NULL;
  if (sum == MPI_OP_NULL) {
    MPI_CHECK(MPI_Op_create(bf16_sum, 1, &sum));
    MPI_CHECK(MPI_Op_create(bf16_max, 1, &max));
  }
  return op == ReduceOp::Sum ? sum : max;
}

int count(const Tensor& t) {
  PB_REQUIRE(t.numel() <= INT32_MAX, "communicator: buffer of ", t.numel(), " elements exceeds MPI's int count");
  return int(t.numel());
}

void copy(Tensor& dst, const Tensor& src) {
  PB_REQUIRE(dst.bytes() == src.bytes(), "communicator: size-1 group copy of ", src.shape_str(), " into ",
             dst.shape_str());
  if (dst.raw() != src.raw()) copy_bytes(dst.raw(), dst.device(), src.raw(), src.device(), src.bytes());
}

// Host staging blocks, cached by size: pinned (page-locked) memory in a CUDA build, so the
// device <-> host copies run at DMA speed and MPI may register the pages, and a block once
// pinned is reused by the next staging of the same rounded size (steady-state steps pin
// nothing new). Blocks are kept until the process ends: the pool is never destroyed, so no
// cudaFreeHost runs after the CUDA runtime has shut down at exit.
class StagingPool {
 public:
  static StagingPool& get() {
    static StagingPool* pool = new StagingPool;  // intentionally never destroyed (see above)
    return *pool;
  }
  // A block of at least `bytes` (rounded up to 4 KiB pages); its size is rounded(bytes).
  void* acquire(size_t bytes) {
    const size_t r = rounded(bytes);
    {
      std::lock_guard<std::mutex> lock(mu_);
      const auto it = free_.find(r);
      if (it != free_.end()) {
        void* p = it->second;
        free_.erase(it);
        return p;
      }
    }
    void* p = nullptr;
#ifdef PB_WITH_CUDA
    CUDA_CHECK(cudaHostAlloc(&p, r, cudaHostAllocDefault));
#else
    p = std::malloc(r);
    if (!p) throw std::bad_alloc();
#endif
    return p;
  }
  void release(void* p, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.emplace(rounded(bytes), p);
  }

 private:
  static size_t rounded(size_t bytes) { return (bytes + 4095) / 4096 * 4096; }
  std::mutex mu_;
  std::multimap<size_t, void*> free_;  // free blocks by rounded size
};

// Host memory for a tensor's bytes: the tensor itself on the CPU; for a device tensor a
// host copy in a pinned staging block (MPI sees host buffers; DESIGN.md: device buffers
// are staged through the host). The block returns to the pool when the view is destroyed.
class HostView {
 public:
  HostView(const Tensor& t, bool copy_in) : t_(t), staged_(t.device() != Device::CPU), bytes_(t.bytes()) {
    if (!staged_ || bytes_ == 0) return;  // an empty staged view has a null pointer (count 0)
    buf_ = StagingPool::get().acquire(bytes_);
    if (copy_in) copy_bytes(buf_, Device::CPU, t.raw(), t.device(), bytes_);
  }
  ~HostView() {
    if (buf_) StagingPool::get().release(buf_, bytes_);
  }
  HostView(const HostView&) = delete;
  HostView& operator=(const HostView&) = delete;
  void* ptr() { return staged_ ? buf_ : const_cast<void*>(t_.raw()); }
  void copy_out() {  // the received bytes back to the device
    if (staged_) copy_bytes(const_cast<void*>(t_.raw()), t_.device(), buf_, Device::CPU, bytes_);
  }

 private:
  Tensor t_;
  bool staged_;
  size_t bytes_;
  void* buf_ = nullptr;
};

class MpiRequest : public Request {
 public:
  MPI_Request req = MPI_REQUEST_NULL;
  std::vector<std::shared_ptr<HostView>> views;  // staging buffers kept alive until done
  std::shared_ptr<HostView> result;              // copied back to the device on completion
  void wait() override {
    MPI_CHECK(MPI_Wait(&req, MPI_STATUS_IGNORE));
    if (result) result->copy_out();
    result.reset();
  }
  ~MpiRequest() override {
    if (req != MPI_REQUEST_NULL) MPI_Wait(&req, MPI_STATUS_IGNORE);
  }
};

class DoneRequest : public Request {
 public:
  void wait() override {}
};

}  // namespace

static int comm_rank(MPI_Comm c) {
  int r = 0;
  MPI_CHECK(MPI_Comm_rank(c, &r));
  return r;
}
static int comm_size(MPI_Comm c) {
  int s = 0;
  MPI_CHECK(MPI_Comm_size(c, &s));
  return s;
}

MpiCommunicator::MpiCommunicator(std::string name, MPI_Comm comm)
    : Communicator(std::move(name), comm_rank(comm), comm_size(comm)), comm_(comm) {}

MpiCommunicator::~MpiCommunicator() {
  int fin = 0;
  MPI_Finalized(&fin);
  if (!fin && comm_ != MPI_COMM_WORLD && comm_ != MPI_COMM_SELF && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void MpiCommunicator::all_reduce(Tensor& buf, ReduceOp op) {
  if (size_ == 1) return;
  CommLedger::get().record(name_, CommOp::AllReduce, size_, int64_t(buf.bytes()));
  HostView b(buf, true);
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, b.ptr(), count(buf), mpi_type(buf), mpi_op(buf, op), comm_));
  b.copy_out();
}

void MpiCommunicator::all_gather(Tensor& out, const Tensor& in) {
  PB_REQUIRE(out.numel() == in.numel() * size_, "all_gather: output ", out.shape_str(), " is not ", size_,
             " x input ", in.shape_str());
  if (size_ == 1) return copy(out, in);
  CommLedger::get().record(name_, CommOp::AllGather, size_, int64_t(out.bytes()));
  HostView i(in, true), o(out, false);
  MPI_CHECK(MPI_Allgather(i.ptr(), count(in), mpi_type(in), o.ptr(), count(in), mpi_type(out), comm_));
  o.copy_out();
}

void MpiCommunicator::reduce_scatter(Tensor& out, const Tensor& in) {
  PB_REQUIRE(in.numel() == out.numel() * size_, "reduce_scatter: input ", in.shape_str(), " is not ", size_,
             " x output ", out.shape_str());
  if (size_ == 1) return copy(out, in);
  CommLedger::get().record(name_, CommOp::ReduceScatter, size_, int64_t(in.bytes()));
  HostView i(in, true), o(out, false);
  MPI_CHECK(MPI_Reduce_scatter_block(i.ptr(), o.ptr(), count(out), mpi_type(in), mpi_op(in, ReduceOp::Sum), comm_));
  o.copy_out();
}

void MpiCommunicator::all_to_all(Tensor& out, const Tensor& in) {
  PB_REQUIRE(in.numel() == out.numel() && in.numel() % size_ == 0, "all_to_all: input ", in.shape_str(),
             " and output ", out.shape_str(), " must match and divide by ", size_);
  if (size_ == 1) return copy(out, in);
  CommLedger::get().record(name_, CommOp::AllToAll, size_, int64_t(in.bytes()));
  const int n = count(in) / size_;
  HostView i(in, true), o(out, false);
  MPI_CHECK(MPI_Alltoall(i.ptr(), n, mpi_type(in), o.ptr(), n, mpi_type(out), comm_));
  o.copy_out();
}

void MpiCommunicator::all_to_all_v(Tensor& out, const std::vector<int64_t>& recv_rows, const Tensor& in,
                                   const std::vector<int64_t>& send_rows) {
  PB_REQUIRE(int(send_rows.size()) == size_ && int(recv_rows.size()) == size_, "all_to_all_v: ", size_,
             " row counts needed");
  const int64_t cols = in.cols();
  const size_t n = static_cast<size_t>(size_);
  std::vector<int> sc(n), sd(n), rc(n), rd(n);
  int64_t s_off = 0, r_off = 0;
  for (int q = 0; q < size_; ++q) {
    sc[size_t(q)] = int(send_rows[size_t(q)] * cols);
    sd[size_t(q)] = int(s_off);
    rc[size_t(q)] = int(recv_rows[size_t(q)] * cols);
    rd[size_t(q)] = int(r_off);
    s_off += sc[size_t(q)];
    r_off += rc[size_t(q)];
  }
  PB_REQUIRE(s_off == in.numel() && r_off == out.numel(), "all_to_all_v: row counts (", s_off, " and ", r_off,
             " elements) do not cover input ", in.shape_str(), " and output ", out.shape_str());
  if (size_ == 1) return copy(out, in);
  CommLedger::get().record(name_, CommOp::AllToAll, size_, int64_t(in.bytes()));
  HostView i(in, true), o(out, false);
  MPI_CHECK(MPI_Alltoallv(i.ptr(), sc.data(), sd.data(), mpi_type(in), o.ptr(), rc.data(), rd.data(), mpi_type(out),
                          comm_));
  o.copy_out();
}

void MpiCommunicator::broadcast(Tensor& buf, int root) {
  if (size_ == 1) return;
  CommLedger::get().record(name_, CommOp::Broadcast, size_, int64_t(buf.bytes()));
  HostView b(buf, true);
  MPI_CHECK(MPI_Bcast(b.ptr(), count(buf), mpi_type(buf), root, comm_));
  b.copy_out();
}

void MpiCommunicator::send(const Tensor& buf, int peer, int tag) {
  CommLedger::get().record(name_, CommOp::Send, size_, int64_t(buf.bytes()));
  HostView b(buf, true);
  MPI_CHECK(MPI_Send(b.ptr(), count(buf), mpi_type(buf), peer, tag, comm_));
}

void MpiCommunicator::recv(Tensor& buf, int peer, int tag) {
  CommLedger::get().record(name_, CommOp::Recv, size_, int64_t(buf.bytes()));
  HostView b(buf, false);
  MPI_CHECK(MPI_Recv(b.ptr(), count(buf), mpi_type(buf), peer, tag, comm_, MPI_STATUS_IGNORE));
  b.copy_out();
}

RequestPtr MpiCommunicator::iall_reduce(Tensor& buf, ReduceOp op) {
  if (size_ == 1) return std::make_unique<DoneRequest>();
  CommLedger::get().record(name_, CommOp::AllReduce, size_, int64_t(buf.bytes()));
  auto r = std::make_unique<MpiRequest>();
  r->result = std::make_shared<HostView>(buf, true);
  MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, r->result->ptr(), count(buf), mpi_type(buf), mpi_op(buf, op), comm_, &r->req));
  return r;
}

RequestPtr MpiCommunicator::iall_gather(Tensor& out, const Tensor& in) {
  PB_REQUIRE(out.numel() == in.numel() * size_, "iall_gather: output ", out.shape_str(), " is not ", size_,
             " x input ", in.shape_str());
  if (size_ == 1) {
    copy(out, in);
    return std::make_unique<DoneRequest>();
  }
  CommLedger::get().record(name_, CommOp::AllGather, size_, int64_t(out.bytes()));
  auto r = std::make_unique<MpiRequest>();
  r->views.push_back(std::make_shared<HostView>(in, true));
  r->result = std::make_shared<HostView>(out, false);
  MPI_CHECK(MPI_Iallgather(r->views[0]->ptr(), count(in), mpi_type(in), r->result->ptr(), count(in), mpi_type(out),
                           comm_, &r->req));
  return r;
}

RequestPtr MpiCommunicator::ireduce_scatter(Tensor& out, const Tensor& in) {
  PB_REQUIRE(in.numel() == out.numel() * size_, "ireduce_scatter: input ", in.shape_str(), " is not ", size_,
             " x output ", out.shape_str());
  if (size_ == 1) {
    copy(out, in);
    return std::make_unique<DoneRequest>();
  }
  CommLedger::get().record(name_, CommOp::ReduceScatter, size_, int64_t(in.bytes()));
  auto r = std::make_unique<MpiRequest>();
  r->views.push_back(std::make_shared<HostView>(in, true));
  r->result = std::make_shared<HostView>(out, false);
  MPI_CHECK(MPI_Ireduce_scatter_block(r->views[0]->ptr(), r->result->ptr(), count(out), mpi_type(in),
                                      mpi_op(in, ReduceOp::Sum), comm_, &r->req));
  return r;
}

RequestPtr MpiCommunicator::isend(const Tensor& buf, int peer, int tag) {
  CommLedger::get().record(name_, CommOp::Send, size_, int64_t(buf.bytes()));
  auto r = std::make_unique<MpiRequest>();
  r->views.push_back(std::make_shared<HostView>(buf, true));
  MPI_CHECK(MPI_Isend(r->views[0]->ptr(), count(buf), mpi_type(buf), peer, tag, comm_, &r->req));
  return r;
}

RequestPtr MpiCommunicator::irecv(Tensor& buf, int peer, int tag) {
  CommLedger::get().record(name_, CommOp::Recv, size_, int64_t(buf.bytes()));
  auto r = std::make_unique<MpiRequest>();
  r->result = std::make_shared<HostView>(buf, false);
  MPI_CHECK(MPI_Irecv(r->result->ptr(), count(buf), mpi_type(buf), peer, tag, comm_, &r->req));
  return r;
}

void MpiCommunicator::batch_p2p(const std::vector<P2POp>& ops) {
  std::vector<RequestPtr> reqs;
  for (const auto& op : ops) {
    PhaseScope phase(op.phase);
    reqs.push_back(op.send ? isend(*op.buf, op.peer, op.tag) : irecv(*op.buf, op.peer, op.tag));
  }
  for (auto& r : reqs) r->wait();
}

void MpiCommunicator::barrier() { MPI_CHECK(MPI_Barrier(comm_)); }

double MpiCommunicator::all_reduce_scalar(double v, ReduceOp op) {
  if (size_ == 1) return v;
  CommLedger::get().record(name_, CommOp::AllReduce, size_, 8);
  double out = 0;
  MPI_CHECK(MPI_Allreduce(&v, &out, 1, MPI_DOUBLE, op == ReduceOp::Sum ? MPI_SUM : MPI_MAX, comm_));
  return out;
}

}  // namespace pb
