/* CUDA vocab-parallel embedding. Forward: one block per token row copies the owned row
 * (or zeros). Backward: the host (which holds the tokens) groups token rows by owned
 * vocabulary row (CSR: rows, offsets, indices in token order); one block per present row
 * sums its dy rows in that order — no atomics, deterministic, O(N H) work. The tokens
 * (forward) and the plan (backward) are uploaded asynchronously on the op's stream;
 * an IndexTensor's tokens are uploaded once, for every op that reads them.
 * The table and y are fp32 or bf16 (one dtype; a bf16 row is copied exactly); dy is fp32
 * or bf16 (read as fp32) and the accumulated dtable is an fp32 main grad. */
#include "optimized/kernels/cuda/common.cuh"
#include "optimized/kernels/cuda/cuda_kernels.h"
#include "optimized/kernels/shape_checks.h"
#include "reference/common/error.h"

namespace pb::cuda {

namespace {

template <class T>
__global__ void embedding_fwd_kernel(T* y, const int64_t* tok, const T* table, int64_t V, int64_t H,
                                     int64_t vocab_start) {
  const int64_t t = blockIdx.x, r = tok[t] - vocab_start;
  for (int64_t j = threadIdx.x; j < H; j += blockDim.x)
    y[t * H + j] = (r >= 0 && r < V) ? table[r * H + j] : from_float<T>(0.0f);
}

// Block b: dtable[rows[b]] += sum_{k in [off[b], off[b+1])} dy[idx[k]].
template <class T>
__global__ void embedding_bwd_kernel(float* dtable, const T* dy, const int64_t* rows, const int64_t* off,
                                     const int64_t* idx, int64_t H) {
  const int64_t b = blockIdx.x, v = rows[b];
  for (int64_t j = threadIdx.x; j < H; j += blockDim.x) {
    float acc = 0;
    for (int64_t k = off[b]; k < off[b + 1]; ++k) acc += to_float(dy[idx[k] * H + j]);
    dtable[v * H + j] += acc;
  }
}

}  // namespace

namespace {

template <class Index>
void forward(Tensor& y, const Index& tok, const Tensor& table, int64_t vocab_start, const Stream& stream) {
  const int64_t H = table.cols(), n = int64_t(tok.size());
  PB_REQUIRE(y.rows() == n && y.cols() == H, "embedding_forward: y ", y.shape_str());
  if (!n) return;
  const IndexTensor d = on_device(tok, stream);
  const cudaStream_t s = cu(stream);
  if (table.dtype() == DType::BF16)
    embedding_fwd_kernel<bf16><<<unsigned(n), kThreads, 0, s>>>(ptr<bf16>(y), d.device_data(stream), ptr<bf16>(table),
                                                                table.rows(), H, vocab_start);
  else
    embedding_fwd_kernel<float><<<unsigned(n), kThreads, 0, s>>>(ptr<float>(y), d.device_data(stream),
                                                                 ptr<float>(table), table.rows(), H, vocab_start);
  CUDA_CHECK_LAUNCH();
}

// The backward's plan on the host, from the host tokens: [rows | offsets | indices], one
// upload on the op's stream.
void backward(Tensor& dtable, const Tensor& dy, const std::vector<int64_t>& tok, int64_t vocab_start,
              const Stream& stream) {
  checks::embedding_backward_operands("embedding_backward (cuda)", dtable, dy, int64_t(tok.size()));
  const int64_t V = dtable.rows();
  std::vector<std::vector<int64_t>> by_row(static_cast<size_t>(V));
  for (size_t t = 0; t < tok.size(); ++t) {
    const int64_t r = tok[t] - vocab_start;
    if (r >= 0 && r < V) by_row[size_t(r)].push_back(int64_t(t));
  }
  std::vector<int64_t> rows, off{0}, idx;
  for (int64_t r = 0; r < V; ++r)
    if (!by_row[size_t(r)].empty()) {
      rows.push_back(r);
      idx.insert(idx.end(), by_row[size_t(r)].begin(), by_row[size_t(r)].end());
      off.push_back(int64_t(idx.size()));
    }
  if (rows.empty()) return;
  const size_t R = rows.size();
  std::vector<int64_t> plan(rows);
  plan.insert(plan.end(), off.begin(), off.end());
  plan.insert(plan.end(), idx.begin(), idx.end());
  const IndexTensor d = on_device(plan, stream);
  const int64_t* p = d.device_data(stream);
  const cudaStream_t s = cu(stream);
  if (dy.dtype() == DType::BF16)
    embedding_bwd_kernel<bf16><<<unsigned(R), kThreads, 0, s>>>(dtable.f32(), ptr<bf16>(dy), p, p + R, p + 2 * R + 1,
                                                                dtable.cols());
  else
    embedding_bwd_kernel<float><<<unsigned(R), kThreads, 0, s>>>(dtable.f32(), ptr<float>(dy), p, p + R,
                                                                 p + 2 * R + 1, dtable.cols());
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void embedding_forward(Tensor& y, const std::vector<int64_t>& tok, const Tensor& table, int64_t vocab_start,
                       const Stream& stream) {
  forward(y, tok, table, vocab_start, stream);
}

void embedding_forward(Tensor& y, const IndexTensor& tok, const Tensor& table, int64_t vocab_start,
                       const Stream& stream) {
  forward(y, tok, table, vocab_start, stream);
}

void embedding_backward(Tensor& dtable, const Tensor& dy, const std::vector<int64_t>& tok, int64_t vocab_start,
                        const Stream& stream) {
  backward(dtable, dy, tok, vocab_start, stream);
}

void embedding_backward(Tensor& dtable, const Tensor& dy, const IndexTensor& tok, int64_t vocab_start,
                        const Stream& stream) {
  backward(dtable, dy, tok.host(), vocab_start, stream);
}

}  // namespace pb::cuda
