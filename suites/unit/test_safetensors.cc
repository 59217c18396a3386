/* safetensors and config.json: exact round trips, and every kind of bad file rejected
 * with a clear pb::Error instead of a crash. */
#include <cstring>
#include <filesystem>
#include <fstream>

#include "reference/io/checkpoint.h"
#include "reference/model/init.h"
#include "test_util.h"

namespace pb::test {

namespace fs = std::filesystem;

static std::string tmp(const std::string& name) {
  const auto dir = fs::temp_directory_path() / ("pb_test_st_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return (dir / name).string();
}

static ref::ModelConfig moe_config() {
  auto c = ref::ModelConfig::dense(8, 2, 1, 6, 7, 2);
  c.num_local_experts = 3;
  c.moe_layers = {0};
  c.moe_intermediate_size = 5;
  return c;
}

template <class T>
static void expect_bitwise_equal(const ref::ModelParams<T>& a, const ref::ModelParams<T>& b) {
  std::vector<const Mat<T>*> pa;
  ref::for_each_param(a, [&](const std::string&, const Mat<T>& m, bool) { pa.push_back(&m); });
  size_t i = 0;
  ref::for_each_param(b, [&](const std::string& name, const Mat<T>& m, bool) {
    ASSERT_EQ(m.rows(), pa[i]->rows()) << name;
    ASSERT_EQ(m.cols(), pa[i]->cols()) << name;
    EXPECT_EQ(std::memcmp(m.data(), pa[i]->data(), size_t(m.size()) * sizeof(T)), 0) << name;
    ++i;
  });
}

template <class T>
static void round_trip() {
  const auto cfg = moe_config();
  const auto p = ref::init_params<T>(cfg, 5);
  auto f = io::params_to_safetensors(p);
  f.metadata["format"] = "pt";
  const std::string path = tmp(std::string("rt_") + (sizeof(T) == 8 ? "f64" : "f32") + ".safetensors");
  io::write_safetensors(path, f);
  const auto back = io::read_safetensors(path);
  EXPECT_EQ(back.metadata.at("format"), "pt");
  ASSERT_EQ(back.tensors.size(), f.tensors.size());
  EXPECT_EQ(back.find("model.norm.weight")->shape, (std::vector<int64_t>{8}));
  EXPECT_EQ(back.find("model.layers.0.block_sparse_moe.experts.2.w2.weight")->shape, (std::vector<int64_t>{8, 5}));
  EXPECT_EQ(back.find("lm_head.weight")->dtype, sizeof(T) == 8 ? io::DType::F64 : io::DType::F32);
  auto q = ref::zero_params<T>(cfg);
  io::params_from_safetensors(q, back, path);
  expect_bitwise_equal(p, q);
}

TEST(Safetensors, RoundTripIsExactFloat) { round_trip<float>(); }
TEST(Safetensors, RoundTripIsExactDouble) { round_trip<double>(); }

TEST(Safetensors, IntegerTensorsRoundTrip) {
  io::SafetensorsFile f;
  std::vector<int64_t> ids{1, -2, 3, 1LL << 40, 5, 6};
  f.tensors.emplace_back("input_ids", io::make_i64({2, 3}, ids.data()));
  const auto path = tmp("ids.safetensors");
  io::write_safetensors(path, f);
  EXPECT_EQ(io::to_i64(*io::read_safetensors(path).find("input_ids"), "ids"), ids);
}

// Writes raw bytes: an 8-byte header length, the header text, then the buffer.
static std::string write_raw(const std::string& name, uint64_t n, const std::string& header, size_t buffer) {
  const auto path = tmp(name);
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << header << std::string(buffer, '\0');
  return path;
}

static void expect_error(const std::string& path, const std::string& needle) {
  try {
    io::read_safetensors(path);
    ADD_FAILURE() << path << " was accepted";
  } catch (const pb::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Safetensors, RejectsMissingAndCorruptFiles) {
  expect_error(tmp("does_not_exist.safetensors"), "cannot open");
  {
    std::ofstream(tmp("short.safetensors")) << "abc";
    expect_error(tmp("short.safetensors"), "not a safetensors file");
  }
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  expect_error(write_raw("huge_header.safetensors", 1u << 30, ok, 8), "header length");
  expect_error(write_raw("bad_json.safetensors", 10, "{not json!", 8), "corrupt safetensors header");
  expect_error(write_raw("truncated.safetensors", ok.size(), ok, 5), "outside the 5-byte buffer");
  expect_error(write_raw("trailing.safetensors", ok.size(), ok, 12), "trailing bytes");
  const std::string dtype = R"({"a":{"dtype":"C64","shape":[2],"data_offsets":[0,8]}})";
  expect_error(write_raw("dtype.safetensors", dtype.size(), dtype, 8), "unsupported dtype");
  const std::string shape = R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})";
  expect_error(write_raw("shape.safetensors", shape.size(), shape, 8), "do not match dtype and shape");
  const std::string hole =
      R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
  expect_error(write_raw("hole.safetensors", hole.size(), hole, 12), "hole");
  const std::string neg = R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})";
  expect_error(write_raw("neg.safetensors", neg.size(), neg, 4), "shape holds -1");
  const std::string noentry = R"({"a":{"dtype":"F32"}})";
  expect_error(write_raw("noentry.safetensors", noentry.size(), noentry, 0), "needs dtype, shape and data_offsets");
}

TEST(Safetensors, ParamsRejectMissingMisshapenOrUnexpectedTensors) {
  const auto cfg = moe_config();
  const auto p = ref::init_params<float>(cfg, 5);
  auto q = ref::zero_params<float>(cfg);
  auto f = io::params_to_safetensors(p);
  auto missing = f;
  missing.tensors.erase(missing.tensors.begin() + 3);
  EXPECT_THROW(io::params_from_safetensors(q, missing, "m"), pb::Error);
  auto extra = f;
  extra.tensors.push_back(f.tensors.front());
  extra.tensors.back().first = "model.layers.9.mlp.up_proj.weight";
  try {
    io::params_from_safetensors(q, extra, "x");
    ADD_FAILURE() << "extra tensor accepted";
  } catch (const pb::Error& e) {
    EXPECT_NE(std::string(e.what()).find("unexpected tensor model.layers.9"), std::string::npos) << e.what();
  }
  auto other = moe_config();
  other.hidden_size = 10;
  other.num_attention_heads = 2;
  auto r = ref::zero_params<float>(other);
  try {
    io::params_from_safetensors(r, f, "shape");
    ADD_FAILURE() << "wrong shapes accepted";
  } catch (const pb::Error& e) {
    EXPECT_NE(std::string(e.what()).find("has shape [7,8], the config needs [7,10]"), std::string::npos) << e.what();
  }
}

TEST(HfConfig, RoundTripsThroughJson) {
  auto c = moe_config();
  c.router_aux_loss_coef = 0.02;
  c.norm_topk_prob = false;
  const auto j = io::hf_config_json(c);
  EXPECT_EQ(j["architectures"][0], "MixtralForCausalLM");
  EXPECT_EQ(j["intermediate_size"], 5);  // Mixtral's field is the experts' size
  const auto back = io::model_config_from_json(j, "cfg");
  EXPECT_EQ(io::hf_config_json(back), j);
  ref::ModelConfig dense;
  EXPECT_EQ(io::hf_config_json(dense)["architectures"][0], "LlamaForCausalLM");
  EXPECT_EQ(io::hf_config_json(io::model_config_from_json(io::hf_config_json(dense), "d")), io::hf_config_json(dense));
  auto bad = io::hf_config_json(dense);
  bad["num_key_value_heads"] = 3;
  EXPECT_THROW(io::model_config_from_json(bad, "bad"), pb::Error);
  bad = io::hf_config_json(dense);
  bad["hidden_size"] = "big";
  EXPECT_THROW(io::model_config_from_json(bad, "bad"), pb::Error);
}

}  // namespace pb::test
