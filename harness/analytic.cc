/* The analytic model: the totals of the terms that every technique and block writes
 * beside its code (formulas in analytic.h). Written from the formulas, not by replaying
 * the implementation: the tests compare the two. */
#include "harness/analytic.h"

#include <algorithm>

#include "optimized/model/attention_block.h"
#include "optimized/model/attention_terapipe.h"
#include "optimized/model/dist_optimizer.h"
#include "optimized/model/dist_params.h"
#include "optimized/model/end_blocks.h"
#include "optimized/model/mlp_block.h"
#include "optimized/model/mlp_moe.h"
#include "optimized/model/recompute.h"
#include "optimized/parallel/ep_allgather.h"
#include "optimized/parallel/ep_alltoall.h"
#include "optimized/model/strategies.h"
#include "optimized/parallel/moe_routing.h"
#include "optimized/parallel/tp_grid.h"
#include "optimized/train/pp_terms.h"
#include "optimized/train/registry.h"
#include "reference/model/flops.h"

namespace pb::harness {

namespace {

// The case as the terms see it, for the ranks of pipeline rank pp_rank (terms.h).
Dims make_dims(const Case& c, const Strategies& st, const pp::Schedule* sched, int pp_rank) {
  const auto& mc = c.model;
  Dims d;
  d.B = c.train.micro_batch_size, d.S = c.train.seq_length, d.N = d.B * d.S / c.layout.cp;  // CP: its share
  d.H = mc.hidden_size, d.A = mc.num_attention_heads, d.G = mc.num_key_value_heads, d.D = mc.head_dim();
  d.F = mc.intermediate_size, d.V = mc.vocab_size, d.L = mc.num_hidden_layers;
  d.t = c.layout.tp, d.d = c.layout.dp, d.p = c.layout.pp, d.v = c.layout.vpp, d.c = c.layout.cp;
  const TpGrid tg = TpGrid::of(c.tp_kind, c.layout.tp, c.tp_depth);
  d.tq = tg.q, d.td = tg.d;
  const int64_t H = d.H;  // the whole width, for the parameters
  d.B /= tg.row_blocks(), d.N /= tg.row_blocks(), d.H /= tg.hidden_blocks();  // a grid rank's blocks
  d.a = d.A / d.tq, d.g = d.G / d.tq, d.f = d.F / d.tq;
  d.Ns = st.tp_outer_rows(d.N, d.t);
  d.m = c.train.num_micro_batches, d.steps = c.train.steps, d.mb = d.m * d.steps;
  if (sched && sched->bidir) d.mb /= 2;  // two pipelines: each of the rank's layers sees half the micro-batches
  if (sched && sched->update_every > 0) d.updates = d.m / sched->update_every;  // each stage's own updates
  if (sched && sched->slices > 0) {  // TeraPipe: a unit is one slice of every sequence of a micro-batch
    d.slices = sched->slices;
    d.S /= d.slices, d.N /= d.slices, d.Ns = st.tp_outer_rows(d.N, d.t);
    d.m *= d.slices, d.mb *= d.slices;
  }
  d.e = c.dtype == "bf16" ? 2 : 4;
  d.wgrad_products = c.typed_features().no_gradient_accumulation_fusion;
  d.pp_rank = pp_rank;
  d.Lr = 0;  // the layers of this rank's chunks (pp_placement.h)
  const pp::Placement one;
  const pp::Placement& pl = sched ? *sched : one;
  for (int ch = 0; ch < pl.v; ++ch) {
    const auto [l0, l1] = pl.layers(d.L, pl.stage(pp_rank, ch));
    d.Lr += l1 - l0;
  }
  d.emb = !sched || sched->holds_first(pp_rank) ? 1 : 0;
  d.head = !sched || sched->holds_last(pp_rank) ? 1 : 0;
  // MoE layers: a router (E, H) replicated over TP and E/EP experts of 3 H F_e, instead
  // of the dense MLP's 3 H F / TP.
  d.ep = c.layout.ep, d.E = mc.num_local_experts, d.El = d.E / d.ep, d.K = mc.num_experts_per_tok;
  d.Fe = mc.expert_ffn();
  d.Lmoe = 0;
  for (int ch = 0; ch < pl.v; ++ch) {
    const auto [l0, l1] = pl.layers(d.L, pl.stage(pp_rank, ch));
    for (int64_t l = l0; l < l1; ++l) d.Lmoe += d.E > 0 && mc.is_moe_layer(l) ? 1 : 0;
  }
  d.params_expert = d.Lmoe * d.El * 3 * H * d.Fe;
  // The norms (H, or their column block H/q), the routers, the experts, and the matrices over
  // TP: 1/t of each (1D), a (1/q, 1/q) block (2D / 2.5D) or a (1/q^2, 1/q) block (3D).
  const int64_t matrix_split = tg.kind == TpKind::OneD ? d.t : tg.kind == TpKind::ThreeD ? d.tq * d.tq * d.tq : d.tq * d.tq;
  d.params_local = (2 * d.Lr + d.head) * d.H + d.Lmoe * d.E * H + d.params_expert +
                   ((d.emb + d.head) * d.V * H + d.Lr * (2 * H * H + 2 * H * d.G * d.D) +
                    (d.Lr - d.Lmoe) * 3 * H * d.F) /
                       matrix_split;
  d.zero = c.typed_features().distributed_optimizer;
  d.zero_stage = d.zero ? c.typed_features().zero_stage : 0;
  const int64_t shards = d.zero ? d.d * d.c : 1;
  d.shard = (d.params_local + shards - 1) / shards;
  d.padded = d.shard * shards;
  d.overlap_grad_reduce = c.typed_features().overlap_grad_reduce;
  d.post_validation = c.typed_features().post_validation;
  const bool dp_buckets = !d.zero && (c.typed_features().bucket_size > 0 || d.overlap_grad_reduce);
  const auto params = shards > 1 || dp_buckets ? DistParams::enumerate(mc, int(d.t), 0,
                                                                       [&](const std::string& n) {
                                                                         return stage_holds(pl, pp_rank, d.L, n);
                                                                       },
                                                                       int(d.ep), 0)
                                               : std::vector<ShardedParam>{};
  if (dp_buckets)  // DP's buckets (the dense ones)
    for (const auto& b : DistParams::layout_buckets(params, c.typed_features().bucket_size, 1, 0, 1, 0))
      if (!b.expert) d.dp_buckets.push_back(b.padded);
  if (d.zero_stage == 1 && shards > 1) {  // ZeRO-1's buckets
    d.shard = d.padded = 0;
    const int eshards = int(d.t * d.d * d.c / d.ep);
    for (const auto& b : DistParams::layout_buckets(params, c.typed_features().bucket_size, int(shards), 0, eshards, 0)) {
      (b.expert ? d.zero_expert_buckets : d.zero_buckets).push_back(b.padded);
      d.shard += b.q, d.padded += b.padded;
    }
  }
  if (d.zero_stage >= 2 && shards > 1) {  // every parameter padded and sliced on its own
    std::map<std::string, int64_t> blocks;  // the padded parameters of each block
    d.shard = d.padded = 0;
    std::vector<ShardedParam> units;  // the dense parameters, then the expert groups (over expert_dp)
    for (const auto& p : params)
      if (!p.is_expert) units.push_back(p);
    for (auto& g : DistParams::expert_groups(params)) units.push_back(g);
    const int64_t eshards = d.t * d.d * d.c / d.ep;
    for (const auto& p : units) {
      const int64_t sh = p.is_expert ? eshards : shards, q = (p.rows * p.cols + sh - 1) / sh;
      const auto& n = p.name;
      const bool layer = n.starts_with("model.layers.");
      d.zero_params.push_back(
          {q * sh, n == "model.embed_tokens.weight", layer ? std::stoll(n.substr(13)) : -1, p.is_expert});
      d.shard += q, d.padded += q * sh, d.zero_slice_max = std::max(d.zero_slice_max, q);
      const bool attn = n.find("input_layernorm") != std::string::npos || n.find("self_attn") != std::string::npos;
      const std::string block = !layer ? (n == "model.embed_tokens.weight" ? "emb" : "head")
                                       : n.substr(0, n.find('.', 13)) + (attn ? ".attn" : ".mlp");
      d.zero_block_grads = std::max(d.zero_block_grads, blocks[block] += q * sh);
    }
    // ZeRO-3: a block's weights whole while it runs, and those of the next use prefetched
    // (block_chain.h). The uses: forward in block order; backward from the head, each
    // checkpointed group's blocks forward again (the recompute) and then backward, the
    // embedding's backward using none.
    const Features& f = c.typed_features();
    for (int ch = 0; ch < pl.v; ++ch) {
      const int s = pl.stage(pp_rank, ch);
      const auto [l0, l1] = pl.layers(d.L, s);
      const auto groups = f.recompute_full ? recompute_groups(f.recompute_method, f.recompute_num_layers, l0, l1)
                                           : std::vector<std::pair<int64_t, int64_t>>{};
      std::vector<std::vector<std::string>> chain;  // the chunk's blocks: one part, or a group's parts
      if (pl.first_of(s)) chain.push_back({"emb"});
      for (int64_t l = l0; l < l1;) {
        const auto g = std::find_if(groups.begin(), groups.end(), [l](const auto& r) { return r.first == l; });
        const int64_t end = g == groups.end() ? l + 1 : g->second;
        std::vector<std::string> parts;
        for (; l < end; ++l)
          for (const char* part : {".attn", ".mlp"}) parts.push_back("model.layers." + std::to_string(l) + part);
        if (g != groups.end())
          chain.push_back(parts);
        else
          for (auto& p : parts) chain.push_back({p});
      }
      if (pl.last_of(s)) chain.push_back({"head"});
      std::vector<std::string> fwd, bwd, grads;  // grads: the blocks' backward order (their gradients)
      for (const auto& b : chain) fwd.insert(fwd.end(), b.begin(), b.end());
      for (size_t i = chain.size(); i-- > 0;) grads.insert(grads.end(), chain[i].rbegin(), chain[i].rend());
      for (size_t i = 0; i + 1 < grads.size(); ++i)
        d.zero_pair_grads = std::max(d.zero_pair_grads, blocks[grads[i]] + blocks[grads[i + 1]]);
      if (grads.size() == 1) d.zero_pair_grads = std::max(d.zero_pair_grads, blocks[grads[0]]);
      for (size_t i = chain.size(); i-- > 0;) {
        const auto& b = chain[i];
        if (b.size() > 1) bwd.insert(bwd.end(), b.begin(), b.end());  // the recompute
        if (b.front() != "emb") bwd.insert(bwd.end(), b.rbegin(), b.rend());
      }
      for (const auto* uses : {&fwd, &bwd})
        for (size_t i = 0; i < uses->size(); ++i) {
          const std::string& a = (*uses)[i];
          const bool next = i + 1 < uses->size() && (*uses)[i + 1] != a;
          d.zero_gathered = std::max(d.zero_gathered, blocks[a] + (next ? blocks[(*uses)[i + 1]] : 0));
        }
    }
  }
  return d;
}

// Uniform routing of every micro-batch through every MoE layer of pipeline rank pp_rank:
// each expert gets T*K/E copies of each rank's T tokens (rounded down).
std::vector<RoutingRecord> uniform_routing(const Case& c, const Dims& d, const pp::Schedule* sched) {
  std::vector<RoutingRecord> out;
  const int64_t per = d.Ns * d.K / std::max<int64_t>(d.E, 1);
  for (int ch = 0; ch < (sched ? sched->v : 1); ++ch) {
    const auto [l0, l1] = sched ? sched->layers(d.L, sched->stage(d.pp_rank, ch)) : std::pair<int64_t, int64_t>{0, d.L};
    for (int64_t l = l0; l < l1; ++l)
      for (int64_t n = 0; n < d.steps * d.m && c.model.is_moe_layer(l); ++n) {
        RoutingRecord r;
        r.step = n / d.m, r.mb = n % d.m, r.layer = l, r.tokens = d.Ns;
        r.sent.assign(size_t(d.E), per);
        r.recv.assign(size_t(d.ep * d.El), per);
        out.push_back(r);
      }
  }
  return out;
}


// What one micro-batch costs in chunk ch (pp_terms.h: ChunkBytes): the saved activations
// of its blocks (A_c) and what a split backward's queued weight gradients keep of them
// (K_c: the row linears' inputs o and s, and the column inputs a, m and the head's where
// the TP strategy uses them as they are); the workspace transients of its blocks in order
// (each backward block but the first holds its incoming gradient, e N_s H); and where the
// TP strategy gathers copies (N_s < N), one (N, H) copy at a time, or under a split
// backward the copies its queued weight gradients keep (per layer: the inputs of q/k/v and
// gate/up and the gradients into o and down; the head's input) until W.
// The MLP of one layer for one micro-batch: what it saves besides the block's, its block's
// workspace transients and its own transfer buffers (an MoE dispatcher's).
struct MlpCost {
  int64_t saved = 0;
  BlockWorkspace ws, cb;
  int64_t act_kept = 0, ws_kept = 0;  // split backward: what its queued weight gradients keep until W
  bool tp = true;  // TP linears (dense): their gathered copies, and the down projection keeps the block's dy
};

// Full recompute's checkpointed groups are the chunk's layers [first, last) (0-based).
using Groups = std::vector<std::pair<int64_t, int64_t>>;

// What a split backward's queued weight gradients keep of each block's saved state until
// W: an attention block's o input (and with shared inputs its q/k/v input), an MLP's
// (MlpCost::act_kept), the head's input with shared inputs.
struct KeptUntilW {
  int64_t attn = 0, head = 0;
  const std::vector<MlpCost>& mlp;
  int64_t mlp_block(int64_t l) const { return mlp[size_t(l)].act_kept; }
  int64_t chunk() const {  // all of a chunk's
    int64_t n = int64_t(mlp.size()) * attn + head;
    for (const MlpCost& m : mlp) n += m.act_kept;
    return n;
  }
};
KeptUntilW kept_until_w(const Dims& d, const std::vector<MlpCost>& mlp, bool last) {
  const int64_t shared = d.Ns == d.N ? d.e * d.N * d.H : 0;
  return {d.e * d.N * d.a * d.D + shared, last ? shared : 0, mlp};
}

// The activations of one micro-batch in a chunk with checkpointed groups: after F (A_c),
// the transient above it during F and the one above B's starting level during B.
void recompute_activations(const Dims& d, const Strategies& st, const std::vector<MlpCost>& mlp, const Groups& groups,
                           bool last, bool split, ChunkBytes& c) {
  const int64_t xb = d.e * d.Ns * d.H, Lc = int64_t(mlp.size());
  // Under a split backward what each block's queued weight gradients keep of its state
  // (recomputed or not) until W.
  const KeptUntilW kept_w = kept_until_w(d, mlp, last);
  const int64_t attn_kept = split ? kept_w.attn : 0, head_kept = split ? kept_w.head : 0;
  auto mlp_kept = [&](int64_t l) { return split ? kept_w.mlp_block(l) : 0; };
  const int64_t attn = attention_block_saved_bytes(d) + st.attention_core_saved(d), head = last ? head_saved_bytes(d) : 0;
  auto layer = [&](int64_t l) { return attn + mlp_block_saved_bytes(d) + mlp[size_t(l)].saved; };
  std::vector<int64_t> group_end(size_t(Lc), -1);  // at a group's first layer: its end
  for (const auto& [g0, g1] : groups) group_end[size_t(g0)] = g1;
  // Forward: a group's whole state and its output exist until the group drops it.
  int64_t level = 0, peak = 0;
  for (int64_t l = 0; l < Lc;) {
    if (group_end[size_t(l)] < 0) {
      level += layer(l++);
      continue;
    }
    int64_t all = 0;
    for (const int64_t end = group_end[size_t(l)]; l < end; ++l) all += layer(l);
    peak = std::max(peak, level + all + xb);
    level += xb;
  }
  c.act = level + head;
  const int64_t after = c.act + (last ? 0 : xb);
  c.act_forward = std::max<int64_t>(0, peak - after);
  // Backward, from the head down: a group recomputes its state on top of what is left; a
  // recomputing core allocates its saved state again once its layer's MLP block is freed.
  // A split backward leaves each block's kept state behind (a group's: of its recompute).
  // Recomputed ahead (R), a group's state is there already and is freed, input included.
  auto backward_peak = [&](bool ahead) {
    int64_t rel = -head + head_kept, peak_b = 0;
    for (int64_t l = Lc; l-- > 0;) {
      int64_t g0 = -1;
      for (const auto& [a, b] : groups)
        if (l >= a && l < b) g0 = a;
      if (g0 < 0) {
        rel -= layer(l) - attn - mlp_kept(l);
        peak_b = std::max(peak_b, rel + st.attention_core_recomputed(d));
        rel -= attn - attn_kept;
        continue;
      }
      int64_t all = 0, kept = 0;
      for (int64_t k = g0; k <= l; ++k) all += layer(k), kept += attn_kept + mlp_kept(k);
      if (ahead) {
        rel -= all - kept;
      } else {
        peak_b = std::max(peak_b, rel + all);
        rel += kept - xb;
      }
      l = g0;
    }
    return peak_b;
  };
  c.act_backward = backward_peak(false);
  // Recompute in advance: every group's state recomputed at once (R, in forward order): each
  // adds its layers' state less its input (kept already), with its output at its peak, freed
  // after.
  for (const auto& [g0, g1] : groups) {
    int64_t all = 0;
    for (int64_t k = g0; k < g1; ++k) all += layer(k);
    c.ahead_act_peak = c.ahead_act + all;  // the last group's is the highest
    c.ahead_act += all - xb;
  }
  c.ahead_act_backward = backward_peak(true);
}

// Swap attention: every layer's attention state leaves the device when the layer's forward
// ends and comes back when the layer's backward begins. During F a layer's attention and
// MLP state and its output are on the device together, and a received input stays until F
// returns; during B a layer's attention state is back while its MLP state still is (and,
// with selective recompute, the core's state recomputed once the MLP's is freed). With full
// recompute the checkpointed groups' layers (method block: the first of the chunk) are not
// swapped: they keep their input as in recompute_activations. Under a split backward each
// block leaves what W keeps behind.
void swap_activations(const Dims& d, const Strategies& st, const std::vector<MlpCost>& mlp, const Groups& groups,
                      bool first, bool last, bool split, ChunkBytes& c) {
  const int64_t xb = d.e * d.Ns * d.H, Lc = int64_t(mlp.size());
  const int64_t attn = attention_block_saved_bytes(d) + st.attention_core_saved(d), head = last ? head_saved_bytes(d) : 0;
  const KeptUntilW kept_w = kept_until_w(d, mlp, last);
  const int64_t attn_kept = split ? kept_w.attn : 0, head_kept = split ? kept_w.head : 0;
  auto mlp_kept = [&](int64_t l) { return split ? kept_w.mlp_block(l) : 0; };
  auto mlp_of = [&](int64_t l) { return mlp_block_saved_bytes(d) + mlp[size_t(l)].saved; };
  auto group_of = [&](int64_t l) {  // the checkpointed group holding layer l, or (-1, -1)
    for (const auto& g : groups)
      if (l >= g.first && l < g.second) return g;
    return std::pair<int64_t, int64_t>{-1, -1};
  };
  // A received input is kept by the first layer (a group's input) unless that layer is swapped.
  const int64_t received = first || (Lc > 0 && group_of(0).first == 0) ? 0 : xb;
  int64_t level = 0, peak = 0, swapped = 0;
  for (int64_t l = 0; l < Lc;) {
    const auto [g0, g1] = group_of(l);
    if (g0 >= 0) {
      int64_t all = 0;
      for (; l < g1; ++l) all += attn + mlp_of(l);
      peak = std::max(peak, level + all + xb);
      level += xb;
      continue;
    }
    peak = std::max(peak, level + attn + mlp_of(l) + xb + (l > 0 ? received : 0));
    level += mlp_of(l);
    ++swapped, ++l;
  }
  c.act = level + head;
  const int64_t after = c.act + (last ? 0 : xb);
  c.act_forward = std::max<int64_t>(0, std::max(peak, after + received) - after);
  int64_t rel = -head + head_kept, peak_b = 0;
  for (int64_t l = Lc; l-- > 0;) {
    const auto [g0, g1] = group_of(l);
    if (g0 >= 0) {
      int64_t all = 0, kept = 0;
      for (int64_t k = g0; k <= l; ++k) all += attn + mlp_of(k), kept += attn_kept + mlp_kept(k);
      peak_b = std::max(peak_b, rel + all);
      rel += kept - xb;
      l = g0;
      continue;
    }
    peak_b = std::max(peak_b, rel + attn);
    rel -= mlp_of(l) - mlp_kept(l);
    peak_b = std::max(peak_b, rel + attn + st.attention_core_recomputed(d));
    rel += attn_kept;
  }
  c.act_backward = peak_b;
  c.host = swapped * attn;
}

ChunkBytes chunk_bytes(const Dims& d, const Strategies& st, const std::vector<MlpCost>& mlp, const Groups& groups,
                       bool first, bool last, bool split) {
  const int64_t xb = d.e * d.Ns * d.H, NH = d.e * d.N * d.H, Lc = int64_t(mlp.size());
  const bool shared_inputs = d.Ns == d.N;
  ChunkBytes c;
  if (st.swap_attention)
    swap_activations(d, st, mlp, groups, first, last, split, c);
  else
    recompute_activations(d, st, mlp, groups, last, split, c);
  c.act_kept = kept_until_w(d, mlp, last).chunk();
  const BlockWorkspace at = st.attention_workspace(d, st.attention_core_workspace(d));
  const BlockWorkspace em = st.embedding_workspace(d), hd = st.head_workspace(d);
  c.ws_forward = std::max({first ? em.forward : 0, at.forward, last ? hd.forward : 0});
  for (const MlpCost& m : mlp) c.ws_forward = std::max(c.ws_forward, m.ws.forward);
  // Backward, block by block: each holds its incoming gradient (the first one's is the
  // received one, counted by the walk) and, under a split backward, the gradients its
  // queued weight gradients keep (the column linears' dy; with shared inputs also the row
  // linears' dy, which is the block's incoming gradient) stay until W.
  struct Step {
    int64_t own, kept;
    bool linear;   // its weight gradients are queued (not the embedding's scatter)
    bool keeps_in;  // a row linear's dy is the block's incoming gradient (not an MoE MLP's)
  };
  std::vector<Step> steps;
  if (last) steps.push_back({hd.backward, d.e * d.N * d.V / d.tq, true, true});
  // A checkpointed group's forward runs again when its backward begins (its last layer's
  // MLP block), while the group's incoming gradient is held.
  auto group_forward = [&](int64_t l, auto&& of) {
    int64_t most = 0;
    for (const auto& [g0, g1] : groups)
      if (g1 == l + 1)
        for (int64_t k = g0; k < g1; ++k) most = std::max(most, of(k));
    return most;
  };
  // The group's incoming gradient stays with its caller until the whole group returns:
  // held through every block of the group after the first (a received one is the walk's).
  // (Under a split backward a group's first block, a dense MLP with shared inputs, keeps
  // that gradient for W: then it is counted with what is kept.)
  auto held = [&](int64_t l, bool first_block) {
    for (const auto& [g0, g1] : groups)
      if (l >= g0 && l < g1 && !(first_block && l == g1 - 1) && (last || g1 < Lc) &&
          !(split && shared_inputs && mlp[size_t(g1 - 1)].tp))
        return xb;
    return int64_t(0);
  };
  std::vector<int64_t> again_at;  // per step: a checkpointed group's forward again there (its transients)
  for (int64_t l = Lc; l-- > 0;) {
    const MlpCost& m = mlp[size_t(l)];
    const int64_t again = group_forward(l, [&](int64_t k) { return std::max(at.forward, mlp[size_t(k)].ws.forward); });
    c.ahead_ws = std::max(c.ahead_ws, again);  // recompute in advance: R's
    steps.push_back({m.ws.backward + held(l, true), m.ws_kept, true, m.tp});
    again_at.push_back(again + held(l, true));
    steps.push_back({at.backward + held(l, false), d.e * d.N * (d.a + 2 * d.g) * d.D, true, true});
    again_at.push_back(0);
  }
  if (first) steps.push_back({0, 0, false, false}), again_at.push_back(0);
  if (last) again_at.insert(again_at.begin(), 0);
  int64_t kept = 0;  // by the blocks so far, besides the received gradient (the walk holds that one)
  for (size_t i = 0; i < steps.size(); ++i) {
    const int64_t in = i > 0 ? xb : 0;
    c.ws_backward = std::max(c.ws_backward, kept + std::max(steps[i].own, again_at[i]) + in);
    c.ahead_ws_backward = std::max(c.ahead_ws_backward, kept + steps[i].own + in);
    if (split && steps[i].linear) kept += steps[i].kept + (shared_inputs && steps[i].keeps_in ? in : 0);
  }
  // The received gradient too, where the chunk's last block keeps it.
  c.ws_kept = kept + (split && shared_inputs && !last && !steps.empty() && steps[0].keeps_in ? xb : 0);
  // Gathered copies (SP): per layer the attention's two (q/k/v input, o's dy) and a dense
  // MLP's two (gate/up input, down's dy), the head's one; kept until W under a split backward.
  int64_t copies = last ? 1 : 0;
  for (const MlpCost& m : mlp) copies += 2 + (m.tp ? 2 : 0);
  if (!shared_inputs) {
    c.cb_forward = NH;
    c.cb_kept = copies * NH;
    c.cb_backward = split ? c.cb_kept + (first ? NH : 0) : NH;
  }
  // An MoE dispatcher's buffers, over the copies kept by the blocks after it (backward order).
  int64_t kept_copies = last ? 1 : 0;
  for (int64_t l = Lc; l-- > 0;) {
    const MlpCost& m = mlp[size_t(l)];
    c.cb_forward = std::max(c.cb_forward, m.cb.forward);
    const int64_t before = split && !shared_inputs ? kept_copies * NH : 0;
    c.cb_backward = std::max(c.cb_backward, before + m.cb.backward);
    kept_copies += 2 + (m.tp ? 2 : 0);
  }
  // A checkpointed group's forward again: its gathered copies, dispatcher and core buffers
  // (in advance: R's, while the backward has none of them).
  const BlockWorkspace core_cb = st.attention_core_comm_buffers(d);
  c.ahead_cb_backward = c.cb_backward;
  for (int64_t l = 0; l < Lc; ++l)
    c.ahead_cb = std::max(c.ahead_cb, group_forward(l, [&](int64_t k) {
      return std::max({shared_inputs ? 0 : NH, mlp[size_t(k)].cb.forward, core_cb.forward});
    }));
  c.cb_backward = std::max(c.cb_backward, c.ahead_cb);
  const BlockWorkspace tp_cb = st.tp_comm_buffers(d, first, last, Lc > 0);  // a grid strategy's broadcasts
  c.cb_forward = std::max(c.cb_forward, tp_cb.forward);
  c.cb_backward = std::max(c.cb_backward, tp_cb.backward);
  // The attention core's buffers (ring attention's K, V in flight), while no gathered copy
  // of its layer is (with a split backward, the copies kept by the layers after it and by
  // its own o projection are: at the first layer's core, all but its q/k/v input's).
  const BlockWorkspace core = st.attention_core_comm_buffers(d);
  if (Lc > 0 && (core.forward > 0 || core.backward > 0)) {
    c.cb_forward = std::max(c.cb_forward, core.forward);
    const int64_t kept_before_core = split && !shared_inputs ? c.cb_kept - NH : 0;
    c.cb_backward = std::max(c.cb_backward, kept_before_core + core.backward);
    c.ahead_cb_backward = std::max(c.ahead_cb_backward, kept_before_core + core.backward);
  }
  return c;
}

// The MLP cost of layer l for one micro-batch: the dense MLP's, or an MoE layer's given
// the rows its routing record says this rank dispatched (S) and received (R).
MlpCost mlp_cost(const Case& c, const Dims& d, const Strategies& st, int64_t l, const RoutingRecord* r, bool split) {
  const int64_t NH = d.e * d.N * d.H;
  if (d.E == 0 || !c.model.is_moe_layer(l))  // dense: s (and m, used as it is) saved, dg and du kept
    return {st.mlp_saved(d), st.mlp_workspace(d), {}, d.e * d.N * d.f + (d.Ns == d.N ? NH : 0), 2 * d.e * d.N * d.f,
            true};
  const int64_t S = r ? r->sent_total() : 0, R = r ? r->recv_total() : 0;
  const MoeLayerBytes b = moe_layer_bytes(d, R, split);
  MlpCost m{b.saved, b.ws,
            c.moe_dispatcher == "allgather" ? ep_allgather_comm_buffers(d) : ep_alltoall_comm_buffers(d, S, R),
            b.act_kept, b.ws_kept, false};
  if (c.model.router_aux_loss_coef > 0 && d.t * d.c > 1) m.cb.forward = std::max(m.cb.forward, Dims::fp * d.E);
  return m;
}

// The peaks of this rank's categories: its schedule walked with what each micro-batch
// costs in each chunk (with MoE layers, each step's micro-batches differ: every step is
// walked and the highest peak kept; without a pipeline, every micro-batch).
MemoryPeaks memory_peaks(const Case& c, const Dims& d, const Strategies& st, const pp::Schedule* sched) {
  std::map<std::tuple<int64_t, int64_t, int64_t>, const RoutingRecord*> rec;  // (step, mb, layer)
  if (d.routing)
    for (const auto& r : *d.routing) rec[{r.step, r.mb, r.layer}] = &r;
  const int chunks = sched ? sched->v : 1;
  // A split backward computes the weight gradients (and the separate add's products) in W.
  Dims db = d;
  db.wgrad_products = d.wgrad_products && !(sched && sched->split_backward);
  auto chunk_of = [&](int64_t step, int ch, int mb) {
    const int s = sched ? sched->stage(d.pp_rank, ch) : 0;
    const auto [l0, l1] = sched ? sched->layers(d.L, s) : std::pair<int64_t, int64_t>{0, d.L};
    std::vector<MlpCost> mlp;
    for (int64_t l = l0; l < l1; ++l) {
      const auto it = rec.find({step, mb, l});
      mlp.push_back(mlp_cost(c, db, st, l, it == rec.end() ? nullptr : it->second, sched && sched->split_backward));
    }
    Groups groups;
    for (const auto& [g0, g1] : st.recompute_groups(l0, l1)) groups.emplace_back(g0 - l0, g1 - l0);
    const bool first = !sched || sched->first_of(s), last = !sched || sched->last_of(s);
    const bool split = sched && sched->split_backward;
    ChunkBytes cb = chunk_bytes(db, st, mlp, groups, first, last, split);
    if (split && d.wgrad_products)  // W: one product at a time, the largest of the chunk's
      cb.ws_w = d.e * d.H * std::max({l1 > l0 ? d.a * d.D : 0, l1 > l0 ? d.f : 0, last ? d.V / d.tq : 0});
    if (split)  // ZeRO-2/3: the chunk's whole gradients from its B to its W
      for (const auto& z : d.zero_params)
        if (z.layer >= 0 ? z.layer >= l0 && z.layer < l1 : z.embedding ? first : last) cb.grads_kept += Dims::fp * z.padded;
    return cb;
  };
  const int64_t xb = d.e * d.Ns * d.H;
  if (sched && sched->slices > 0) {  // TeraPipe: the units of one micro-batch differ by their slice
    // (model/attention_terapipe.h): slice 0's forward allocates every layer's K/V cache, slice
    // K-1's backward the accumulated gradients, slice 0's backward frees both.
    const int64_t K = sched->slices, state = d.Lr * terapipe_cache_bytes(d);
    std::vector<ChunkBytes> C;
    for (int64_t i = 0; i < K; ++i) {
      db.slice = i;
      ChunkBytes cb = chunk_of(0, 0, 0);
      if (i == 0) cb.act += state, cb.act_b_free += K > 1 ? state : 0;
      if (i == K - 1 && K > 1) cb.act_b_alloc = state;
      C.push_back(cb);
    }
    return schedule_peaks(sched, d.pp_rank, [&](int, int mb) { return C[size_t(mb % K)]; }, xb);
  }
  if (d.Lmoe == 0) {  // every micro-batch alike
    std::vector<ChunkBytes> C;
    for (int ch = 0; ch < chunks; ++ch) C.push_back(chunk_of(0, ch, 0));
    return schedule_peaks(sched, d.pp_rank, [&](int ch, int) { return C[size_t(ch)]; }, xb);
  }
  MemoryPeaks peak;
  auto keep = [&](const MemoryPeaks& p) {
    peak.activations = std::max(peak.activations, p.activations);
    peak.workspace = std::max(peak.workspace, p.workspace);
    peak.comm_buffers = std::max(peak.comm_buffers, p.comm_buffers);
    peak.host = std::max(peak.host, p.host);
    peak.grads = std::max(peak.grads, p.grads);
  };
  for (int64_t step = 0; step < d.steps; ++step) {
    std::map<std::pair<int, int>, ChunkBytes> C;
    auto bytes = [&](int ch, int mb) {
      auto it = C.find({ch, mb});
      if (it == C.end()) it = C.emplace(std::pair{ch, mb}, chunk_of(step, ch, mb)).first;
      return it->second;
    };
    if (sched)
      keep(schedule_peaks(sched, d.pp_rank, bytes, xb));
    else
      for (int mb = 0; mb < int(d.m); ++mb) keep(schedule_peaks(nullptr, d.pp_rank, [&](int, int) { return bytes(0, mb); }, xb));
  }
  return peak;
}

// Rows of one call size, summed over terms of the same (group, op, phase, size).
std::vector<CommRow> comm_rows(const Terms& t) {
  std::vector<CommRow> rows;
  for (const auto& term : t.comm) {
    auto it = std::find_if(rows.begin(), rows.end(), [&](const CommRow& r) {
      return r.group == term.group && r.op == term.op && r.phase == term.phase &&
             r.bytes_per_call() == term.bytes_per_call;
    });
    if (it == rows.end()) it = rows.insert(rows.end(), CommRow{term.group, term.op, term.phase});
    it->calls += term.calls;
    it->bytes += term.calls * term.bytes_per_call;
    it->bus_bytes += double(term.calls * term.bytes_per_call) * bus_factor(term.op, term.group_size);
  }
  return rows;
}

}  // namespace

Prediction predict(const Case& c, int pp_rank, const std::vector<RoutingRecord>* routing) {
  const Features f = c.typed_features();
  const CaseSpec spec{c.model, c.train, c.layout, f, c.schedule};
  const Strategies st = strategies_for(spec);
  const bool piped = c.layout.pp > 1;
  const pp::Schedule sched = piped ? schedule_for(spec) : pp::Schedule{};
  Dims d = make_dims(c, st, piped ? &sched : nullptr, pp_rank);
  const std::vector<RoutingRecord> uniform = d.Lmoe > 0 && !routing ? uniform_routing(c, d, piped ? &sched : nullptr) : std::vector<RoutingRecord>{};
  d.routing = routing ? routing : &uniform;

  Terms terms = technique_terms(spec, d);
  optimizer_terms(d, terms);
  Prediction pr;
  pr.params_total = ref::analytic_param_count(c.model);
  pr.params_local = d.params_local;
  const int64_t S = c.train.seq_length;  // (d.S: TeraPipe's slice)
  pr.flops_per_step = ref::train_flops_per_token(c.model, S) * double(c.global_batch() * S);
  pr.memory = terms.memory;
  const MemoryPeaks peaks = memory_peaks(c, d, st, piped ? &sched : nullptr);
  pr.memory[MemCategory::Activations] = peaks.activations;
  pr.memory[MemCategory::Workspace] = peaks.workspace;
  // Host memory: what stays there (offloaded state) and, on top, the swap pool's peak or
  // the step's staging (never at once: the pool is empty when the step runs).
  pr.memory[MemCategory::Host] = terms.memory[MemCategory::Host] + std::max(peaks.host, terms.host_step);
  // ZeRO-2/3 under a split backward: the slices' accumulator and the whole gradients pending W.
  if (peaks.grads > 0) pr.memory[MemCategory::Grads] = Dims::fp * d.shard + peaks.grads;
  // The distributed optimizer's reduce-scatter output (fp32, its range), after the backward.
  // ZeRO-2's reduce-scatter output of one parameter's slice (fp32) after a block's backward.
  int64_t bucket_q = 0;  // ZeRO-1: the largest bucket's slice
  for (const int64_t b : d.zero_buckets) bucket_q = std::max(bucket_q, b / (d.d * d.c));
  for (const int64_t b : d.zero_expert_buckets) bucket_q = std::max(bucket_q, b / (d.t * d.d * d.c / d.ep));
  // (ZeRO-1 gathers each bucket in place; with overlap_grad_reduce the reduce-scatters'
  // results are a Grads buffer of the range: no transient.)
  // ZeRO-2/3 with overlap_grad_reduce reduce-scatters in place (none), unless a split
  // backward reduces at W; ZeRO-2's step gathers each parameter from a staged slice (e q).
  const bool parts = !d.overlap_grad_reduce || (piped && sched.split_backward);
  int64_t zero_cb = d.zero_stage >= 2 ? std::max(parts ? Dims::fp : 0, d.zero_stage == 2 ? d.e : 0) * d.zero_slice_max
                    : d.overlap_grad_reduce ? 0
                                            : Dims::fp * bucket_q;
  // ZeRO-2 offloaded: the new weights of all the slices from the host, before their gathers.
  if (d.zero_stage == 2 && c.typed_features().offload_optimizer) zero_cb = std::max(zero_cb, d.e * d.shard);
  pr.memory[MemCategory::CommBuffers] = std::max(peaks.comm_buffers, d.zero && d.d * d.c > 1 ? zero_cb : 0);
  pr.comm = comm_rows(terms);
  return pr;
}

}  // namespace pb::harness
