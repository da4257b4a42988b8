#include "worker/gguf/gguf_writer.h"

#include <cstdio>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"

namespace llorch {
namespace {

class Out {
 public:
  explicit Out(FILE* file) : file_(file) {}
  bool ok() const { return ok_; }
  uint64_t written() const { return written_; }
  void Bytes(const void* data, size_t n) {
    if (ok_ && n > 0 && std::fwrite(data, 1, n, file_) != n) ok_ = false;
    written_ += n;
  }
  template <typename T>
  void Pod(T value) { Bytes(&value, sizeof(value)); }
  void String(const std::string& s) {
    Pod<uint64_t>(s.size());
    Bytes(s.data(), s.size());
  }
  void PadTo(uint64_t alignment) {
    static const char zeros[64] = {0};
    while (written_ % alignment != 0) {
      Bytes(zeros, std::min<uint64_t>(sizeof(zeros), alignment - written_ % alignment));
    }
  }

 private:
  FILE* file_;
  bool ok_ = true;
  uint64_t written_ = 0;
};

// A scalar or string of `type`, from the widened fields of `value`.
void WriteScalar(Out& out, GgufValueType type, const GgufValue& value) {
  switch (type) {
    case GgufValueType::kUint8: out.Pod<uint8_t>(value.u); break;
    case GgufValueType::kInt8: out.Pod<int8_t>(value.i); break;
    case GgufValueType::kUint16: out.Pod<uint16_t>(value.u); break;
    case GgufValueType::kInt16: out.Pod<int16_t>(value.i); break;
    case GgufValueType::kUint32: out.Pod<uint32_t>(value.u); break;
    case GgufValueType::kInt32: out.Pod<int32_t>(value.i); break;
    case GgufValueType::kFloat32: out.Pod<float>(static_cast<float>(value.f)); break;
    case GgufValueType::kBool: out.Pod<uint8_t>(value.u != 0); break;
    case GgufValueType::kString: out.String(value.s); break;
    case GgufValueType::kUint64: out.Pod<uint64_t>(value.u); break;
    case GgufValueType::kInt64: out.Pod<int64_t>(value.i); break;
    case GgufValueType::kFloat64: out.Pod<double>(value.f); break;
    case GgufValueType::kArray: break;  // not a scalar
  }
}

}  // namespace

absl::Status WriteGguf(const std::string& path, const std::map<std::string, GgufValue>& metadata,
                       const std::vector<GgufTensorInfo>& tensors) {
  uint64_t alignment = 32;
  if (auto it = metadata.find("general.alignment"); it != metadata.end()) {
    alignment = it->second.u;
    if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
      return absl::InvalidArgumentError("general.alignment must be a power of two");
    }
  }
  const std::string tmp = path + ".tmp";
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(tmp.c_str(), "wb"), &std::fclose);
  if (file == nullptr) {
    return absl::PermissionDeniedError(absl::StrCat(path, ": cannot open for writing"));
  }
  Out out(file.get());
  out.Bytes("GGUF", 4);
  out.Pod<uint32_t>(3);
  out.Pod<uint64_t>(tensors.size());
  out.Pod<uint64_t>(metadata.size());
  for (const auto& [key, value] : metadata) {
    out.String(key);
    out.Pod<uint32_t>(static_cast<uint32_t>(value.type));
    if (value.type == GgufValueType::kArray) {
      out.Pod<uint32_t>(static_cast<uint32_t>(value.array_type));
      out.Pod<uint64_t>(value.array.size());
      for (const GgufValue& element : value.array) WriteScalar(out, value.array_type, element);
    } else {
      WriteScalar(out, value.type, value);
    }
  }
  uint64_t offset = 0;
  for (const GgufTensorInfo& t : tensors) {
    out.String(t.name);
    out.Pod<uint32_t>(static_cast<uint32_t>(t.shape.size()));
    for (int64_t d : t.shape) out.Pod<uint64_t>(static_cast<uint64_t>(d));
    out.Pod<uint32_t>(static_cast<uint32_t>(t.type));
    out.Pod<uint64_t>(offset);
    offset += (t.num_bytes + alignment - 1) / alignment * alignment;
  }
  out.PadTo(alignment);
  for (const GgufTensorInfo& t : tensors) {
    out.Bytes(t.data, t.num_bytes);
    out.PadTo(alignment);
  }
  if (!out.ok() || std::fflush(file.get()) != 0) {
    std::remove(tmp.c_str());
    return absl::DataLossError(absl::StrCat(path, ": write failed (disk full?)"));
  }
  file.reset();
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return absl::PermissionDeniedError(absl::StrCat(path, ": cannot rename the written file"));
  }
  return absl::OkStatus();
}

}  // namespace llorch
