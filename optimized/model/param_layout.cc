/* The parameters of one rank in buffer order (see dist_params.h): which global tensors it
 * holds, their TP shards and local shapes, without storage (DistParams allocates; the
 * analytic model sizes ZeRO's per-parameter shards from the same list). */
#include <algorithm>

#include "optimized/model/dist_params.h"
#include "reference/common/error.h"
#include "reference/model/params.h"

namespace pb {

ExpertKey expert_key(const std::string& name) {
  const auto at = name.find(".block_sparse_moe.experts.");
  if (at == std::string::npos) return {};
  ExpertKey k;
  k.layer = std::stoll(name.substr(13));
  const std::string rest = name.substr(at + 26);  // "{e}.{w}.weight"
  k.expert = std::stoll(rest);
  const char w = rest[rest.find('.') + 2];
  k.proj = w == '1' ? 0 : w == '3' ? 1 : 2;
  return k;
}


// Whether pipeline rank r holds a parameter: its chunks' layers, the embedding with stage
// 0, the final norm and the LM head with the last stage.
bool stage_holds(const pp::Placement& pl, int r, int64_t L, const std::string& name) {
  if (name.starts_with("model.layers.")) {
    const int64_t l = std::stoll(name.substr(13));
    for (int c = 0; c < pl.v; ++c) {
      const auto [l0, l1] = pl.layers(L, pl.stage(r, c));
      if (l >= l0 && l < l1) return true;
    }
    return false;
  }
  if (name == "model.embed_tokens.weight") return pl.holds_first(r);
  return pl.holds_last(r);  // model.norm.weight, lm_head.weight
}

std::vector<DistParams::Bucket> DistParams::make_buckets(const std::vector<ShardedParam>& params, int64_t bucket_size,
                                                        int shards) {
  std::vector<Bucket> out;
  Bucket b;
  int64_t numel = 0, start = 0, at = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    numel += params[i].rows * params[i].cols;
    const bool end = i + 1 == params.size();
    if (!end && (bucket_size <= 0 || numel < bucket_size || params[i + 1].replicated)) continue;
    b.last = i + 1;
    b.q = (numel + shards - 1) / shards;
    b.padded = b.q * shards;
    b.start = start, b.at = at;
    out.push_back(b);
    start += b.padded, at += b.q, numel = 0;
    b = Bucket{};
    b.first = i + 1;
  }
  if (out.empty()) out.push_back(Bucket{});  // no parameters at all
  return out;
}

std::vector<DistParams::Bucket> DistParams::layout_buckets(const std::vector<ShardedParam>& params,
                                                          int64_t bucket_size, int shards, int rank, int expert_shards,
                                                          int expert_rank) {
  const auto first_expert = std::find_if(params.begin(), params.end(), [](const auto& p) { return p.is_expert; });
  const std::vector<ShardedParam> dense(params.begin(), first_expert), experts(first_expert, params.end());
  std::vector<Bucket> out = make_buckets(dense, bucket_size, shards);
  for (auto& b : out) b.shards = shards, b.rank = rank;
  if (experts.empty()) return out;
  const Bucket& last = out.back();
  const int64_t start = last.start + last.padded, at = last.at + last.q;
  for (Bucket b : make_buckets(experts, 0, expert_shards)) {
    b.first += dense.size(), b.last += dense.size();
    b.start += start, b.at += at;
    b.shards = expert_shards, b.rank = expert_rank, b.expert = true;
    out.push_back(b);
  }
  return out;
}

std::vector<ShardedParam> DistParams::enumerate(const ref::ModelConfig& mc, int tp, int tp_rank,
                                                const std::function<bool(const std::string&)>& keep, int ep,
                                                int ep_rank, const TpGrid& grid) {
  if (grid.kind != TpKind::OneD) return enumerate_blocks(mc, grid, grid.coords(tp_rank), keep);
  // The names and shapes of the reference's own parameter list (nothing allocated).
  const int64_t El = mc.num_local_experts / ep, e0 = El * ep_rank;  // this rank's experts
  std::vector<ShardedParam> norms, routers, sharded;
  std::vector<std::pair<ExpertKey, ShardedParam>> experts;
  ref::for_each_param_shape(mc, [&](const std::string& name, int64_t rows, int64_t cols, bool is_vector) {
    if (keep && !keep(name)) return;
    const ExpertKey ek = expert_key(name);
    if (ek.layer >= 0 && (ek.expert < e0 || ek.expert >= e0 + El)) return;  // another EP rank's
    ShardedParam p;
    p.name = name;
    p.global_rows = rows;
    p.global_cols = cols;
    p.is_norm = is_vector;
    p.is_expert = ek.layer >= 0;
    const bool router = name.ends_with("block_sparse_moe.gate.weight");
    p.replicated = is_vector || router;
    if (p.is_expert || router) {  // replicated over TP (expert TP = 1)
      if (router)
        routers.push_back(std::move(p));
      else
        experts.emplace_back(ek, std::move(p));
      return;
    }
    const bool by_cols = name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight");
    p.dim = is_vector ? ShardDim::None : by_cols ? ShardDim::Cols : ShardDim::Rows;
    if (p.dim == ShardDim::Rows) {
      PB_REQUIRE(rows % tp == 0, "tp ", tp, " does not divide the rows of ", name);
      p.row0 = rows / tp * tp_rank;
    }
    if (p.dim == ShardDim::Cols) {
      PB_REQUIRE(cols % tp == 0, "tp ", tp, " does not divide the columns of ", name);
      p.col0 = cols / tp * tp_rank;
    }
    (is_vector ? norms : sharded).push_back(std::move(p));
  });
  std::vector<ShardedParam> out = std::move(norms);
  for (auto& p : routers) out.push_back(std::move(p));
  for (auto& p : sharded) out.push_back(std::move(p));
  std::stable_sort(experts.begin(), experts.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [k, p] : experts) out.push_back(std::move(p));
  for (auto& p : out) {
    p.rows = p.dim == ShardDim::Rows ? p.global_rows / tp : p.global_rows;
    p.cols = p.dim == ShardDim::Cols ? p.global_cols / tp : p.global_cols;
  }
  return out;
}

// 2D / 2.5D (parallel/tp2d_linear.h): every matrix a (rows / q, cols / q) block, the norms
// (1, H / q) column blocks replicated over the column group (and the depth).
// 3D (parallel/tp3d_strategy.h): every matrix a (rows / q^2, cols / q) block, the norms (1, H/q)
// column blocks replicated over the (i, j) plane.
std::vector<ShardedParam> DistParams::enumerate_blocks(const ref::ModelConfig& mc, const TpGrid& grid,
                                                       const TpGrid::Coords& c,
                                                       const std::function<bool(const std::string&)>& keep) {
  const bool cube = grid.kind == TpKind::ThreeD;
  PB_REQUIRE(mc.num_local_experts == 0, "tp_kind ", cube ? "3d" : grid.kind == TpKind::TwoD ? "2d" : "2.5d",
             ": an MoE model is not available with it in this build");
  const int64_t q = grid.q, rq = cube ? q * q : q;  // a matrix's row blocks
  std::vector<ShardedParam> norms, blocks;
  ref::for_each_param_shape(mc, [&](const std::string& name, int64_t rows, int64_t cols, bool is_vector) {
    if (keep && !keep(name)) return;
    ShardedParam p;
    p.name = name;
    p.global_rows = rows, p.global_cols = cols;
    p.is_norm = p.replicated = is_vector;
    p.dim = ShardDim::Block;
    PB_REQUIRE(cols % q == 0 && (is_vector || rows % rq == 0), "tp grid side ", q, " does not divide the ", rows,
               " x ", cols, " of ", name);
    const bool embedding = name == "model.embed_tokens.weight";
    const bool second = name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight");
    int64_t rb = 0, cb = 0;  // the row block (of rq) and the column block (of q)
    if (is_vector) {
      cb = cube ? c.k : c.j;
    } else if (!cube) {  // the embedding's vocabulary over the column group; SUMMA's W: block (j, i)
      rb = embedding ? c.i : c.j, cb = embedding ? c.j : c.i;
    } else if (embedding) {  // the vocabulary over the (i, j) plane, the hidden width over k
      rb = c.i * q + c.j, cb = c.k;
    } else if (second) {  // o, down: output block k, its sub-block i; input block j (tp3d_linear.h)
      rb = c.k * q + c.i, cb = c.j;
    } else {  // q, k, v, gate, up, the LM head: output block j, its sub-block i; input block k
      rb = c.j * q + c.i, cb = c.k;
    }
    p.rows = is_vector ? rows : rows / rq, p.cols = cols / q;
    p.row0 = rb * p.rows, p.col0 = cb * p.cols;
    (is_vector ? norms : blocks).push_back(std::move(p));
  });
  for (auto& p : blocks) norms.push_back(std::move(p));
  return norms;
}

std::vector<ShardedParam> DistParams::expert_groups(const std::vector<ShardedParam>& params) {
  static const char* const kProj[] = {"w1", "w3", "w2"};
  std::vector<ShardedParam> out;
  ExpertKey prev;
  for (const auto& p : params) {
    if (!p.is_expert) continue;
    const ExpertKey k = expert_key(p.name);
    if (out.empty() || k.layer != prev.layer || k.proj != prev.proj) {
      ShardedParam g;  // (0, in) so far: the members' rows are added below
      g.name = "model.layers." + std::to_string(k.layer) + ".block_sparse_moe.local_experts." + kProj[k.proj];
      g.is_expert = true;
      g.global_rows = p.global_rows, g.global_cols = p.global_cols;
      g.cols = p.cols;
      g.offset = p.offset;
      out.push_back(g);
    }
    PB_REQUIRE(p.cols == out.back().cols && p.rows == out.back().global_rows, "experts of ", out.back().name,
               " differ in shape");
    out.back().rows += p.rows;
    prev = k;
  }
  return out;
}

}  // namespace pb
