/* Swap attention (see swap_attention.h). */
#include "optimized/memory/swap_attention.h"

#include <string>

#include "optimized/comm/ledger.h"
#include "optimized/kernels/ops.h"
#include "reference/common/error.h"

namespace pb {

SwapAttention::SwapAttention(Device dev) : dev_(dev), side_(Stream::create(dev)) {}

SwapAttention::Swap& SwapAttention::of(const SavedState& s, const char* what) {
  const auto it = swaps_.find({s.layer, s.mb});
  PB_REQUIRE(it != swaps_.end(), "swap attention: ", what, " of layer ", s.layer, " micro-batch ", s.mb,
             " without its attention's swap");
  return it->second;
}

int64_t SwapAttention::host_bytes_of(const Swap& sw) {
  int64_t n = 0;
  for (const auto& slot : sw.slots) n += int64_t(slot.host.bytes());
  return n;
}

int64_t SwapAttention::host_bytes() const {
  int64_t n = 0;
  for (const auto& [key, sw] : swaps_)
    for (const auto& slot : sw.slots) n += slot.host.defined() ? int64_t(slot.host.bytes()) : 0;
  return n;
}

void SwapAttention::after_forward(SavedState& s) {
  if (s.checkpointed) return;  // dropped and recomputed instead (model/recompute.h)
  const std::string block = s.block();
  if (block == "attention") {
    auto [it, fresh] = swaps_.try_emplace({s.layer, s.mb});
    PB_REQUIRE(fresh, "swap attention: layer ", s.layer, " micro-batch ", s.mb, " is already swapped out");
    Swap& sw = it->second;
    Event ready(dev_);
    ready.record();  // the forward's work that wrote the tensors
    side_.wait(ready);
    for (Tensor* t : s.tensors()) {
      if (!t->defined()) continue;
      Slot* same = nullptr;  // one storage, one copy
      for (auto& slot : sw.slots)
        if (slot.where.front()->raw() == t->raw() && slot.where.front()->bytes() == t->bytes()) same = &slot;
      if (same) {
        same->where.push_back(t);
        continue;
      }
      Slot slot{{t}, Tensor::empty(t->shape(), MemCategory::Host, t->dtype(), Device::CPU), {}};
      ops::transfer(slot.host, *t, side_);
      t->record_stream(side_);
      out_ += int64_t(t->bytes());
      sw.slots.push_back(std::move(slot));
    }
    sw.out = Event(dev_);
    sw.out.record(side_);
    CommLedger::get().record("host", CommOp::ToHost, 2, host_bytes_of(sw));  // one batch per layer
  } else if (block == "mlp") {  // the layer's forward is done: its attention state leaves the device
    Swap& sw = of(s, "the MLP forward");
    sw.out.synchronize();
    for (auto& slot : sw.slots)
      for (Tensor* t : slot.where) *t = slot.host;
    sw.released = true;
  }
}

void SwapAttention::before_backward(SavedState& s) {
  if (s.checkpointed) return;
  const std::string block = s.block();
  if (block == "mlp") {  // the layer's backward begins: prefetch its attention state
    Swap& sw = of(s, "the MLP backward");
    PB_REQUIRE(sw.released && !sw.prefetched, "swap attention: layer ", s.layer, " prefetched twice");
    for (auto& slot : sw.slots) {
      slot.back = Tensor::empty(slot.host.shape(), MemCategory::Activations, slot.host.dtype(), dev_);
      ops::transfer(slot.back, slot.host, side_);
      slot.back.record_stream(side_);
      in_ += int64_t(slot.host.bytes());
    }
    sw.in = Event(dev_);
    sw.in.record(side_);
    CommLedger::get().record("host", CommOp::ToDevice, 2, host_bytes_of(sw));
    sw.prefetched = true;
  } else if (block == "attention") {  // wait for the prefetch; the host copies go
    Swap& sw = of(s, "the attention backward");
    PB_REQUIRE(sw.prefetched, "swap attention: layer ", s.layer, " backward before its prefetch");
    current_stream(dev_).wait(sw.in);
    sw.in.synchronize();
    for (auto& slot : sw.slots)
      for (Tensor* t : slot.where) *t = slot.back;
    swaps_.erase({s.layer, s.mb});
  }
}

}  // namespace pb
