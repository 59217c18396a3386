/* TeraPipe (model/attention_terapipe.h, schedule terapipe) against the reference on 2 and 4
 * ranks: each micro-batch's sequences in K token slices through the pipeline, GPipe's order
 * over the units, the K/V of earlier slices kept and the gradients of the later slices'
 * attention accumulated into them.
 *   - the loss, every step-1 gradient and every final parameter equal the reference's
 *     (fp32 rule: TeraPipe is exact, only the sums run in another order), for K = 1, 2, 4, 8,
 *     alone and with tp2 + sp, dp2 and an uneven split;
 *   - every rank's communication equals the analytic model exactly (K times the point-to-point
 *     messages, each 1/K of a micro-batch's);
 *   - every memory category of every rank exactly as predicted, the K/V cache and the
 *     accumulated gradients included;
 *   - each stage runs m K forwards and backwards, the backwards of a micro-batch in reverse
 *     slice order;
 *   - bad input (slices not dividing S, CP, bf16, recompute) gives one line. */
#include <gtest/gtest.h>
#include <mpi.h>

#include <map>

#include "harness/runner.h"
#include "case_expect.h"
#include "mpi_test_util.h"
#include "reference/common/error.h"

namespace pb::test {

using harness::Case;

static Case tera_case(const std::string& name, int64_t L, int pp, int64_t m, int K, int tp = 1, int dp = 1) {
  Case c = small_case(name, ref::ModelConfig::dense(32, 8, 4, 48, 64, L), {}, dp, tp, m);
  c.layout.pp = pp;
  c.schedule = "terapipe";
  c.terapipe_slices = K;
  c.train.steps = 2;  // (small_case's S = 8: slices of 8, 4, 2 and 1 tokens)
  return c;
}

static std::vector<Case> cases_for(int world) {
  std::vector<Case> all = {
      tera_case("pp2_terapipe_k1", 2, 2, 2, 1),
      tera_case("pp2_terapipe_k2", 2, 2, 2, 2),
      tera_case("pp2_terapipe_k4", 4, 2, 1, 4),
      tera_case("pp2_terapipe_k8", 2, 2, 2, 8),  // one token per slice
      tera_case("pp4_terapipe_k4", 4, 4, 2, 4),
      tera_case("pp2_tp2_sp_terapipe_k4", 2, 2, 2, 4, 2),
      tera_case("pp2_dp2_terapipe_k2", 2, 2, 2, 2, 1, 2),
  };
  Case split = tera_case("pp2_terapipe_k2_split13", 4, 2, 2, 2);
  split.pp_layers = {1, 3};
  all.push_back(split);
  return cases_of_world(all, world);
}

TEST(TeraPipe, EqualsTheReferenceWithExactCommAndMemory) {
  const auto cases = cases_for(world_size());
  if (cases.empty()) GTEST_SKIP() << "no TeraPipe case for " << world_size() << " rank(s)";
  run_exact(cases, world_rank(), [](const Case& c, const nlohmann::json& r) {
    // The measured timeline: m K forwards and backwards per stage; backwards of a micro-batch
    // from its last slice to its first.
    const int64_t K = c.terapipe_slices, m = c.train.num_micro_batches;
    std::map<int, std::vector<int>> backwards;  // stage -> units in the order their B ran
    std::map<std::pair<int, char>, int> count;
    for (const auto& e : r["pipeline"]["trace"]["traceEvents"]) {
      if (e.value("ph", "") != "X") continue;
      const std::string name = e["name"];
      const int unit = std::stoi(name.substr(1, name.find('.') - 1));
      count[{e["tid"].get<int>(), name[0]}]++;
      if (name[0] == 'B') backwards[e["tid"].get<int>()].push_back(unit);
    }
    for (int st = 0; st < c.layout.pp; ++st) {
      EXPECT_EQ((count[{st, 'F'}]), m * K) << st;
      EXPECT_EQ((count[{st, 'B'}]), m * K) << st;
      std::map<int, int> last_slice;  // micro-batch -> the slice of its previous backward
      for (const int u : backwards[st]) {
        const int mb = int(u / K), i = int(u % K);
        const int want = last_slice.count(mb) ? last_slice[mb] - 1 : int(K) - 1;  // K-1 first, then down
        EXPECT_EQ(i, want) << "stage " << st << " unit " << u;
        last_slice[mb] = i;
      }
    }
  });
}

TEST(TeraPipe, BadInputIsRejectedWithOneLine) {
  if (world_rank() != 0) GTEST_SKIP() << "validation only, on rank 0";
  expect_invalid(tera_case("tera_k3", 2, 2, 2, 3), "terapipe_slices 3 does not divide seq_length 8");
  Case cp = tera_case("tera_cp", 2, 2, 2, 2);
  cp.layout.cp = 2;
  expect_invalid(cp, "not with cp > 1");
  Case bf = tera_case("tera_bf16", 2, 2, 2, 2);
  bf.dtype = "bf16";
  expect_invalid(bf, "dtype bf16 is not available with it");
  Case rc = tera_case("tera_recompute", 2, 2, 2, 2);
  rc.features = {"recompute_full"};
  expect_invalid(rc, "not with recompute_full");
  Case sp = tera_case("tera_sp_rows", 2, 2, 1, 8, 4);  // 1 x 1 token rows over tp 4
  sp.train.micro_batch_size = 1;
  expect_invalid(sp, "do not split over tp 4 under sp");
  Case other = tera_case("f1b_slices", 2, 2, 2, 2);
  other.schedule = "1f1b";
  expect_invalid(other, "are for terapipe's token slices");
}

}  // namespace pb::test
