/* The dispatchers' shared machinery (kernels/dispatch*.cc only; not a public header): the
 * PB_DISPATCH macros that send an op to the kernel of its device on its stream, and the
 * bf16 emulation helpers (emulate_bf16, up, Out). See dispatch.cc's header comment for the
 * stream rules and the "compute in fp32, store in bf16" semantics. */
#pragma once

#include <initializer_list>

#include "optimized/core/stream.h"
#include "optimized/kernels/cpu/cpu_kernels.h"
#include "optimized/kernels/ops.h"
#include "reference/common/error.h"

#ifdef PB_WITH_CUDA
#include "optimized/kernels/cuda/cuda_kernels.h"
#define PB_CUDA_CASE(fn, ...) return ::pb::cuda::fn(__VA_ARGS__)
#else
#define PB_CUDA_CASE(fn, ...) throw ::pb::Error("op " #fn ": this build has no CUDA backend")
#endif

// An op without a result on the current stream of `dev` (the op's stream: see dispatch.cc).
// The queued closure names no stream, so it holds no handle to its own worker.
#define PB_DISPATCH(dev, fn, ...)                                                              \
  do {                                                                                         \
    const ::pb::Stream pb_s_ = ::pb::current_stream(dev);                                      \
    switch (dev) {                                                                             \
      case ::pb::Device::CPU:                                                                  \
        if (pb_s_.runs_inline()) return ::pb::cpu::fn(__VA_ARGS__, pb_s_);                     \
        return pb_s_.enqueue([=]() mutable { ::pb::cpu::fn(__VA_ARGS__, ::pb::Stream{}); });  \
      case ::pb::Device::CUDA: PB_CUDA_CASE(fn, __VA_ARGS__, pb_s_);                           \
    }                                                                                          \
    throw ::pb::Error("op " #fn ": unknown device");                                           \
  } while (0)

// An op that returns a value to the host: after the stream's queued work, on this thread.
#define PB_DISPATCH_VALUE(dev, fn, ...)                                \
  do {                                                                 \
    const ::pb::Stream pb_s_ = ::pb::current_stream(dev);              \
    switch (dev) {                                                     \
      case ::pb::Device::CPU:                                          \
        pb_s_.synchronize();                                           \
        return ::pb::cpu::fn(__VA_ARGS__, pb_s_);                      \
      case ::pb::Device::CUDA: PB_CUDA_CASE(fn, __VA_ARGS__, pb_s_);   \
    }                                                                  \
    throw ::pb::Error("op " #fn ": unknown device");                   \
  } while (0)

namespace pb::ops {

// The bf16 emulation helpers (see dispatch.cc). Inline: one definition for every
// dispatch file that includes this header.
inline bool any_bf16(std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    if (t->dtype() == DType::BF16) return true;
  return false;
}

inline bool all_bf16(std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    if (t->dtype() != DType::BF16) return false;
  return true;
}

// The op must take the promote-and-round emulation: some of the operands ts are bf16, and
// they are not all bf16 CUDA operands that the CUDA kernel handles natively.
inline bool emulate_bf16(Device dev, std::initializer_list<const Tensor*> ts) {
  return any_bf16(ts) && !(dev == Device::CUDA && all_bf16(ts));
}

inline Tensor up(const Tensor& t) {
  if (t.dtype() == DType::F32) return t;
  Tensor f = Tensor::empty(t.shape(), MemCategory::Workspace, DType::F32, t.device());
  cast(f, t);
  return f;
}

// An fp32 stand-in for an output; written back to the bf16 tensor when it goes out of scope.
class Out {
 public:
  explicit Out(Tensor& dst)
      : dst_(dst), f_(dst.dtype() == DType::F32 ? dst : Tensor::empty(dst.shape(), MemCategory::Workspace, DType::F32, dst.device())) {}
  ~Out() {
    if (dst_.dtype() == DType::BF16) cast(dst_, f_);
  }
  Tensor& f() { return f_; }

 private:
  Tensor& dst_;
  Tensor f_;
};

// The op's stream as the current stream of its device, for the op's scope.
using OnStream = StreamScope;

}  // namespace pb::ops
