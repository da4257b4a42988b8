// SafeTensors reader: memory-maps a .safetensors file (8-byte header length,
// a JSON header naming each tensor's dtype, shape and byte range, then the
// data) and hands out pointers into the mapping. F32, F16 and BF16 only.
#ifndef LLORCH_WORKER_SAFETENSORS_SAFETENSORS_H_
#define LLORCH_WORKER_SAFETENSORS_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/gguf/ggml_types.h"

namespace llorch {

struct SafeTensor {
  std::string name;
  GgmlType type = GgmlType::kF32;  // kF32, kF16 or kBF16
  std::vector<int64_t> shape;      // as stored: row-major, outermost first
  const uint8_t* data = nullptr;   // into the mapping
  size_t num_bytes = 0;
  int64_t num_elements() const;
};

class SafeTensorsFile {
 public:
  // Errors name the file: NotFound, InvalidArgument for a malformed header
  // (bad JSON, unsupported dtype, shape/size mismatch, ranges outside the
  // file or overlapping), DataLoss for truncation.
  static absl::StatusOr<std::unique_ptr<SafeTensorsFile>> Open(const std::string& path);
  ~SafeTensorsFile();
  SafeTensorsFile(const SafeTensorsFile&) = delete;
  SafeTensorsFile& operator=(const SafeTensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, SafeTensor>& tensors() const { return tensors_; }
  const SafeTensor* Find(const std::string& name) const;  // nullptr if absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafeTensorsFile() = default;
  std::string path_;
  int fd_ = -1;
  const uint8_t* map_ = nullptr;
  size_t map_size_ = 0;
  std::map<std::string, SafeTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace llorch

#endif  // LLORCH_WORKER_SAFETENSORS_SAFETENSORS_H_
