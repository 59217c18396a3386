/* The registry entries of the memory techniques (registry.cc lists them): what each needs
 * of a case (one-line errors), the strategy it installs and its analytic terms.
 *   reuse_fp32_param       the parameter storage (model/dist_params.h)
 *   distributed_optimizer  ZeRO-1/2/3 (model/dist_optimizer.h; zero_grads.h, zero_params.h)
 *   offload_optimizer      ZeRO-Offload (model/dist_params.h, dist_optimizer.h)
 *   recompute_full         checkpointed layer groups (model/recompute.h)
 *   recompute_selective    a recomputing attention core (model/recompute.h)
 *   swap_attention         the attention state in host memory (memory/swap_attention.h)
 */
#pragma once

#include "optimized/train/registry.h"

namespace pb {

void reuse_require(const CaseSpec& c);
void reuse_terms(const CaseSpec& c, const Dims& d, Terms& t);
void zero1_require(const CaseSpec& c);
void zero_install(const CaseSpec& c, Strategies& s);
void offload_require(const CaseSpec& c);
void offload_entry_terms(const CaseSpec& c, const Dims& d, Terms& t);
void recompute_full_require(const CaseSpec& c);
void recompute_full_install(const CaseSpec& c, Strategies& s);
void recompute_full_terms(const CaseSpec& c, const Dims& d, Terms& t);
void recompute_selective_require(const CaseSpec& c);
void recompute_selective_install(const CaseSpec& c, Strategies& s);
void recompute_selective_terms(const CaseSpec& c, const Dims& d, Terms& t);
void swap_attention_require(const CaseSpec& c);
void swap_attention_install(const CaseSpec& c, Strategies& s);
void swap_attention_terms(const CaseSpec& c, const Dims& d, Terms& t);

}  // namespace pb
