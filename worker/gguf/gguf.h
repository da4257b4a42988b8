// GGUF v2/v3 reader: memory-maps the file, parses metadata (every value type,
// arrays included) and the tensor directory, and hands out pointers into the
// mapping. Nothing is copied; the GgufFile must outlive every pointer it gives.
#ifndef LLORCH_WORKER_GGUF_GGUF_H_
#define LLORCH_WORKER_GGUF_GGUF_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/gguf/ggml_types.h"

namespace llorch {

enum class GgufValueType : uint32_t {
  kUint8 = 0, kInt8 = 1, kUint16 = 2, kInt16 = 3, kUint32 = 4, kInt32 = 5,
  kFloat32 = 6, kBool = 7, kString = 8, kArray = 9, kUint64 = 10,
  kInt64 = 11, kFloat64 = 12,
};

// One metadata value. Scalars are widened (integers to int64/uint64, floats
// to double); arrays keep their element type and hold scalar/string elements.
struct GgufValue {
  GgufValueType type = GgufValueType::kUint8;
  uint64_t u = 0;     // unsigned integers and bool
  int64_t i = 0;      // signed integers (also set for unsigned that fit)
  double f = 0.0;     // floats
  std::string s;      // kString
  GgufValueType array_type = GgufValueType::kUint8;  // kArray element type
  std::vector<GgufValue> array;                      // kArray elements
};

// Builders for metadata written in memory (converters) or to files.
GgufValue GgufInt(GgufValueType type, int64_t v);  // any integer type, or kBool
GgufValue GgufFloat32(double v);
GgufValue GgufString(std::string v);
GgufValue GgufStringArray(std::vector<std::string> strings);

struct GgufTensorInfo {
  std::string name;
  // ggml order: shape[0] is the fastest-varying (row length). A 2-D weight
  // of a Linear(in, out) layer is {in, out}.
  std::vector<int64_t> shape;
  GgmlType type = GgmlType::kF32;
  uint64_t offset = 0;          // relative to the data section
  const uint8_t* data = nullptr;  // into the mapping
  size_t num_bytes = 0;
  int64_t num_elements() const;
};

class GgufFile {
 public:
  // Errors name the file and the problem (InvalidArgument for malformed
  // content, NotFound for a missing file, DataLoss for truncation).
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path);
  // A GGUF built in memory (a checkpoint converted on load): the tensors'
  // data live in `keep_alive` (owned from now on) or in mappings that
  // outlive this object. Names must be unique.
  static std::unique_ptr<GgufFile> FromParts(std::string path,
                                             std::map<std::string, GgufValue> metadata,
                                             std::vector<GgufTensorInfo> tensors,
                                             std::vector<std::shared_ptr<const void>> keep_alive);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  size_t alignment() const { return alignment_; }
  // Size of the file and the byte offset where the (aligned) data section
  // starts; a tensor's data lies at data_offset() + offset.
  size_t file_size() const { return map_size_; }
  size_t data_offset() const { return data_offset_; }

  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const GgufValue* Find(absl::string_view key) const;  // nullptr if absent
  // Frees a value its reader has copied (the vocabulary once the tokenizer
  // holds it: ~14 MB of elements for 49k tokens). No-op if absent.
  void DropMetadata(absl::string_view key);

  // Typed getters. NotFound if absent, InvalidArgument if of another type.
  // Integer getters accept any integer type whose value fits.
  absl::StatusOr<std::string> GetString(absl::string_view key) const;
  absl::StatusOr<int64_t> GetInt(absl::string_view key) const;
  absl::StatusOr<double> GetFloat(absl::string_view key) const;  // any numeric
  absl::StatusOr<bool> GetBool(absl::string_view key) const;
  absl::StatusOr<std::vector<std::string>> GetStringArray(absl::string_view key) const;
  absl::StatusOr<std::vector<float>> GetFloatArray(absl::string_view key) const;
  absl::StatusOr<std::vector<int64_t>> GetIntArray(absl::string_view key) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* FindTensor(absl::string_view name) const;  // nullptr if absent

  // Drops the resident pages that lie wholly inside a tensor's data once the
  // loader has copied it: the mapping is private and read-only, so a page
  // touched again is read back from the file. Keeps the weights in memory
  // once (the copy) instead of twice. No-op for a GGUF built in memory.
  void ReleasePages(const GgufTensorInfo& tensor) const;

  // Keeps every tensor's data valid while held, also after this object is
  // gone (the file's mapping, or what a GGUF built in memory keeps alive):
  // held by a loader that multiplies straight from the data.
  std::shared_ptr<const void> data_owner() const { return data_owner_; }

 private:
  GgufFile() = default;
  absl::Status Parse();

  std::string path_;
  int fd_ = -1;
  const uint8_t* map_ = nullptr;
  size_t map_size_ = 0;
  uint32_t version_ = 0;
  size_t alignment_ = 32;
  size_t data_offset_ = 0;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
  std::shared_ptr<const void> data_owner_;  // the mapping, or FromParts' keep_alive
};

}  // namespace llorch

#endif  // LLORCH_WORKER_GGUF_GGUF_H_
