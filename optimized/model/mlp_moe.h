/* The MoE MLP strategy (DESIGN.md "The decoder as blocks", MLP seam): Mixtral's sparse
 * block (Jiang et al., arXiv 2401.04088) as Megatron-LM's MoELayer -- router, token
 * dispatcher (parallel/ep_dispatcher.h), grouped SwiGLU experts -- for the T = N_s rows of
 * this rank (under SP its N/TP rows: expert TP is 1).
 *
 *   logits = m Wr^T             (T, E) fp32 (the router runs in fp32, Megatron's
 *                               moe_router_dtype fp32)
 *   probs, top-K idx, w         (T, E), (T*K), (T, K)       ops::moe_router_forward
 *   plan                        capacity and drops           parallel/moe_routing.h
 *   x, p = dispatch(m, w)       (R, H), (R, 1): the rows of this rank's E/EP experts
 *   g = x W1^T, u = x W3^T      (R, F_e) grouped linears, one launch each for all local experts
 *   s = silu(g) * u;  o = s W2^T (R, H);  y = p * o (per row)
 *   f = combine(y)              (T, H): f_t = sum over t's kept copies of p_tk Expert_k(m_t)
 * Backward: dy = combine^T(df); dp = dy . o per row; the experts' backward on p * dy;
 * dm, dw = dispatch^T(dx, dp); dlogits from the router backward (with the aux gradient);
 * dm += dlogits Wr, dWr += dlogits^T m.
 *
 * Load-balancing loss (Megatron's switch_load_balancing_loss_func per layer): over the
 * N_g = B*S tokens of the micro-batch, which the TP (SP) and CP ranks share,
 *   aux = coef * E / (N_g^2 K) * sum_e count_e * sum_t p_te,
 * with count_e all-reduced over tp_cp (before dropping), and the sum over t split over the
 * ranks: each adds its share. Its gradient d aux / d p_te = coef E count_e / (N_g^2 K) is
 * scaled by CP, which the DP x CP gradient mean divides out again.
 */
#pragma once

#include <memory>

#include "optimized/model/mlp.h"
#include "optimized/parallel/ep_dispatcher.h"

namespace pb {

// The memory of one MoE layer for one micro-batch, from its T = N_s tokens, the S kept
// copies it dispatched and the R rows its experts received (e bytes per element, fp32 4):
//   saved (Activations): probs 4TE, w 4TK, x eRH, p 4R, g, u, s 3eRF_e, o eRH
//   workspace of the MLP block, forward: the logits 4TE (bf16: with the fp32 copies of m
//     and Wr, 4TH + 4EH), then y eRH and f eTH during the combine;
//   backward, after the block's dm eTH: the experts' dx eRH, dp 4R, dy eRH, dg and du
//     2eRF_e and the larger of ds eRF_e and dW3's dx eRH; then dw 4TK with dx and dp;
//     then dlogits 4TE with dw, and the router's fp32 gradients (fp32: dm32 4TH; bf16:
//     m32 4TH, then dm32 4TH with Wr32 4EH, then its bf16 copy eTH); the block's dh eTH.
// The dispatcher's transfer buffers (CommBuffers) are its own (ep_alltoall.h,
// ep_allgather.h); the counts' all-reduce adds 4E.
// Under a split backward (zero bubble) the weight gradients wait for W with what they read:
// kept saved tensors x eRH and s eRF_e (and m eTH in fp32, the router's input), and kept
// workspace dy eRH, dg and du 2eRF_e, dlogits 4TE (and bf16: m32 4TH); the backward's later
// phases hold them.
struct MoeLayerBytes {
  int64_t saved = 0;
  BlockWorkspace ws;
  int64_t act_kept = 0, ws_kept = 0;  // split backward: until W
};
MoeLayerBytes moe_layer_bytes(const Dims& d, int64_t R, bool split);

class MoeMlp final : public Mlp {
 public:
  MoeMlp(const BlockEnv& env, int64_t layer, std::unique_ptr<TokenDispatcher> dispatcher);
  std::unique_ptr<Saved> forward(Tensor& f, const Tensor& m, BlockCtx& ctx) override;
  void backward(Tensor& dm, const Tensor& df, Saved& s) override;
  // The router and the local experts' three groups (DistParams::expert_groups).
  std::vector<ShardedParam*> params() const override { return {router_, w1_, w3_, w2_}; }

 private:
  const BlockEnv& env_;
  int64_t layer_;
  ShardedParam* router_;
  ShardedParam *w1_, *w3_, *w2_;  // (E/EP * F_e, H), (E/EP * F_e, H), (E/EP * H, F_e)
  std::unique_ptr<TokenDispatcher> dispatcher_;
};

}  // namespace pb
