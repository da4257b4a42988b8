#include "worker/convert/convert.h"

#include <c10/util/Half.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "worker/gguf/ggml_types.h"
#include "worker/gguf/gguf_writer.h"

namespace llorch {
namespace {

constexpr int64_t kQ8Block = 32;

// ggml's reference Q8_0 rounding (quantize_row_q8_0_ref): per block of 32,
// d = amax / 127 stored as F16, q = round(x / d).
void QuantizeRowQ8_0(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / kQ8Block; ++b) {
    const float* block = x + b * kQ8Block;
    float amax = 0;
    for (int64_t i = 0; i < kQ8Block; ++i) amax = std::max(amax, std::fabs(block[i]));
    const float d = amax / 127.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    const uint16_t d16 = c10::Half(d).x;
    std::memcpy(out, &d16, 2);
    for (int64_t i = 0; i < kQ8Block; ++i) {
      out[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(std::roundf(block[i] * id)));
    }
    out += 2 + kQ8Block;
  }
}

}  // namespace

absl::StatusOr<ConvertType> ParseConvertType(const std::string& name) {
  if (name == "f32") return ConvertType::kF32;
  if (name == "f16") return ConvertType::kF16;
  if (name == "q8_0") return ConvertType::kQ8_0;
  return absl::InvalidArgumentError(absl::StrCat("--type must be f32, f16 or q8_0, got ", name));
}

absl::Status ConvertToGguf(const GgufFile& source, ConvertType type, const std::string& out_path) {
  std::map<std::string, GgufValue> metadata;
  for (const auto& [key, value] : source.metadata()) {
    if (key.rfind("llorch.", 0) != 0) metadata[key] = value;  // in-memory keys stay behind
  }
  const int64_t file_type = type == ConvertType::kF32 ? 0 : type == ConvertType::kF16 ? 1 : 7;
  metadata["general.file_type"] = GgufInt(GgufValueType::kUint32, file_type);  // llama_ftype
  metadata["general.quantization_version"] = GgufInt(GgufValueType::kUint32, 2);

  std::vector<GgufTensorInfo> tensors;
  std::vector<std::unique_ptr<std::vector<uint8_t>>> buffers;
  for (const GgufTensorInfo& in : source.tensors()) {
    const int64_t n = in.num_elements();
    std::vector<float> values(n);
    if (absl::Status s = DequantizeToF32(in.type, in.data, n, values.data()); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(source.path(), ": tensor ", in.name, ": ",
                                                     s.message()));
    }
    GgufTensorInfo out = in;
    ConvertType target = in.shape.size() == 2 ? type : ConvertType::kF32;
    if (target == ConvertType::kQ8_0 && in.shape[0] % kQ8Block != 0) target = ConvertType::kF16;
    auto buffer = std::make_unique<std::vector<uint8_t>>();
    switch (target) {
      case ConvertType::kF32:
        out.type = GgmlType::kF32;
        buffer->resize(n * sizeof(float));
        std::memcpy(buffer->data(), values.data(), buffer->size());
        break;
      case ConvertType::kF16:
        out.type = GgmlType::kF16;
        buffer->resize(n * 2);
        for (int64_t i = 0; i < n; ++i) {
          const uint16_t bits = c10::Half(values[i]).x;
          std::memcpy(buffer->data() + 2 * i, &bits, 2);
        }
        break;
      case ConvertType::kQ8_0: {
        out.type = GgmlType::kQ8_0;
        const int64_t row = in.shape[0], rows = n / row;
        const size_t row_bytes = row / kQ8Block * (2 + kQ8Block);
        buffer->resize(rows * row_bytes);
        for (int64_t r = 0; r < rows; ++r) {
          QuantizeRowQ8_0(values.data() + r * row, row, buffer->data() + r * row_bytes);
        }
        break;
      }
    }
    out.data = buffer->data();
    out.num_bytes = buffer->size();
    tensors.push_back(out);
    buffers.push_back(std::move(buffer));
  }
  return WriteGguf(out_path, metadata, tensors);
}

}  // namespace llorch
