/* The compiler as this build configures it. GCC 12.2 with -march=native on an Ice Lake
 * server (and with -march=x86-64-v4) turned the constant std::vector<int64_t>{4, 4, 0, 0},
 * built inside a lambda called through std::function, into {4, 4, 4, 4} at -O2 and -O3 (its
 * SLP vectorizer; found by test_pp_partition's bad-split cases). CMakeLists.txt turns the SLP
 * vectorizer off for GCC with PB_NATIVE; this test fails if that is undone on a compiler that
 * still has the bug. */
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <vector>

namespace {

std::vector<int64_t> seen;  // what record() was given
__attribute__((noinline)) void record(const std::vector<int64_t>& v) { seen = v; }

TEST(Toolchain, ConstantVectorsInLambdasKeepTheirValues) {
  const std::function<void()> f = [] { record(std::vector<int64_t>{4, 4, 0, 0}); };
  f();
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen[0], 4);
  EXPECT_EQ(seen[1], 4);
  EXPECT_EQ(seen[2], 0);  // 4 where miscompiled
  EXPECT_EQ(seen[3], 0);
  const auto g = [] { record(std::vector<int64_t>{4, 4, 0, 0}); };
  g();
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen[2] + seen[3], 0);
}

}  // namespace
