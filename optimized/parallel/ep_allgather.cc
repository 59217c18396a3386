/* The all-gather token dispatcher (see ep_allgather.h). */
#include "optimized/parallel/ep_allgather.h"

#include <algorithm>

#include "optimized/kernels/ops.h"

namespace pb {

namespace {

struct AGState final : TokenDispatcher::State {
  int64_t T = 0, K = 0, n = 1, R = 0;
  IndexTensor sel;    // (R) gathered token row of each local row, in expert order
  IndexTensor slots;  // (nT*K) local row of each gathered copy, -1 if not served here or dropped
};

}  // namespace

std::unique_ptr<TokenDispatcher::State> AllGatherDispatcher::dispatch(Tensor& x, Tensor& p,
                                                                      std::vector<int64_t>& sizes, const Tensor& m,
                                                                      const Tensor& w, const RoutingPlan& plan,
                                                                      RoutingRecord& rec) {
  const int n = ep_.size(), me = ep_.rank();
  const int64_t T = plan.T, K = plan.K, E = plan.E, El = E / n, H = m.dim(1), nT = n * T;
  auto st = std::make_unique<AGState>();
  st->T = T, st->K = K, st->n = n;
  rec.sent = plan.kept_count;
  // The routing map: the expert of each copy, -1 where the capacity dropped it.
  std::vector<float> map(static_cast<size_t>(T * K));
  for (int64_t c = 0; c < T * K; ++c) map[size_t(c)] = plan.kept[size_t(c)] ? float(plan.idx[size_t(c)]) : -1.0f;
  const Tensor local_map = tensor_of(map, {T, K}, MemCategory::CommBuffers);
  Tensor map_all = comm_buffer(nT, K, DType::F32), w_all = comm_buffer(nT, K, DType::F32), m_all = comm_buffer(nT, H, m.dtype());
  ep_.all_gather(map_all, local_map);
  ep_.all_gather(w_all, w);
  ep_.all_gather(m_all, m);
  const std::vector<float> g = host_floats(map_all);  // (nT*K)
  // This rank's experts' copies: by expert, then gathered row (source rank, token), then k.
  std::vector<int64_t> sel, copy, slots(size_t(nT * K), -1);
  rec.recv.assign(size_t(n * El), 0);
  sizes.assign(size_t(El), 0);
  std::vector<std::vector<int64_t>> of(static_cast<size_t>(El));  // the local experts' copies, in gathered order
  for (int64_t c = 0; c < nT * K; ++c) {
    const int64_t l = int64_t(g[size_t(c)]) - me * El;  // -1 (dropped) falls outside too
    if (g[size_t(c)] >= 0 && l >= 0 && l < El) of[size_t(l)].push_back(c);
  }
  for (int64_t l = 0; l < El; ++l)
    for (const int64_t c : of[size_t(l)]) {
      slots[size_t(c)] = int64_t(sel.size());
      sel.push_back(c / K);
      copy.push_back(c);
      ++rec.recv[size_t(c / K / T * El + l)];
      ++sizes[size_t(l)];
    }
  st->R = int64_t(sel.size());
  st->sel = IndexTensor(sel);
  st->slots = IndexTensor(slots);
  x = Tensor::empty({st->R, H}, MemCategory::Activations, m.dtype());
  p = Tensor::empty({st->R, 1}, MemCategory::Activations, DType::F32);
  ops::gather_rows(x, m_all, st->sel);
  ops::gather_rows(p, w_all.view(0, {nT * K, 1}), IndexTensor(copy));
  return st;
}

void AllGatherDispatcher::combine(Tensor& f, const Tensor& y, State& state) {
  auto& st = static_cast<AGState&>(state);
  Tensor out = comm_buffer(st.n * st.T, y.dim(1), y.dtype());  // (nT, H): this rank's experts' share
  ops::sum_rows(out, y, st.slots, st.K);
  ep_.reduce_scatter(f, out);
}

void AllGatherDispatcher::combine_backward(Tensor& dy, const Tensor& df, State& state) {
  auto& st = static_cast<AGState&>(state);
  Tensor df_all = comm_buffer(st.n * st.T, df.dim(1), df.dtype());  // (nT, H)
  ep_.all_gather(df_all, df);
  ops::gather_rows(dy, df_all, st.sel);
}

void AllGatherDispatcher::dispatch_backward(Tensor& dm, Tensor& dw, const Tensor& dx, const Tensor& dp, State& state) {
  auto& st = static_cast<AGState&>(state);
  const int64_t nT = st.n * st.T;
  {
    Tensor dm_all = comm_buffer(nT, dx.dim(1), dx.dtype());  // (nT, H)
    ops::sum_rows(dm_all, dx, st.slots, st.K);
    ep_.reduce_scatter(dm, dm_all);
  }
  Tensor dw_all = comm_buffer(nT * st.K, 1, DType::F32);  // (nT*K, 1)
  ops::sum_rows(dw_all, dp, st.slots, 1);
  Tensor dw_rows = dw.view(0, {st.T * st.K, 1});
  ep_.reduce_scatter(dw_rows, dw_all);
}

BlockWorkspace ep_allgather_comm_buffers(const Dims& d) {
  const int64_t T = d.Ns, nT = d.ep * T;
  return {Dims::fp * T * d.K + 2 * Dims::fp * nT * d.K + d.e * nT * d.H,
          std::max(d.e * nT * d.H, Dims::fp * nT * d.K)};
}

void ep_allgather_terms(const Dims& d, const std::vector<RoutingRecord>& records, Terms& t) {
  const auto n = records.size();
  if (n == 0) return;
  const int64_t T = records.front().tokens, nT = d.ep * T, calls = int64_t(n);
  t.call("ep", CommOp::AllGather, Phase::Forward, 2 * calls, Dims::fp * nT * d.K, d.ep);
  t.call("ep", CommOp::AllGather, Phase::Forward, calls, d.e * nT * d.H, d.ep);
  t.call("ep", CommOp::ReduceScatter, Phase::Forward, calls, d.e * nT * d.H, d.ep);
  t.call("ep", CommOp::AllGather, Phase::Backward, calls, d.e * nT * d.H, d.ep);
  t.call("ep", CommOp::ReduceScatter, Phase::Backward, calls, d.e * nT * d.H, d.ep);
  t.call("ep", CommOp::ReduceScatter, Phase::Backward, calls, Dims::fp * nT * d.K, d.ep);
}

}  // namespace pb
