/* The shape checks shared by the kernel backends (optimized/kernels/shape_checks.h) on
 * host tensors: a matching set of operands passes, each mismatched operand gives one
 * error line naming the op and that operand; the GEMM edge plans (k = 0: C = beta C) and
 * the cross-device copy routes. No GPU needed. */
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "optimized/kernels/shape_checks.h"
#include "error_of.h"

namespace pb::test {

namespace {

Tensor host(std::vector<int64_t> shape, DType dt = DType::F32) {
  return Tensor::empty(std::move(shape), MemCategory::Workspace, dt, Device::CPU);
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST(ShapeChecks, AttentionAcceptsMatchingOperands) {
  const ops::AttnShape s{2, 5, 4, 2, 8};  // B S A G D
  Tensor q = host({10, 32}), k = host({10, 16}), v = host({10, 16}), o = host({10, 32}), lse = host({8, 5});
  Tensor dq = host({10, 32}), dk = host({10, 16}), dv = host({10, 16}), dout = host({10, 32});
  EXPECT_EQ(error_of([&] { checks::attention_inputs("attn", s, q, k, v); }), "");
  EXPECT_EQ(error_of([&] { checks::attention_forward_outputs("attn", s, o, lse, q); }), "");
  EXPECT_EQ(error_of([&] { checks::attention_backward_operands("attn", s, dq, dk, dv, dout, q, k, o, lse); }), "");
}

TEST(ShapeChecks, AttentionRefusesWrongOutputs) {
  const ops::AttnShape s{2, 5, 4, 2, 8};
  Tensor q = host({10, 32}), k = host({10, 16}), v = host({10, 16});
  Tensor small_o = host({10, 16}), lse = host({8, 5}), short_lse = host({8, 4});
  const std::string e1 = error_of([&] { checks::attention_forward_outputs("attn fwd", s, small_o, lse, q); });
  EXPECT_TRUE(has(e1, "attn fwd") && has(e1, "[10, 16]")) << e1;
  const std::string e2 = error_of([&] { checks::attention_forward_outputs("attn fwd", s, q, short_lse, q); });
  EXPECT_TRUE(has(e2, "lse")) << e2;
  Tensor bf16_lse = host({8, 5}, DType::BF16);
  EXPECT_NE(error_of([&] { checks::attention_forward_outputs("attn fwd", s, q, bf16_lse, q); }), "");
  Tensor dk_wrong = host({10, 32});
  const std::string e3 =
      error_of([&] { checks::attention_backward_operands("attn bwd", s, q, dk_wrong, k, q, q, k, q, lse); });
  EXPECT_TRUE(has(e3, "attn bwd") && has(e3, "dk")) << e3;
}

TEST(ShapeChecks, AttentionRefusesWrongInputs) {
  Tensor q = host({10, 32}), k = host({10, 16}), v = host({10, 16});
  EXPECT_NE(error_of([&] { checks::attention_inputs("attn", ops::AttnShape{2, 5, 4, 3, 8}, q, k, v); }), "");  // A % G
  EXPECT_NE(error_of([&] { checks::attention_inputs("attn", ops::AttnShape{2, 6, 4, 2, 8}, q, k, v); }), "");  // S
  ops::AttnShape pos{2, 5, 4, 2, 8};
  pos.qpos = {0, 1, 2};  // 3 positions for S = 5
  EXPECT_NE(error_of([&] { checks::attention_inputs("attn", pos, q, k, v); }), "");
  Tensor v_short = host({9, 16});
  EXPECT_NE(error_of([&] { checks::attention_inputs("attn", ops::AttnShape{2, 5, 4, 2, 8}, q, k, v_short); }), "");
}

TEST(ShapeChecks, GroupedGemmOutputs) {
  Tensor x = host({7, 3}), w = host({2, 3, 5}), y = host({7, 5});
  EXPECT_EQ(error_of([&] { checks::grouped_gemm_forward_outputs("gg", y, x, w); }), "");
  Tensor y_bad = host({7, 4});
  const std::string e = error_of([&] { checks::grouped_gemm_forward_outputs("gg", y_bad, x, w); });
  EXPECT_TRUE(has(e, "gg") && has(e, "[7, 4]")) << e;
  Tensor dx = host({7, 3}), dw = host({2, 3, 5});
  EXPECT_EQ(error_of([&] { checks::grouped_gemm_backward_operands("gg", dx, dw, y, x, w); }), "");
  Tensor dw_bad = host({1, 3, 5});
  EXPECT_NE(error_of([&] { checks::grouped_gemm_backward_operands("gg", dx, dw_bad, y, x, w); }), "");
  EXPECT_NE(error_of([&] { checks::grouped_gemm_backward_operands("gg", dx, dw, y_bad, x, w); }), "");  // dy
}

TEST(ShapeChecks, CrossEntropyPieces) {
  Tensor logits = host({6, 11}), mx = host({6}), se = host({6}), tl = host({6}), dl = host({6, 11});
  EXPECT_EQ(error_of([&] { checks::ce_row_stats("ce", logits, {&mx, &se}); }), "");
  EXPECT_EQ(error_of([&] { checks::ce_backward_operands("ce", dl, logits, mx, se, 6); }), "");
  EXPECT_EQ(error_of([&] { checks::ce_loss_operands("ce", mx, se, tl); }), "");
  Tensor mx5 = host({5});
  EXPECT_NE(error_of([&] { checks::ce_row_stats("ce", logits, {&mx5}); }), "");
  EXPECT_NE(error_of([&] { checks::ce_labels("ce", logits, 5); }), "");
  EXPECT_NE(error_of([&] { checks::ce_backward_operands("ce", mx, logits, mx, se, 6); }), "");  // dlogits
  EXPECT_NE(error_of([&] { checks::ce_loss_operands("ce", mx, mx5, tl); }), "");
  Tensor mx_bf16 = host({6}, DType::BF16);
  EXPECT_NE(error_of([&] { checks::ce_row_stats("ce", logits, {&mx_bf16}); }), "");
}

TEST(ShapeChecks, AdamwEmbeddingRope) {
  Tensor w = host({4, 3}), g = host({12}), m = host({4, 3}), v = host({4, 3}), v_bad = host({11});
  EXPECT_EQ(error_of([&] { checks::adamw_operands("adamw", w, g, m, v); }), "");
  EXPECT_NE(error_of([&] { checks::adamw_operands("adamw", w, g, m, v_bad); }), "");
  Tensor table = host({9, 4}), dy = host({5, 4}), dy_bad = host({5, 3});
  EXPECT_EQ(error_of([&] { checks::embedding_backward_operands("emb", table, dy, 5); }), "");
  EXPECT_NE(error_of([&] { checks::embedding_backward_operands("emb", table, dy_bad, 5); }), "");
  EXPECT_NE(error_of([&] { checks::embedding_backward_operands("emb", table, dy, 6); }), "");
  Tensor x = host({5, 16}), y = host({5, 16});
  EXPECT_EQ(error_of([&] { checks::rope_operands("rope", y, x, 5, 8); }), "");
  EXPECT_NE(error_of([&] { checks::rope_operands("rope", y, x, 4, 8); }), "");   // too few positions
  EXPECT_NE(error_of([&] { checks::rope_operands("rope", y, x, 5, 6); }), "");   // 16 % 6
  EXPECT_NE(error_of([&] { checks::rope_operands("rope", y, x, 5, 3); }), "");   // odd head dim
  EXPECT_NE(error_of([&] { checks::rope_operands("rope", dy, x, 5, 8); }), "");  // y of another size
}

TEST(ShapeChecks, GemmPlanHandlesZeroDimensions) {
  using checks::GemmPlan;
  EXPECT_EQ(checks::gemm_plan(3, 4, 5, 0.0f), GemmPlan::Run);
  EXPECT_EQ(checks::gemm_plan(3, 4, 5, 1.0f), GemmPlan::Run);
  EXPECT_EQ(checks::gemm_plan(3, 4, 0, 0.0f), GemmPlan::ZeroC);    // C = 0 C: zeros
  EXPECT_EQ(checks::gemm_plan(3, 4, 0, 1.0f), GemmPlan::Nothing);  // C += nothing
  EXPECT_EQ(checks::gemm_plan(0, 4, 5, 0.0f), GemmPlan::Nothing);
  EXPECT_EQ(checks::gemm_plan(3, 0, 0, 0.0f), GemmPlan::Nothing);
  EXPECT_NE(error_of([] { checks::gemm_plan(3, 4, -1, 0.0f); }), "");
  EXPECT_NE(error_of([] { checks::gemm_plan(3, 4, 5, 0.5f); }), "");
}

TEST(ShapeChecks, BlasDims) {
  EXPECT_EQ(error_of([] { checks::blas_dims("gemm", {0, 1, 2147483647}); }), "");
  const std::string e = error_of([] { checks::blas_dims("gemm", {4, 2147483648LL}); });
  EXPECT_TRUE(has(e, "gemm") && has(e, "2147483648")) << e;
}

TEST(ShapeChecks, CopyRoutes) {
  using checks::CopyRoute;
  EXPECT_EQ(checks::copy_route(Device::CPU, DType::F32, Device::CPU, DType::BF16), CopyRoute::SameDevice);
  EXPECT_EQ(checks::copy_route(Device::CUDA, DType::BF16, Device::CUDA, DType::F32), CopyRoute::SameDevice);
  EXPECT_EQ(checks::copy_route(Device::CUDA, DType::F32, Device::CPU, DType::F32), CopyRoute::Transfer);
  EXPECT_EQ(checks::copy_route(Device::CPU, DType::BF16, Device::CUDA, DType::BF16), CopyRoute::Transfer);
  EXPECT_EQ(checks::copy_route(Device::CPU, DType::F32, Device::CUDA, DType::BF16), CopyRoute::Refused);
  EXPECT_EQ(checks::copy_route(Device::CUDA, DType::BF16, Device::CPU, DType::F32), CopyRoute::Refused);
}

TEST(ShapeChecks, SameDevice) {
  Tensor a = host({2}), b = host({3});
  EXPECT_EQ(error_of([&] { checks::same_device("op", Device::CPU, {&a, &b}); }), "");
  const std::string e = error_of([&] { checks::same_device("cast (cuda)", Device::CUDA, {&a}); });
  EXPECT_TRUE(has(e, "cast (cuda)") && has(e, "is on cpu")) << e;
}

}  // namespace pb::test
