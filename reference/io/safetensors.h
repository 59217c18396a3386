/* Reading and writing the safetensors format (https://github.com/huggingface/safetensors):
 *
 *   [8 bytes: N, little-endian u64][N bytes: JSON header][byte buffer]
 *   header = {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *             "__metadata__": {"key": "value", ...}}
 * Offsets are relative to the start of the byte buffer; tensors are row-major, little-
 * endian, and tile the buffer without holes. Every malformed file gives pb::Error naming
 * the file and the first problem found.
 */
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace pb::io {

enum class DType { F64, F32, BF16, I64, I32 };

const char* dtype_name(DType d);
size_t dtype_size(DType d);

struct TensorData {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;  // row-major, little-endian

  int64_t numel() const;
};

struct SafetensorsFile {
  std::vector<std::pair<std::string, TensorData>> tensors;  // in file order
  std::map<std::string, std::string> metadata;

  const TensorData* find(const std::string& name) const;
};

void write_safetensors(const std::string& path, const SafetensorsFile& file);
SafetensorsFile read_safetensors(const std::string& path);

// Typed views and conversions.
TensorData make_f64(std::vector<int64_t> shape, const double* data);
TensorData make_f32(std::vector<int64_t> shape, const float* data);
TensorData make_i64(std::vector<int64_t> shape, const int64_t* data);
// Converts F64/F32/BF16 to double, I64/I32 to int64_t; throws on a type that cannot convert.
std::vector<double> to_f64(const TensorData& t, const std::string& what);
std::vector<int64_t> to_i64(const TensorData& t, const std::string& what);

}  // namespace pb::io
