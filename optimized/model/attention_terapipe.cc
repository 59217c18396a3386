/* TeraPipe's attention core and its K/V cache (see attention_terapipe.h). */
#include "optimized/model/attention_terapipe.h"

#include "optimized/model/block.h"
#include "reference/common/error.h"

namespace pb {

TeraPipeKV::TeraPipeKV(int64_t B_, int64_t S_, int64_t K, int64_t gD_, DType dtype)
    : B(B_), S(S_), s(S_ / K), gD(gD_), K_(K), dtype_(dtype) {
  PB_REQUIRE(K >= 1 && S % K == 0, "terapipe: ", K, " slices do not divide the sequence of ", S, " tokens");
}

void TeraPipeKV::begin_forward(int unit, const std::vector<int64_t>& layers) {
  if (unit % K_ != 0) return;
  auto& seq = seqs_[unit / int(K_)];
  PB_REQUIRE(seq.empty(), "terapipe: micro-batch ", unit / K_, " is already in flight");
  for (const int64_t l : layers) {
    Layer& L = seq[l];
    L.k = Tensor::empty({B * S, gD}, MemCategory::Activations, dtype_);
    L.v = Tensor::empty({B * S, gD}, MemCategory::Activations, dtype_);
  }
}

void TeraPipeKV::begin_backward(int unit, const std::vector<int64_t>& layers) {
  if (K_ == 1 || unit % K_ != K_ - 1) return;
  for (const int64_t l : layers) {
    Layer& L = at(unit, l);
    L.dk = Tensor::zeros({B * S, gD}, MemCategory::Activations, dtype_);
    L.dv = Tensor::zeros({B * S, gD}, MemCategory::Activations, dtype_);
  }
}

void TeraPipeKV::end_backward(int unit) {
  if (unit % K_ == 0) seqs_.erase(unit / int(K_));
}

TeraPipeKV::Layer& TeraPipeKV::at(int unit, int64_t layer) {
  const auto it = seqs_.find(unit / int(K_));
  PB_REQUIRE(it != seqs_.end() && it->second.count(layer), "terapipe: slice ", unit % K_, " of micro-batch ",
             unit / K_, " before the micro-batch's first slice (layer ", layer, ")");
  return it->second.at(layer);
}

namespace {
struct SliceSaved final : AttentionCore::Saved {
  Tensor q, o, lse;  // (N, Aq*D) the block's, (N, Aq*D), (B*Aq, s) fp32
  int unit = 0;
  std::vector<Tensor*> tensors() override { return {&q, &o, &lse}; }
};
}  // namespace

TeraPipeAttention::TeraPipeAttention(const BlockEnv& env, int64_t layer)
    : kv_(*env.terapipe), layer_(layer), Aq_(env.Aq), D_(env.D) {}

ops::AttnShape TeraPipeAttention::shape_of(int slice) const {
  ops::AttnShape sh{kv_.B, kv_.s, Aq_, kv_.gD / D_, D_, (slice + 1) * kv_.s};
  for (int64_t t = 0; t < kv_.s; ++t) sh.qpos.push_back(slice * kv_.s + t);  // keys: 0 .. (i+1)s-1
  return sh;
}

Tensor TeraPipeAttention::gather(const Tensor& cache, int slice) const {
  const int64_t n = (slice + 1) * kv_.s;
  Tensor g = Tensor::empty({kv_.B * n, kv_.gD}, MemCategory::Workspace, cache.dtype());
  for (int64_t b = 0; b < kv_.B; ++b) ops::copy_block(g, cache, n, kv_.gD, b * kv_.S, 0, b * n, 0);
  return g;
}

std::unique_ptr<AttentionCore::Saved> TeraPipeAttention::forward(Tensor& o, const Tensor& q, const Tensor& k,
                                                                 const Tensor& v, int mb) {
  const int i = int(mb % kv_.slices());
  TeraPipeKV::Layer& L = kv_.at(mb, layer_);
  const int64_t s = kv_.s;
  for (int64_t b = 0; b < kv_.B; ++b) {  // the slice's keys and values into the cache
    ops::copy_block(L.k, k, s, kv_.gD, b * s, 0, b * kv_.S + i * s, 0);
    ops::copy_block(L.v, v, s, kv_.gD, b * s, 0, b * kv_.S + i * s, 0);
  }
  auto sv = std::make_unique<SliceSaved>();
  o = Tensor::empty({q.rows(), q.cols()}, MemCategory::Activations, q.dtype());
  sv->lse = Tensor::empty({kv_.B * Aq_, s}, MemCategory::Activations, DType::F32);
  {
    const Tensor kg = gather(L.k, i), vg = gather(L.v, i);
    ops::attention_forward(o, sv->lse, q, kg, vg, shape_of(i));
  }
  sv->q = q, sv->o = o, sv->unit = mb;
  return sv;
}

void TeraPipeAttention::backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, Saved& saved) {
  auto& sv = static_cast<SliceSaved&>(saved);
  const int i = int(sv.unit % kv_.slices());
  TeraPipeKV::Layer& L = kv_.at(sv.unit, layer_);
  const int64_t s = kv_.s, n = (i + 1) * s;
  {
    const Tensor kg = gather(L.k, i), vg = gather(L.v, i);
    Tensor dkg = Tensor::empty({kv_.B * n, kv_.gD}, MemCategory::Workspace, kg.dtype());
    Tensor dvg = Tensor::empty({kv_.B * n, kv_.gD}, MemCategory::Workspace, vg.dtype());
    ops::attention_backward(dq, dkg, dvg, dout, sv.q, kg, vg, sv.o, sv.lse, shape_of(i));
    for (auto [d, dg, acc] : {std::tuple<Tensor*, Tensor*, Tensor*>{&dk, &dkg, &L.dk}, {&dv, &dvg, &L.dv}})
      for (int64_t b = 0; b < kv_.B; ++b) {
        ops::copy_block(*d, *dg, s, kv_.gD, b * n + i * s, 0, b * s, 0);  // the slice's own keys
        if (acc->defined()) {
          ops::copy_block(*d, *acc, s, kv_.gD, b * kv_.S + i * s, 0, b * s, 0, true);  // + the later slices'
          if (i > 0) ops::copy_block(*acc, *dg, i * s, kv_.gD, b * n, 0, b * kv_.S, 0, true);  // for the earlier
        }
      }
  }
  sv = SliceSaved{};
}

int64_t terapipe_cache_bytes(const Dims& d) { return 2 * d.e * d.B * d.S * d.slices * d.g * d.D; }

BlockWorkspace terapipe_workspace(const Dims& d) {
  const int64_t kv = 2 * d.e * d.B * (d.slice + 1) * d.S * d.g * d.D;
  return {kv, 2 * kv};
}

}  // namespace pb
