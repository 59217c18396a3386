/* Deterministic parameter initialization: a pure function of
 * (seed, parameter name, global element index).
 *
 *   matrices    : w[i] = initializer_range * N(0,1)[CounterRng(seed, name).normal(i)]
 *   norm weights: 1
 * i is the row-major index in the parameter's Hugging Face shape, so a rank that owns any
 * shard (rows r0..r1, columns c0..c1) evaluates init_value for just those indices and gets
 * the same bits as the reference's whole tensor (DESIGN.md, "Initialization").
 */
#pragma once

#include <string>

#include "reference/common/counter_rng.h"
#include "reference/model/params.h"

namespace pb::ref {

inline double init_value(uint64_t seed, const std::string& name, uint64_t index, bool is_norm, double stddev) {
  if (is_norm) return 1.0;
  return stddev * CounterRng(seed, name).normal(index);
}

template <class T>
ModelParams<T> init_params(const ModelConfig& c, uint64_t seed) {
  ModelParams<T> p = zero_params<T>(c);
  for_each_param(p, [&](const std::string& name, Mat<T>& m, bool is_vector) {
    for (Index i = 0; i < m.size(); ++i)
      m.data()[i] = T(init_value(seed, name, uint64_t(i), is_vector, c.initializer_range));
  });
  return p;
}

}  // namespace pb::ref
