/* ops::copy_block on the CPU backend: the strided 2-D block copy of Ulysses context
 * parallelism (heads packed for the all-to-all, sequence rows reordered, repeated kv-head
 * gradients summed), dst[dr0 + i, dc0 + j] (+)= src[sr0 + i, sc0 + j].
 *
 * Against a plain loop over the block, bit for bit: copies and accumulations in fp32 and
 * bf16 (bf16 accumulation in fp32, rounded once: float_to_bf16 of the float sum), with
 * everything outside the block untouched; blocks that end on the last row and column of
 * both sides and a block that is the whole matrix; the same on a CPU worker stream. An
 * empty block changes nothing; blocks out of range, negative sizes or offsets, a 1-D
 * tensor and mixed dtypes are rejected with one line naming the op. */
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "optimized/kernels/ops.h"
#include "reference/common/counter_rng.h"
#include "reference/common/error.h"

namespace pb::test {

// A (R, C) CPU tensor of normal values (bf16: rounded to bf16), distinct per name.
static Tensor randn(int64_t R, int64_t C, DType dt, const std::string& name) {
  Tensor t = Tensor::empty({R, C}, MemCategory::Workspace, dt, Device::CPU);
  CounterRng rng(29, name);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const float v = float(rng.normal(uint64_t(i)));
    if (dt == DType::F32) t.f32()[i] = v;
    else t.bf16_bits()[i] = float_to_bf16(v);
  }
  return t;
}

// The raw bytes of a tensor, to compare bit for bit.
static std::vector<unsigned char> bytes(const Tensor& t) {
  std::vector<unsigned char> b(t.bytes());
  if (!b.empty()) std::memcpy(b.data(), t.raw(), b.size());
  return b;
}

// The block of the op as a plain loop, on a copy of dst.
static Tensor expected(const Tensor& dst, const Tensor& src, int64_t rows, int64_t cols, int64_t sr0, int64_t sc0,
                       int64_t dr0, int64_t dc0, bool accumulate) {
  Tensor e = Tensor::empty(dst.shape(), MemCategory::Workspace, dst.dtype(), Device::CPU);
  ops::copy(e, dst);
  const int64_t Cs = src.cols(), Cd = dst.cols();
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      const int64_t s = (sr0 + i) * Cs + sc0 + j, d = (dr0 + i) * Cd + dc0 + j;
      if (dst.dtype() == DType::F32) {
        e.f32()[d] = accumulate ? e.f32()[d] + src.f32()[s] : src.f32()[s];
      } else {
        const uint16_t x = src.bf16_bits()[s];
        e.bf16_bits()[d] = accumulate ? float_to_bf16(bf16_to_float(e.bf16_bits()[d]) + bf16_to_float(x)) : x;
      }
    }
  return e;
}

struct Block {
  int64_t Rs, Cs, Rd, Cd;                   // src (Rs, Cs), dst (Rd, Cd)
  int64_t rows, cols, sr0, sc0, dr0, dc0;  // the block
};

// Interior, the last rows / columns of both sides, the whole matrix, one element, one row,
// one column.
static const std::vector<Block> kBlocks = {
    {5, 7, 6, 9, 3, 4, 1, 2, 2, 5},  // inside both
    {5, 7, 6, 9, 2, 3, 3, 4, 4, 6},  // ends on the last row and column of src and dst
    {4, 6, 4, 6, 4, 6, 0, 0, 0, 0},  // the whole matrix
    {3, 3, 2, 5, 1, 1, 2, 2, 1, 4},  // one element, the last of src and dst
    {6, 8, 3, 8, 1, 8, 5, 0, 0, 0},  // one full row: src's last into dst's first
    {4, 5, 4, 3, 4, 1, 0, 4, 0, 2},  // one full column: src's last into dst's last
};

static void check_blocks(DType dt, bool accumulate, const Stream& stream = {}) {
  int k = 0;
  for (const Block& b : kBlocks) {
    const std::string tag = std::string(dtype_name(dt)) + (accumulate ? " acc " : " copy ") + std::to_string(k++);
    const Tensor src = randn(b.Rs, b.Cs, dt, "src " + tag);
    Tensor dst = randn(b.Rd, b.Cd, dt, "dst " + tag);
    const Tensor want = expected(dst, src, b.rows, b.cols, b.sr0, b.sc0, b.dr0, b.dc0, accumulate);
    ops::copy_block(dst, src, b.rows, b.cols, b.sr0, b.sc0, b.dr0, b.dc0, accumulate, stream);
    stream.resolve(Device::CPU).synchronize();  // a worker stream: its queued copy
    EXPECT_EQ(bytes(dst), bytes(want)) << tag;
  }
}

TEST(CopyBlock, CopyF32) { check_blocks(DType::F32, false); }
TEST(CopyBlock, AccumulateF32) { check_blocks(DType::F32, true); }
TEST(CopyBlock, CopyBF16) { check_blocks(DType::BF16, false); }
TEST(CopyBlock, AccumulateBF16) { check_blocks(DType::BF16, true); }

TEST(CopyBlock, WorkerStream) {
  const Stream w = Stream::create(Device::CPU);
  check_blocks(DType::F32, true, w);
  check_blocks(DType::BF16, false, w);
}

// Repeated accumulation into one block: the sum of a kv head's gradient over its query
// heads (bf16: rounded after every add, as the loop does).
TEST(CopyBlock, AccumulateRepeatedBF16) {
  const Tensor src = randn(4, 12, DType::BF16, "heads");  // 3 query heads of 4 columns
  Tensor dst = Tensor::zeros({4, 4}, MemCategory::Workspace, DType::BF16, Device::CPU);
  Tensor want = Tensor::zeros({4, 4}, MemCategory::Workspace, DType::BF16, Device::CPU);
  for (int64_t h = 0; h < 3; ++h) {
    want = expected(want, src, 4, 4, 0, 4 * h, 0, 0, true);
    ops::copy_block(dst, src, 4, 4, 0, 4 * h, 0, 0, true);
  }
  EXPECT_EQ(bytes(dst), bytes(want));
}

TEST(CopyBlock, EmptyBlockChangesNothing) {
  const Tensor src = randn(3, 4, DType::F32, "src empty");
  Tensor dst = randn(5, 6, DType::F32, "dst empty");
  const std::vector<unsigned char> before = bytes(dst);
  ops::copy_block(dst, src, 0, 4, 0, 0, 1, 1);
  ops::copy_block(dst, src, 3, 0, 0, 0, 1, 1, true);
  ops::copy_block(dst, src, 0, 0, 3, 4, 5, 6);  // an empty block may sit just past the end
  EXPECT_EQ(bytes(dst), before);
}

// The message of the pb::Error that f throws ("" if none).
static std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(CopyBlock, RejectsWithOneLine) {
  const Tensor src = randn(4, 5, DType::F32, "src bad");
  Tensor dst = randn(6, 3, DType::F32, "dst bad");
  Tensor dst_bf16 = randn(6, 3, DType::BF16, "dst bad bf16");
  Tensor flat = Tensor::zeros({12}, MemCategory::Workspace, DType::F32, Device::CPU);
  const std::vector<unsigned char> before = bytes(dst);
  const std::vector<std::pair<std::string, std::function<void()>>> bad = {
      {"rows past src", [&] { ops::copy_block(dst, src, 2, 2, 3, 0, 0, 0); }},
      {"cols past src", [&] { ops::copy_block(dst, src, 2, 2, 0, 4, 0, 0); }},
      {"rows past dst", [&] { ops::copy_block(dst, src, 2, 2, 0, 0, 5, 0); }},
      {"cols past dst", [&] { ops::copy_block(dst, src, 2, 3, 0, 0, 0, 1, true); }},
      {"negative offset", [&] { ops::copy_block(dst, src, 1, 1, -1, 0, 0, 0); }},
      {"negative rows", [&] { ops::copy_block(dst, src, -1, 1, 1, 0, 1, 0); }},
      {"1-D dst", [&] { ops::copy_block(flat, src, 1, 1, 0, 0, 0, 0); }},
      {"mixed dtypes", [&] { ops::copy_block(dst_bf16, src, 1, 1, 0, 0, 0, 0); }},
      {"mixed dtypes, empty", [&] { ops::copy_block(dst_bf16, src, 0, 0, 0, 0, 0, 0); }},
  };
  for (const auto& [what, f] : bad) {
    const std::string msg = error_of(f);
    EXPECT_NE(msg.find("copy_block"), std::string::npos) << what << ": " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << what << ": one line: " << msg;
  }
  EXPECT_NE(error_of(bad.back().second).find("bf16"), std::string::npos);
  EXPECT_EQ(bytes(dst), before);
}

}  // namespace pb::test
