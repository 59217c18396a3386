/* The ring attention core (see attention_ring.h). */
#include "optimized/model/attention_ring.h"

#include "optimized/parallel/cp_ring.h"

namespace pb {

namespace {
struct RingSaved final : AttentionCore::Saved {
  Tensor q, k, v, o, lse;  // (N, Aq*D), (N, Gk*D) x 2, (N, Aq*D), (B*2*Aq, m) fp32
  std::vector<Tensor*> tensors() override { return {&q, &k, &v, &o, &lse}; }
};
Tensor comm_buffer(const Tensor& like) { return Tensor::empty({like.rows(), like.cols()}, MemCategory::CommBuffers, like.dtype()); }

// The K, V held at each step: this rank's own at step 0, then what the hop of the step
// before brought. Double-buffered: the next block travels while the step computes.
class KvCirculation {
 public:
  KvCirculation(Communicator& cp, const Tensor& k, const Tensor& v) : cp_(cp), k_(&k), v_(&v) {}
  const Tensor& k() const { return *k_; }
  const Tensor& v() const { return *v_; }
  // Step i begins: the K, V held go on to rank r+1 while the next arrive from r-1.
  void send_on(int i) {
    if (i + 1 >= cp_.size()) return;
    Tensor* n = buf_[(i + 1) % 2];
    n[0] = comm_buffer(*k_), n[1] = comm_buffer(*v_);
    hop_ = std::make_unique<RingHop>(cp_, std::vector<const Tensor*>{k_, v_}, std::vector<Tensor*>{&n[0], &n[1]});
  }
  void wait() {
    if (hop_) hop_->wait();
    hop_.reset();
  }
  // Step i ends: its received K, V are freed, the next ones held.
  void advance(int i) {
    if (i > 0) buf_[i % 2][0] = Tensor(), buf_[i % 2][1] = Tensor();
    if (i + 1 < cp_.size()) k_ = &buf_[(i + 1) % 2][0], v_ = &buf_[(i + 1) % 2][1];
  }

 private:
  Communicator& cp_;
  const Tensor *k_, *v_;
  Tensor buf_[2][2];  // received K, V: this step's and the next
  std::unique_ptr<RingHop> hop_;
};
}  // namespace

RingAttention::RingAttention(const BlockEnv& env, Communicator& cp, bool contiguous)
    : RingAttention(cp, env.B, env.N / env.B / 2, env.Aq, env.Gk, env.D, env.dtype, contiguous) {}

RingAttention::RingAttention(Communicator& ring, int64_t B, int64_t m, int64_t A, int64_t G, int64_t D, DType dtype,
                             bool contiguous)
    : cp_(ring), contiguous_(contiguous), B_(B), m_(m), A_(A), G_(G), D_(D), dtype_(dtype) {}

std::vector<RingAttention::Call> RingAttention::calls(int owner) const {
  const int c = cp_.size();
  const auto qc = cp_chunks(c, cp_.rank(), contiguous_), kc = cp_chunks(c, owner, contiguous_);
  auto positions = [&](int64_t chunk) {
    std::vector<int64_t> p(static_cast<size_t>(m_));
    for (int64_t i = 0; i < m_; ++i) p[size_t(i)] = chunk * m_ + i;
    return p;
  };
  std::vector<Call> out;
  for (int h = 0; h < 2; ++h) {
    const bool lo = kc[0] <= qc[size_t(h)], hi = kc[1] <= qc[size_t(h)];  // key chunk not after the query chunk
    if (!lo && !hi) continue;
    Call call{h, lo ? 0 : m_, (lo && hi) ? 2 * m_ : m_, positions(qc[size_t(h)]), {}, 0};
    for (int g = 0; g < 2; ++g)
      if (g == 0 ? lo : hi) {
        const auto p = positions(kc[size_t(g)]);
        call.kpos.insert(call.kpos.end(), p.begin(), p.end());
      }
    for (const int64_t qp : call.qpos)
      for (const int64_t kp : call.kpos) call.pairs += kp <= qp;
    out.push_back(std::move(call));
  }
  return out;
}

std::unique_ptr<AttentionCore::Saved> RingAttention::forward(Tensor& o, const Tensor& q, const Tensor& k,
                                                             const Tensor& v, int) {
  auto s = std::make_unique<RingSaved>();
  const int c = cp_.size(), r = cp_.rank();
  o = Tensor::empty({q.rows(), q.cols()}, MemCategory::Activations, dtype_);
  s->lse = Tensor::empty({B_ * 2 * A_, m_}, MemCategory::Activations, DType::F32);
  Tensor ob = Tensor::empty({m_, A_ * D_}, MemCategory::Workspace, dtype_);  // one call's o and LSE
  Tensor lb = Tensor::empty({A_, m_}, MemCategory::Workspace, DType::F32);
  KvCirculation kv(cp_, k, v);
  for (int i = 0; i < c; ++i) {
    kv.send_on(i);
    for (const Call& call : calls((r - i + c) % c)) {
      for (int64_t b = 0; b < B_; ++b) {
        const int64_t row = b * 2 * m_ + call.h * m_;
        const ops::AttnShape sh{1, m_, A_, G_, D_, call.Sk, call.qpos, call.kpos};
        Tensor ov = o.slice_rows(row, m_), lv = s->lse.slice_rows((2 * b + call.h) * A_, A_);
        const Tensor qv = q.slice_rows(row, m_), kb = kv.k().slice_rows(b * 2 * m_ + call.k0, call.Sk),
                     vb = kv.v().slice_rows(b * 2 * m_ + call.k0, call.Sk);
        if (i == 0) {  // the diagonal step: every query chunk sees itself, the first result
          ops::attention_forward(ov, lv, qv, kb, vb, sh);
        } else {
          ops::attention_forward(ob, lb, qv, kb, vb, sh);
          ops::attention_merge(ov, lv, ob, lb, 1, A_, D_);
        }
      }
      add_cp_attention_pairs(call.pairs * A_ * B_);
    }
    kv.wait();
    kv.advance(i);
  }
  s->q = q, s->k = k, s->v = v, s->o = o;
  return s;
}

void RingAttention::backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, Saved& saved) {
  auto& s = static_cast<RingSaved&>(saved);
  const int c = cp_.size(), r = cp_.rank();
  const int64_t N = s.q.rows();
  Tensor dq_acc = Tensor::zeros({N, A_ * D_}, MemCategory::Workspace, DType::F32);
  Tensor dqb = Tensor::empty({m_, A_ * D_}, MemCategory::Workspace, DType::F32);  // one call's gradients
  Tensor dkb = Tensor::empty({2 * m_, G_ * D_}, MemCategory::Workspace, DType::F32);
  Tensor dvb = Tensor::empty({2 * m_, G_ * D_}, MemCategory::Workspace, DType::F32);
  KvCirculation kv(cp_, s.k, s.v);
  Tensor acc[2][2];  // the dK, dV accumulators (fp32) of the K, V held, and the next ones
  acc[0][0] = Tensor::zeros({N, G_ * D_}, MemCategory::CommBuffers, DType::F32);
  acc[0][1] = Tensor::zeros({N, G_ * D_}, MemCategory::CommBuffers, DType::F32);
  for (int i = 0; i < c; ++i) {
    kv.send_on(i);
    Tensor* a = acc[i % 2];
    for (const Call& call : calls((r - i + c) % c)) {
      for (int64_t b = 0; b < B_; ++b) {
        const int64_t row = b * 2 * m_ + call.h * m_, krow = b * 2 * m_ + call.k0;
        const ops::AttnShape sh{1, m_, A_, G_, D_, call.Sk, call.qpos, call.kpos};
        Tensor dkv = dkb.slice_rows(0, call.Sk), dvv = dvb.slice_rows(0, call.Sk);
        ops::attention_backward(dqb, dkv, dvv, dout.slice_rows(row, m_), s.q.slice_rows(row, m_),
                                kv.k().slice_rows(krow, call.Sk), kv.v().slice_rows(krow, call.Sk), s.o.slice_rows(row, m_),
                                s.lse.slice_rows((2 * b + call.h) * A_, A_), sh);
        Tensor dqa = dq_acc.slice_rows(row, m_), ak = a[0].slice_rows(krow, call.Sk), av = a[1].slice_rows(krow, call.Sk);
        ops::add_(dqa, dqb);
        ops::add_(ak, dkv);
        ops::add_(av, dvv);
      }
      add_cp_attention_pairs(call.pairs * A_ * B_);
    }
    kv.wait();
    // The accumulators go on with their K, V (after the last step: home to their owner).
    Tensor* next = acc[(i + 1) % 2];
    next[0] = Tensor::empty({N, G_ * D_}, MemCategory::CommBuffers, DType::F32);
    next[1] = Tensor::empty({N, G_ * D_}, MemCategory::CommBuffers, DType::F32);
    RingHop(cp_, {&a[0], &a[1]}, {&next[0], &next[1]}, 2).wait();
    a[0] = Tensor(), a[1] = Tensor();
    kv.advance(i);
  }
  // acc[c % 2]: this rank's own dK, dV, every rank's contribution summed.
  ops::cast(dq, dq_acc);
  ops::cast(dk, acc[c % 2][0]);
  ops::cast(dv, acc[c % 2][1]);
  s = RingSaved{};
}

BlockWorkspace ring_attention_workspace(const Dims& d) {
  const int64_t m = d.N / (2 * d.B);
  return {d.e * m * d.a * d.D + Dims::fp * d.a * m,
          Dims::fp * (d.N * d.a * d.D + m * d.a * d.D + 2 * 2 * m * d.g * d.D)};
}

BlockWorkspace ring_attention_comm_buffers(const Dims& d) {
  const int64_t x = d.e * d.N * d.g * d.D, kv = (d.c > 2 ? 4 : 2) * x, acc = 2 * Dims::fp * d.N * 2 * d.g * d.D;
  return {kv, kv + acc};
}

}  // namespace pb
