/* Index tensors: a list of int64 indices (token ids, positions, labels) with a host copy
 * and, on CUDA, a device copy uploaded once: the values go into pinned host memory and
 * are copied asynchronously on a stream (no host synchronization), so an index list that
 * several ops read (RoPE positions: four ops per layer) is uploaded once per model, not
 * once per op from pageable memory.
 *
 *   host()              the values (n), for the CPU kernels and host-side planning
 *   device_data(s)      the values on the GPU for work on stream s: a stream other than the
 *                       upload's first waits for the upload's event, and the device block is
 *                       recorded as used by s (Tensor::record_stream)
 *
 * Copies share the values (a handle). The device copy is tracked as Workspace memory.
 */
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "optimized/core/stream.h"
#include "optimized/core/tensor.h"

namespace pb {

class IndexTensor {
 public:
  IndexTensor() = default;
  // On `dev` (by default the default device); a CUDA upload is queued on `stream`.
  explicit IndexTensor(std::vector<int64_t> values, Device dev = current_device(), const Stream& stream = {});

  bool defined() const { return bool(impl_); }
  int64_t size() const;
  Device device() const;
  const std::vector<int64_t>& host() const;
  // The device copy (CUDA index tensors), usable by work queued on `stream` after this call.
  const int64_t* device_data(const Stream& stream = {}) const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace pb
