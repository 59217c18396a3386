/* The all-to-all token dispatcher (see ep_alltoall.h). */
#include "optimized/parallel/ep_alltoall.h"

#include "optimized/core/device.h"
#include "optimized/kernels/ops.h"
#include "reference/common/error.h"

namespace pb {

namespace {

struct A2AState final : TokenDispatcher::State {
  int64_t T = 0, K = 0, S = 0, R = 0;
  IndexTensor perm;                          // (S) token of each sent copy, in send order
  IndexTensor slots;                         // (T*K) send row of each copy, -1 when dropped
  IndexTensor sort, unsort;                  // (R) received order <-> expert order
  std::vector<int64_t> send_rows, recv_rows;  // per EP rank
};

}  // namespace

std::unique_ptr<TokenDispatcher::State> AllToAllDispatcher::dispatch(Tensor& x, Tensor& p,
                                                                     std::vector<int64_t>& sizes, const Tensor& m,
                                                                     const Tensor& w, const RoutingPlan& plan,
                                                                     RoutingRecord& rec) {
  const int n = ep_.size();
  const int64_t T = plan.T, K = plan.K, E = plan.E, El = E / n, H = m.dim(1);
  auto st = std::make_unique<A2AState>();
  st->T = T, st->K = K;
  // Permutation: the kept copies by expert (so by destination rank), then token, then k.
  std::vector<int64_t> perm, copy, slots(size_t(T * K), -1);
  std::vector<std::vector<int64_t>> of(static_cast<size_t>(E));  // kept copies per expert, in (t, k) order
  for (int64_t c = 0; c < T * K; ++c)
    if (plan.kept[size_t(c)]) of[size_t(plan.idx[size_t(c)])].push_back(c);
  for (const auto& copies : of)
    for (const int64_t c : copies) {
      slots[size_t(c)] = int64_t(perm.size());
      perm.push_back(c / K);
      copy.push_back(c);
    }
  st->S = int64_t(perm.size());
  st->send_rows.assign(size_t(n), 0);
  std::vector<float> counts(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) {
    st->send_rows[size_t(e / El)] += plan.kept_count[size_t(e)];
    counts[size_t(e)] = float(plan.kept_count[size_t(e)]);
  }
  rec.sent = plan.kept_count;
  // The counts: row j (the counts of rank j's experts) to rank j.
  Tensor send_counts = tensor_of(counts, {n, El}, MemCategory::CommBuffers);
  Tensor recv_counts = comm_buffer(n, El, DType::F32);
  ep_.all_to_all(recv_counts, send_counts);
  const std::vector<float> rc = host_floats(recv_counts);  // (n, El): from rank s, for local expert l
  rec.recv.assign(rc.size(), 0);
  st->recv_rows.assign(size_t(n), 0);
  sizes.assign(size_t(El), 0);
  for (int s = 0; s < n; ++s)
    for (int64_t l = 0; l < El; ++l) {
      const int64_t c = int64_t(rc[size_t(s * El + l)]);
      rec.recv[size_t(s * El + l)] = c;
      st->recv_rows[size_t(s)] += c;
      sizes[size_t(l)] += c;
      st->R += c;
    }
  // Received rows come by source rank, then expert; the experts want them by expert, then source.
  std::vector<int64_t> sort, unsort(size_t(st->R));
  for (int64_t l = 0; l < El; ++l) {
    int64_t base = 0;  // first received row of source s
    for (int s = 0; s < n; ++s) {
      int64_t off = base;
      for (int64_t j = 0; j < l; ++j) off += int64_t(rc[size_t(s * El + j)]);
      for (int64_t i = 0; i < int64_t(rc[size_t(s * El + l)]); ++i) sort.push_back(off + i);
      base += st->recv_rows[size_t(s)];
    }
  }
  for (size_t i = 0; i < sort.size(); ++i) unsort[size_t(sort[i])] = int64_t(i);
  st->perm = IndexTensor(perm);
  st->slots = IndexTensor(slots);
  st->sort = IndexTensor(sort);
  st->unsort = IndexTensor(unsort);
  const IndexTensor copies(copy);
  {
    Tensor xs = comm_buffer(st->S, H, m.dtype()), ps = comm_buffer(st->S, 1, DType::F32);  // (S, H), (S, 1)
    ops::gather_rows(xs, m, st->perm);
    ops::gather_rows(ps, w.view(0, {T * K, 1}), copies);
    Tensor xr = comm_buffer(st->R, H, m.dtype()), pr = comm_buffer(st->R, 1, DType::F32);  // (R, H), (R, 1)
    ep_.all_to_all_v(xr, st->recv_rows, xs, st->send_rows);
    ep_.all_to_all_v(pr, st->recv_rows, ps, st->send_rows);
    x = Tensor::empty({st->R, H}, MemCategory::Activations, m.dtype());
    p = Tensor::empty({st->R, 1}, MemCategory::Activations, DType::F32);
    ops::gather_rows(x, xr, st->sort);
    ops::gather_rows(p, pr, st->sort);
  }
  return st;
}

void AllToAllDispatcher::combine(Tensor& f, const Tensor& y, State& state) {
  auto& st = static_cast<A2AState&>(state);
  const int64_t H = y.dim(1);
  Tensor yr = comm_buffer(st.R, H, y.dtype());  // (R, H) by source again
  ops::gather_rows(yr, y, st.unsort);
  Tensor ys = comm_buffer(st.S, H, y.dtype());  // (S, H) in send order
  ep_.all_to_all_v(ys, st.send_rows, yr, st.recv_rows);
  ops::sum_rows(f, ys, st.slots, st.K);
}

void AllToAllDispatcher::combine_backward(Tensor& dy, const Tensor& df, State& state) {
  auto& st = static_cast<A2AState&>(state);
  const int64_t H = df.dim(1);
  Tensor dys = comm_buffer(st.S, H, df.dtype());  // (S, H) each copy its token's gradient
  ops::gather_rows(dys, df, st.perm);
  Tensor dyr = comm_buffer(st.R, H, df.dtype());
  ep_.all_to_all_v(dyr, st.recv_rows, dys, st.send_rows);
  ops::gather_rows(dy, dyr, st.sort);
}

void AllToAllDispatcher::dispatch_backward(Tensor& dm, Tensor& dw, const Tensor& dx, const Tensor& dp, State& state) {
  auto& st = static_cast<A2AState&>(state);
  const int64_t H = dx.dim(1);
  Tensor dxs = comm_buffer(st.S, H, dx.dtype()), dps = comm_buffer(st.S, 1, DType::F32);
  {
    Tensor dxr = comm_buffer(st.R, H, dx.dtype()), dpr = comm_buffer(st.R, 1, DType::F32);
    ops::gather_rows(dxr, dx, st.unsort);
    ops::gather_rows(dpr, dp, st.unsort);
    ep_.all_to_all_v(dxs, st.send_rows, dxr, st.recv_rows);
    ep_.all_to_all_v(dps, st.send_rows, dpr, st.recv_rows);
  }
  ops::sum_rows(dm, dxs, st.slots, st.K);
  Tensor dw_rows = dw.view(0, {st.T * st.K, 1});
  ops::sum_rows(dw_rows, dps, st.slots, 1);
}

BlockWorkspace ep_alltoall_comm_buffers(const Dims& d, int64_t S, int64_t R) {
  const int64_t rows = (d.e * d.H + Dims::fp) * (S + R);
  return {2 * Dims::fp * d.E + rows, rows};
}

void ep_alltoall_terms(const Dims& d, const std::vector<RoutingRecord>& records, Terms& t) {
  for (const auto& r : records) {
    const int64_t S = r.sent_total(), R = r.recv_total();
    t.call("ep", CommOp::AllToAll, Phase::Forward, 1, Dims::fp * d.E, d.ep);
    t.call("ep", CommOp::AllToAll, Phase::Forward, 1, d.e * S * d.H, d.ep);
    t.call("ep", CommOp::AllToAll, Phase::Forward, 1, Dims::fp * S, d.ep);
    t.call("ep", CommOp::AllToAll, Phase::Forward, 1, d.e * R * d.H, d.ep);
    t.call("ep", CommOp::AllToAll, Phase::Backward, 1, d.e * S * d.H, d.ep);
    t.call("ep", CommOp::AllToAll, Phase::Backward, 1, d.e * R * d.H, d.ep);
    t.call("ep", CommOp::AllToAll, Phase::Backward, 1, Dims::fp * R, d.ep);
  }
}

}  // namespace pb
