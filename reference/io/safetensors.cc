/* safetensors reader and writer; see safetensors.h for the format. */
#include "reference/io/safetensors.h"

#include "reference/io/atomic_file.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "reference/common/error.h"

static_assert(std::endian::native == std::endian::little, "parabench assumes a little-endian host");

namespace pb::io {

using nlohmann::json;

const char* dtype_name(DType d) {
  switch (d) {
    case DType::F64: return "F64";
    case DType::F32: return "F32";
    case DType::BF16: return "BF16";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
  }
  return "?";
}

size_t dtype_size(DType d) {
  switch (d) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::BF16: return 2;
  }
  return 0;
}

static bool parse_dtype(const std::string& s, DType& d) {
  for (DType c : {DType::F64, DType::F32, DType::BF16, DType::I64, DType::I32})
    if (s == dtype_name(c)) {
      d = c;
      return true;
    }
  return false;
}

int64_t TensorData::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

const TensorData* SafetensorsFile::find(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return &t;
  return nullptr;
}

void write_safetensors(const std::string& path, const SafetensorsFile& file) {
  json header = json::object();
  uint64_t offset = 0;
  for (const auto& [name, t] : file.tensors) {
    PB_REQUIRE(t.bytes.size() == size_t(t.numel()) * dtype_size(t.dtype), "safetensors: tensor ", name,
               " has ", t.bytes.size(), " bytes for its shape");
    header[name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  if (!file.metadata.empty()) header["__metadata__"] = file.metadata;
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // align the buffer to 8 bytes
  const uint64_t n = text.size();
  std::string bytes(reinterpret_cast<const char*>(&n), 8);  // header length, little endian
  bytes.reserve(8 + n + offset);
  bytes += text;
  for (const auto& [name, t] : file.tensors) bytes.append(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size());
  write_file_atomic(path, bytes);
}

SafetensorsFile read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  PB_REQUIRE(in.good(), "cannot open safetensors file ", path);
  const uint64_t size = uint64_t(in.tellg());
  in.seekg(0);
  PB_REQUIRE(size >= 8, path, ": not a safetensors file (", size, " bytes, shorter than the 8-byte header length)");
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  PB_REQUIRE(n <= size - 8, path, ": corrupt safetensors file (header length ", n, " exceeds file size ", size, ")");
  std::string text(n, '\0');
  in.read(text.data(), std::streamsize(n));
  json header;
  try {
    header = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(path + ": corrupt safetensors header (" + std::string(e.what()) + ")");
  }
  PB_REQUIRE(header.is_object(), path, ": corrupt safetensors header (not a JSON object)");
  const uint64_t buffer = size - 8 - n;
  SafetensorsFile file;
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& e = it.value();
    if (name == "__metadata__") {
      PB_REQUIRE(e.is_object(), path, ": __metadata__ is not an object");
      for (auto m = e.begin(); m != e.end(); ++m) {
        PB_REQUIRE(m.value().is_string(), path, ": __metadata__ value of ", m.key(), " is not a string");
        file.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto bad = [&](const std::string& why) { return Error(path + ": tensor " + name + ": " + why); };
    if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets"))
      throw bad("entry needs dtype, shape and data_offsets");
    TensorData t;
    if (!e["dtype"].is_string() || !parse_dtype(e["dtype"].get<std::string>(), t.dtype))
      throw bad("unsupported dtype " + e["dtype"].dump());
    if (!e["shape"].is_array()) throw bad("shape is not an array");
    for (const auto& d : e["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) throw bad("shape holds " + d.dump());
      t.shape.push_back(d.get<int64_t>());
    }
    const json& off = e["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      throw bad("data_offsets must be two non-negative integers");
    const uint64_t b = off[0].get<uint64_t>(), f = off[1].get<uint64_t>();
    if (b > f || f > buffer) throw bad("data_offsets [" + std::to_string(b) + ", " + std::to_string(f) +
                                       "] outside the " + std::to_string(buffer) + "-byte buffer (truncated file?)");
    if (f - b != uint64_t(t.numel()) * dtype_size(t.dtype)) throw bad("data_offsets do not match dtype and shape");
    t.bytes.resize(f - b);
    in.seekg(std::streamoff(8 + n + b));
    in.read(reinterpret_cast<char*>(t.bytes.data()), std::streamsize(f - b));
    PB_REQUIRE(in.good(), path, ": read error in tensor ", name);
    spans.push_back({b, f});
    file.tensors.emplace_back(name, std::move(t));
  }
  // The spec requires the tensors to tile the buffer: no overlap, no holes.
  std::sort(spans.begin(), spans.end());
  uint64_t end = 0;
  for (const auto& [b, f] : spans) {
    PB_REQUIRE(b == end, path, ": corrupt safetensors file (tensor data overlaps or leaves a hole at byte ", end, ")");
    end = f;
  }
  PB_REQUIRE(end == buffer, path, ": corrupt safetensors file (", buffer - end, " trailing bytes)");
  return file;
}

template <class S>
static TensorData make(DType d, std::vector<int64_t> shape, const S* data) {
  TensorData t;
  t.dtype = d;
  t.shape = std::move(shape);
  t.bytes.resize(size_t(t.numel()) * sizeof(S));
  if (!t.bytes.empty()) std::memcpy(t.bytes.data(), data, t.bytes.size());
  return t;
}

TensorData make_f64(std::vector<int64_t> shape, const double* data) { return make(DType::F64, std::move(shape), data); }
TensorData make_f32(std::vector<int64_t> shape, const float* data) { return make(DType::F32, std::move(shape), data); }
TensorData make_i64(std::vector<int64_t> shape, const int64_t* data) { return make(DType::I64, std::move(shape), data); }

template <class S>
static S load(const uint8_t* p) {
  S v;
  std::memcpy(&v, p, sizeof(S));
  return v;
}

std::vector<double> to_f64(const TensorData& t, const std::string& what) {
  std::vector<double> out(size_t(t.numel()));
  const uint8_t* p = t.bytes.data();
  for (size_t i = 0; i < out.size(); ++i) switch (t.dtype) {
      case DType::F64: out[i] = load<double>(p + 8 * i); break;
      case DType::F32: out[i] = load<float>(p + 4 * i); break;
      case DType::BF16: out[i] = std::bit_cast<float>(uint32_t(load<uint16_t>(p + 2 * i)) << 16); break;
      default: throw Error(what + ": expected a floating-point tensor, found " + dtype_name(t.dtype));
    }
  return out;
}

std::vector<int64_t> to_i64(const TensorData& t, const std::string& what) {
  std::vector<int64_t> out(size_t(t.numel()));
  const uint8_t* p = t.bytes.data();
  for (size_t i = 0; i < out.size(); ++i) switch (t.dtype) {
      case DType::I64: out[i] = load<int64_t>(p + 8 * i); break;
      case DType::I32: out[i] = load<int32_t>(p + 4 * i); break;
      default: throw Error(what + ": expected an integer tensor, found " + dtype_name(t.dtype));
    }
  return out;
}

}  // namespace pb::io
