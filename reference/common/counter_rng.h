/* Counter-based random numbers: every value is a pure function of
 * (seed, stream name, element index).
 *
 * DESIGN.md: initialization must let any rank generate its own shard of a global tensor
 * without communication, and the reference the whole tensor, with identical bits. A
 * counter-based generator gives that by construction (Salmon et al., "Parallel random
 * numbers: as easy as 1, 2, 3", SC'11). We use the splitmix64 finalizer (Steele, Lea,
 * Flood, "Fast splittable pseudorandom number generators", OOPSLA'14) as the mixing
 * function: key = splitmix(seed ^ fnv1a(name)), value_i = splitmix(key + i * golden).
 */
#pragma once

#include <cmath>
#include <cstdint>
#include <string_view>

namespace pb {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// FNV-1a over the bytes of a name: a stable 64-bit id for a stream.
inline uint64_t fnv1a(std::string_view s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001B3ull;
  }
  return h;
}

class CounterRng {
 public:
  CounterRng(uint64_t seed, std::string_view stream) : key_(splitmix64(seed ^ fnv1a(stream))) {}

  // Raw 64 random bits for counter i.
  uint64_t bits(uint64_t i) const { return splitmix64(key_ ^ splitmix64(i)); }

  // Uniform in [0, 1) with 53 random bits.
  double uniform(uint64_t i) const { return double(bits(i) >> 11) * 0x1.0p-53; }

  // Standard normal for element i (Box-Muller on the two counters 2i and 2i+1; the
  // first uniform is moved to (0, 1] so the log is finite).
  double normal(uint64_t i) const {
    const double u1 = 1.0 - uniform(2 * i);
    const double u2 = uniform(2 * i + 1);
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586476925 * u2);
  }

  // Uniform integer in [0, n) (n > 0; the modulo bias is below 2^-40 for n < 2^24).
  uint64_t below(uint64_t i, uint64_t n) const { return bits(i) % n; }

 private:
  uint64_t key_;
};

}  // namespace pb
