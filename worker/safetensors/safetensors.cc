#include "worker/safetensors/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace llorch {
namespace {

absl::Status Invalid(const std::string& path, const std::string& message) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", message));
}

}  // namespace

int64_t SafeTensor::num_elements() const {
  // Open() checked that the product fits (it is the byte count over the
  // element size), unless a dimension is 0.
  if (std::find(shape.begin(), shape.end(), 0) != shape.end()) return 0;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<std::unique_ptr<SafeTensorsFile>> SafeTensorsFile::Open(const std::string& path) {
  std::unique_ptr<SafeTensorsFile> file(new SafeTensorsFile());
  file->path_ = path;
  file->fd_ = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (file->fd_ < 0) {
    const int error = errno;
    const std::string message = absl::StrCat(path, ": ", std::strerror(error));
    return error == ENOENT ? absl::NotFoundError(message) : absl::PermissionDeniedError(message);
  }
  struct stat st;
  if (fstat(file->fd_, &st) != 0) return Invalid(path, "cannot stat");
  file->map_size_ = static_cast<size_t>(st.st_size);
  if (file->map_size_ < 8) {
    return absl::DataLossError(absl::StrCat(path, ": truncated (", file->map_size_, " bytes)"));
  }
  void* map = mmap(nullptr, file->map_size_, PROT_READ, MAP_PRIVATE, file->fd_, 0);
  if (map == MAP_FAILED) return Invalid(path, "cannot mmap");
  file->map_ = static_cast<const uint8_t*>(map);

  uint64_t header_size = 0;
  std::memcpy(&header_size, file->map_, 8);  // little-endian, as the format says
  if (header_size > file->map_size_ - 8) {
    return absl::DataLossError(absl::StrCat(path, ": header of ", header_size,
                                            " bytes runs past the end of the file"));
  }
  const char* header = reinterpret_cast<const char*>(file->map_ + 8);
  nlohmann::json json = nlohmann::json::parse(header, header + header_size, nullptr,
                                              /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) return Invalid(path, "header is not a JSON object");
  const uint8_t* data = file->map_ + 8 + header_size;
  const size_t data_size = file->map_size_ - 8 - header_size;

  std::vector<std::pair<std::pair<size_t, size_t>, std::string>> ranges;  // [begin, end), name
  for (const auto& [name, entry] : json.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return Invalid(path, "__metadata__ is not an object");
      for (const auto& [key, value] : entry.items()) {
        if (value.is_string()) file->metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets") || !entry["dtype"].is_string() ||
        !entry["shape"].is_array() || !entry["data_offsets"].is_array() ||
        entry["data_offsets"].size() != 2) {
      return Invalid(path, absl::StrCat("tensor ", name, ": malformed header entry"));
    }
    SafeTensor tensor;
    tensor.name = name;
    const std::string dtype = entry["dtype"].get<std::string>();
    size_t element_bytes = 0;
    if (dtype == "F32") {
      tensor.type = GgmlType::kF32, element_bytes = 4;
    } else if (dtype == "F16") {
      tensor.type = GgmlType::kF16, element_bytes = 2;
    } else if (dtype == "BF16") {
      tensor.type = GgmlType::kBF16, element_bytes = 2;
    } else {
      return Invalid(path, absl::StrCat("tensor ", name, " has dtype ", dtype,
                                        " (supported: F32, F16, BF16)"));
    }
    // The element count, in 64 bits without overflow (a shape's product can
    // exceed them, and dimensions past INT64_MAX would turn negative).
    uint64_t elements = 1;
    bool too_many = false;
    for (const auto& d : entry["shape"]) {
      if (!d.is_number_unsigned() ||
          d.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Invalid(path, absl::StrCat("tensor ", name, ": bad shape"));
      }
      const uint64_t dim = d.get<uint64_t>();
      tensor.shape.push_back(static_cast<int64_t>(dim));
      if (dim != 0 && elements > std::numeric_limits<uint64_t>::max() / dim) too_many = true;
      elements *= dim;
    }
    if (std::find(tensor.shape.begin(), tensor.shape.end(), 0) != tensor.shape.end()) {
      elements = 0, too_many = false;
    }
    const auto& offsets = entry["data_offsets"];
    if (!offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned()) {
      return Invalid(path, absl::StrCat("tensor ", name, ": bad data_offsets"));
    }
    const size_t begin = offsets[0].get<size_t>(), end = offsets[1].get<size_t>();
    if (begin > end) {
      return Invalid(path, absl::StrCat("tensor ", name, " has data_offsets [", begin, ", ", end,
                                        "], which end before they begin"));
    }
    if (end > data_size) {
      return absl::DataLossError(absl::StrCat(path, ": tensor ", name, " bytes [", begin, ", ",
                                              end, ") lie outside the data section of ",
                                              data_size, " bytes"));
    }
    if (too_many || elements > (end - begin) / element_bytes ||
        elements * element_bytes != end - begin) {
      return Invalid(path, absl::StrCat(
          "tensor ", name, " has ", end - begin, " bytes, its shape needs ",
          too_many || elements > std::numeric_limits<uint64_t>::max() / element_bytes
              ? std::string("more than 2^64")
              : absl::StrCat(elements * element_bytes)));
    }
    tensor.data = data + begin;
    tensor.num_bytes = end - begin;
    ranges.push_back({{begin, end}, name});
    file->tensors_[name] = std::move(tensor);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    const auto& [before, before_name] = ranges[i - 1];
    const auto& [after, after_name] = ranges[i];
    if (after.first < before.second) {
      return Invalid(path, absl::StrCat("the data of tensors ", before_name, " (bytes [",
                                        before.first, ", ", before.second, ")) and ", after_name,
                                        " (bytes [", after.first, ", ", after.second,
                                        ")) overlap"));
    }
  }
  return file;
}

SafeTensorsFile::~SafeTensorsFile() {
  if (map_ != nullptr) munmap(const_cast<uint8_t*>(map_), map_size_);
  if (fd_ >= 0) close(fd_);
}

const SafeTensor* SafeTensorsFile::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

}  // namespace llorch
