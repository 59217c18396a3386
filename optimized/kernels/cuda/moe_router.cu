/* CUDA MoE router (top-K softmax gating; Shazeer et al., arXiv 1701.06538; Fedus et al.,
 * "Switch Transformers", arXiv 2101.03961; as Megatron-LM's MoE TopKRouter; formulas in
 * reference/ops/moe_router.h and op_signatures.inc), fp32:
 *
 *   forward   probs (T, E) = softmax(logits (T, E)), the row max subtracted
 *             idx (T*K), w (T, K): the top-K of each row, best first, ties to the lower id;
 *             w divided by sum_k w_tk (fp32, k order) when renormalizing
 *             prob_sums (E) = sum_t probs_te, in double, t ascending (one thread per expert)
 *   backward  dp_t,idx_tk = (dw_tk - sum_j dw_tj w_tj) / sum_j p_t,idx_tj   (renormalized)
 *                         = dw_tk                                           (otherwise)
 *             dp_te += aux_grad_e;   dlogits_t = p_t * (dp_t - p_t . dp_t)
 *
 * One warp per row (E is small: tens to hundreds of experts); the top-K is K passes of a
 * warp argmax, each over the experts that come after the previous pick in the order
 * (probability descending, id ascending), so no selection mask is kept. The forward
 * returns idx and prob_sums on the host: it copies them from device scratch and
 * synchronizes the op's stream (the dispatcher plans on the host, as Megatron's .cpu()). */
#include <cstring>

#include "optimized/kernels/cuda/common.cuh"
#include "optimized/kernels/cuda/cuda_kernels.h"
#include "reference/common/error.h"

namespace pb::cuda {

namespace {

constexpr int kRowsPerBlock = kThreads / 32;  // one warp per row
static_assert(sizeof(int64_t) == sizeof(double), "int64 values in double-sized device slots");

// Expert a (probability pa) is ranked before expert b: higher probability, or the lower id
// on a tie.
__device__ __forceinline__ bool ranks_before(float pa, int ia, float pb, int ib) {
  return pa > pb || (pa == pb && ia < ib);
}

__global__ void router_fwd_kernel(float* probs, float* weights, int64_t* idx, const float* logits, int64_t T,
                                  int64_t E, int K, bool renormalize) {
  const int64_t t = blockIdx.x * int64_t(kRowsPerBlock) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (t >= T) return;  // the whole warp: t is per warp
  const float* z = logits + t * E;  // (E)
  float* p = probs + t * E;         // (E)
  float m = -INFINITY;
  for (int64_t e = lane; e < E; e += 32) m = fmaxf(m, z[e]);
  m = warp_max(m);
  float s = 0;
  for (int64_t e = lane; e < E; e += 32) {
    const float v = expf(z[e] - m);
    p[e] = v;
    s += v;
  }
  s = warp_sum(s);
  for (int64_t e = lane; e < E; e += 32) p[e] = p[e] / s;  // each lane rereads only its own entries
  // Top-K: pass k picks the best expert ranked after pass k-1's pick.
  float prev_p = INFINITY, sel = 0;
  int prev_i = -1;
  for (int k = 0; k < K; ++k) {
    float bp = -INFINITY;
    int bi = int(E);  // ranked after every expert
    for (int64_t e = lane; e < E; e += 32) {
      const float v = p[e];
      if (ranks_before(prev_p, prev_i, v, int(e)) && ranks_before(v, int(e), bp, bi)) {
        bp = v;
        bi = int(e);
      }
    }
    for (int o = 16; o > 0; o >>= 1) {  // butterfly: every lane ends with the warp's best
      const float op = __shfl_xor_sync(0xffffffffu, bp, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (ranks_before(op, oi, bp, bi)) {
        bp = op;
        bi = oi;
      }
    }
    if (lane == 0) {
      idx[t * K + k] = bi;
      weights[t * K + k] = bp;
    }
    sel += bp;
    prev_p = bp;
    prev_i = bi;
  }
  if (renormalize && lane == 0)
    for (int k = 0; k < K; ++k) weights[t * K + k] = weights[t * K + k] / sel;
}

// prob_sums_e = sum over t ascending of probs_te, in double: one thread per expert.
__global__ void prob_sums_kernel(double* sums, const float* probs, int64_t T, int64_t E) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < E; e += int64_t(gridDim.x) * blockDim.x) {
    double acc = 0;
    for (int64_t t = 0; t < T; ++t) acc += double(probs[t * E + e]);
    sums[e] = acc;
  }
}

__global__ void router_bwd_kernel(float* dlogits, const float* dweights, const float* probs, const float* weights,
                                  const int64_t* idx, const double* aux, int64_t T, int64_t E, int K,
                                  bool renormalize) {
  const int64_t t = blockIdx.x * int64_t(kRowsPerBlock) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (t >= T) return;
  const float* p = probs + t * E;        // (E)
  const float* dw = dweights + t * K;    // (K)
  const float* w = weights + t * K;      // (K)
  const int64_t* ix = idx + t * K;       // (K)
  float* dl = dlogits + t * E;           // (E): first dp, then dlogits
  float sel = 0, dot = 0;                // every lane, in k order
  for (int k = 0; k < K; ++k) {
    sel += p[ix[k]];
    dot += dw[k] * w[k];
  }
  float pdp = 0;
  for (int64_t e = lane; e < E; e += 32) {
    float d = 0;
    for (int k = 0; k < K; ++k)
      if (ix[k] == e) d += renormalize ? (dw[k] - dot) / sel : dw[k];
    if (aux) d += float(aux[e]);
    dl[e] = d;
    pdp += p[e] * d;
  }
  pdp = warp_sum(pdp);
  for (int64_t e = lane; e < E; e += 32) dl[e] = p[e] * (dl[e] - pdp);  // each lane its own entries
}

unsigned row_blocks(int64_t T) { return unsigned((T + kRowsPerBlock - 1) / kRowsPerBlock); }

}  // namespace

void moe_router_forward(Tensor& probs, Tensor& weights, std::vector<int64_t>& idx, std::vector<double>& prob_sums,
                        const Tensor& logits, int64_t K, bool renormalize, const Stream& stream) {
  const int64_t T = logits.rows(), E = logits.dim(1);  // (T, E), checked by the dispatch
  idx.assign(size_t(T * K), 0);
  prob_sums.assign(size_t(E), 0.0);
  if (!T) return;
  const cudaStream_t s = cu(stream);
  DeviceScratch d_idx(size_t(T * K), stream);  // int64 entries in double-sized slots
  DeviceScratch d_sums(size_t(E), stream);
  int64_t* di = reinterpret_cast<int64_t*>(d_idx.get());
  router_fwd_kernel<<<row_blocks(T), kThreads, 0, s>>>(ptr<float>(probs), ptr<float>(weights), di, ptr<float>(logits),
                                                      T, E, int(K), renormalize);
  CUDA_CHECK_LAUNCH();
  prob_sums_kernel<<<blocks_for(E), kThreads, 0, s>>>(d_sums.get(), ptr<float>(probs), T, E);
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cudaMemcpyAsync(idx.data(), di, size_t(T * K) * sizeof(int64_t), cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaMemcpyAsync(prob_sums.data(), d_sums.get(), size_t(E) * sizeof(double), cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
}

void moe_router_backward(Tensor& dlogits, const Tensor& dweights, const Tensor& probs, const Tensor& weights,
                         const IndexTensor& idx, const std::vector<double>& aux_grad, int64_t K, bool renormalize,
                         const Stream& stream) {
  const int64_t T = probs.rows(), E = probs.cols();
  if (!T) return;
  PB_REQUIRE(idx.size() == T * K && int64_t(aux_grad.size()) == E, "moe_router_backward: ", idx.size(),
             " indices and ", aux_grad.size(), " aux gradients for probs ", probs.shape_str(), " and K = ", K);
  const IndexTensor d_idx = on_device(idx, stream);
  // The aux constants travel as the bit patterns of their doubles in an index list: the
  // asynchronous pinned upload of IndexTensor, no host synchronization. None when all zero
  // (as the reference, which skips the term when the loss is off).
  bool any = false;
  for (double a : aux_grad) any = any || a != 0.0;
  IndexTensor d_aux;
  if (any) {
    std::vector<int64_t> bits(aux_grad.size());
    std::memcpy(bits.data(), aux_grad.data(), aux_grad.size() * sizeof(double));
    d_aux = on_device(bits, stream);
  }
  const double* aux = any ? reinterpret_cast<const double*>(d_aux.device_data(stream)) : nullptr;
  router_bwd_kernel<<<row_blocks(T), kThreads, 0, cu(stream)>>>(ptr<float>(dlogits), ptr<float>(dweights),
                                                               ptr<float>(probs), ptr<float>(weights),
                                                               d_idx.device_data(stream), aux, T, E, int(K),
                                                               renormalize);
  CUDA_CHECK_LAUNCH();
}

}  // namespace pb::cuda
