/* The CUDA backend's NCCL-or-MPI choice (optimized/comm/nccl_select.h) as a plain function:
 * PB_NO_NCCL's values, a build without NCCL, ranks sharing a GPU, and the one-line reasons.
 * No GPU, no MPI. */
#include <gtest/gtest.h>

#include <string>

#include "optimized/comm/nccl_select.h"

namespace pb::test {

namespace {

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST(NcclSelect, EnvironmentVariable) {
  EXPECT_FALSE(nccl_disabled_by_env(nullptr));
  EXPECT_FALSE(nccl_disabled_by_env(""));
  EXPECT_FALSE(nccl_disabled_by_env("0"));
  EXPECT_TRUE(nccl_disabled_by_env("1"));
  EXPECT_TRUE(nccl_disabled_by_env("yes"));
}

TEST(NcclSelect, UsesNcclWithOneGpuPerRank) {
  const NcclChoice c = choose_nccl(true, nullptr, 1, 1);
  EXPECT_TRUE(c.use);
  EXPECT_EQ(c.why, "");
  EXPECT_TRUE(choose_nccl(true, "0", 4, 8).use);
}

TEST(NcclSelect, EnvironmentForcesMpi) {
  const NcclChoice c = choose_nccl(true, "1", 1, 1);
  EXPECT_FALSE(c.use);
  EXPECT_TRUE(has(c.why, "PB_NO_NCCL=1") && has(c.why, "MPI")) << c.why;
  EXPECT_EQ(c.why.find('\n'), std::string::npos);  // one line
}

TEST(NcclSelect, NoNcclInTheBuild) {
  const NcclChoice c = choose_nccl(false, nullptr, 1, 1);
  EXPECT_FALSE(c.use);
  EXPECT_TRUE(has(c.why, "no NCCL")) << c.why;
}

TEST(NcclSelect, RanksSharingAGpu) {
  const NcclChoice c = choose_nccl(true, nullptr, 4, 1);
  EXPECT_FALSE(c.use);
  EXPECT_TRUE(has(c.why, "4 ranks share 1 GPU")) << c.why;
  EXPECT_FALSE(choose_nccl(true, nullptr, 1, 0).use);  // no GPU visible
}

TEST(NcclSelect, FallbackLine) {
  const std::string l = nccl_fallback_line("ncclCommInitRank: unhandled cuda error");
  EXPECT_TRUE(has(l, "NCCL setup failed (ncclCommInitRank: unhandled cuda error)") && has(l, "MPI")) << l;
  EXPECT_EQ(l.find('\n'), std::string::npos);
}

}  // namespace pb::test
