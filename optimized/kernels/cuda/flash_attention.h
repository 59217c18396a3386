/* Opt-in tensor-core FlashAttention-2 kernels for bf16, head dims 64 and 128
 * (kernels in flash_attention.cu; UNVERIFIED: compiled for sm_90, never run on a GPU).
 *
 * cuda::attention_forward / attention_backward (attention.cu) take this path only when
 * flash_attention_applies(): the switch is on, every bf16 operand is bf16 and 16-byte
 * aligned, D is 64 or 128, and there is at least one query and one key row. Otherwise they
 * run the warp-per-row kernels (the default, and the fp32 oracle path).
 *
 * The switch: PB_CUDA_FLASH=1 in the environment (read once, at the first call), or
 * set_flash_attention(on) from code (tests), which overrides the environment from then on.
 *
 * Same op, shapes and semantics as attention.cu (ops::AttnShape: Sk may differ from S,
 * explicit positions, key j visible to query i iff kpos[j] <= qpos[i], a row that sees no
 * key gets o = 0, lse = -inf and no gradient; GQA head a reads kv head a / (A/G)).
 *   q, o, dO, dQ (B*S, A*D) bf16; k, v, dK, dV (B*Sk, G*D) bf16; lse (B*A, S) fp32 */
#pragma once

#include <initializer_list>

#include "optimized/kernels/ops.h"

namespace pb::cuda {

// Whether the flash path is switched on (PB_CUDA_FLASH=1, or the last set_flash_attention).
bool flash_attention_enabled();
// Switch the flash path on or off for this process (overrides PB_CUDA_FLASH).
void set_flash_attention(bool on);

// Whether attention on these operands goes through the flash kernels: switched on, D 64 or
// 128, S > 0 and Sk > 0, every listed tensor bf16 and 16-byte aligned.
bool flash_attention_applies(const ops::AttnShape& a, std::initializer_list<const Tensor*> bf16_operands);

// The flash kernels themselves (same checks as attention.cu; they require what
// flash_attention_applies tests, except the switch).
void flash_attention_forward(Tensor& o, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                             const ops::AttnShape& a, const Stream& stream = {});
void flash_attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q,
                              const Tensor& k, const Tensor& v, const Tensor& o, const Tensor& lse,
                              const ops::AttnShape& a, const Stream& stream = {});

}  // namespace pb::cuda
