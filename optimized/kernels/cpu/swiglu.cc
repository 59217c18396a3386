/* CPU SwiGLU (Shazeer, "GLU Variants Improve Transformer", arXiv 2002.05202) on this
 * rank's F/TP columns, element-wise on the tensors' memory, in fixed blocks on the kernel
 * threads, vectorized through Eigen's packet exp:
 *   s = sigmoid(a) = 1 / (1 + exp(-a))
 *   forward   y = a s u
 *   backward  da = dy u s (1 + a (1 - s)),   du = dy a s
 *   gate a, up u, y, dy, da, du (N, F)
 * Eigen's vectorized exp is not bitwise the scalar std::exp of the reference
 * (reference/ops/swiglu.h): the results agree within the fp32 rule. */
#include "optimized/kernels/cpu/cpu_kernels.h"
#include "optimized/kernels/cpu/parallel.h"
#include "reference/common/error.h"

namespace pb::cpu {

namespace {
using Arr = Eigen::Map<Eigen::ArrayXf>;
using CArr = Eigen::Map<const Eigen::ArrayXf>;
constexpr int64_t kGrain = 16384;  // elements per block
}  // namespace

void swiglu_forward(Tensor& y, const Tensor& gate, const Tensor& up, const Stream&) {
  PB_REQUIRE(up.numel() == gate.numel() && y.numel() == gate.numel(), "swiglu_forward: gate ", gate.shape_str(),
             ", up ", up.shape_str(), ", y ", y.shape_str());
  parallel_blocks(gate.numel(), kGrain, [&](int64_t b, int64_t e) {
    const CArr a(gate.f32() + b, e - b), u(up.f32() + b, e - b);
    Arr(y.f32() + b, e - b) = a / (1.0f + (-a).exp()) * u;
  });
}

void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dy, const Tensor& gate, const Tensor& up,
                     const Stream&) {
  const int64_t n = gate.numel();
  PB_REQUIRE(up.numel() == n && dy.numel() == n && dgate.numel() == n && dup.numel() == n, "swiglu_backward: gate ",
             gate.shape_str(), ", up ", up.shape_str(), ", dy ", dy.shape_str());
  parallel_blocks(n, kGrain, [&](int64_t b, int64_t e) {
    const CArr a(gate.f32() + b, e - b), u(up.f32() + b, e - b), d(dy.f32() + b, e - b);
    Arr da(dgate.f32() + b, e - b), du(dup.f32() + b, e - b);
    const Eigen::ArrayXf s = 1.0f / (1.0f + (-a).exp());  // the block's sigmoid, once
    da = d * u * s * (1.0f + a * (1.0f - s));
    du = d * a * s;
  });
}

}  // namespace pb::cpu
