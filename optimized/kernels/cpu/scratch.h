/* A thread's scratch memory for the CPU kernels: n floats of a growing vector, starting on a
 * 64-byte boundary (one cache line; a zmm register's width).
 * The alignment matters for speed (the SGEMM's aligned panel loads) and for bits: Eigen's
 * element-wise exp takes the elements before its first aligned packet through the scalar
 * std::exp, so scratch at thread-dependent offsets would give thread-dependent results. */
#pragma once

#include <cstdint>
#include <vector>

namespace pb::cpu {

inline float* aligned64(std::vector<float>& v, int64_t n) {
  constexpr size_t kAlign = 64 / sizeof(float);
  if (v.size() < size_t(n) + kAlign) v.resize(size_t(n) + kAlign);
  const auto addr = reinterpret_cast<uintptr_t>(v.data());
  return v.data() + (kAlign - (addr / sizeof(float)) % kAlign) % kAlign;
}

}  // namespace pb::cpu
