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

// open(2) failed with `error`: NotFound when the file is absent,
// PermissionDenied when it may not be read, else InvalidArgument.
absl::Status OpenError(const std::string& path, int error) {
  const std::string message = absl::StrCat(path, ": ", std::strerror(error));
  if (error == ENOENT) return absl::NotFoundError(message);
  if (error == EACCES || error == EPERM) return absl::PermissionDeniedError(message);
  return absl::InvalidArgumentError(message);
}

// The bytes after the header, which the tensors' data_offsets index.
struct DataSection {
  const uint8_t* begin = nullptr;
  size_t size = 0;
};

struct Header {
  nlohmann::json json;
  DataSection data;
};

// The 8-byte header length, the JSON header it measures, and what follows.
// `map_size` is at least 8.
absl::StatusOr<Header> ReadHeaderJson(const std::string& path, const uint8_t* map,
                                      size_t map_size) {
  uint64_t header_size = 0;
  std::memcpy(&header_size, map, 8);  // little-endian, as the format says
  if (header_size > map_size - 8) {
    return absl::DataLossError(absl::StrCat(path, ": header of ", header_size,
                                            " bytes runs past the end of the file"));
  }
  const char* text = reinterpret_cast<const char*>(map + 8);
  Header header;
  header.json = nlohmann::json::parse(text, text + header_size, nullptr,
                                      /*allow_exceptions=*/false);
  if (header.json.is_discarded() || !header.json.is_object()) {
    return Invalid(path, "header is not a JSON object");
  }
  header.data.begin = map + 8 + header_size;
  header.data.size = map_size - 8 - header_size;
  return header;
}

// __metadata__: string values are kept, others ignored.
absl::Status ReadMetadata(const std::string& path, const nlohmann::json& entry,
                          std::map<std::string, std::string>* metadata) {
  if (!entry.is_object()) return Invalid(path, "__metadata__ is not an object");
  for (const auto& [key, value] : entry.items()) {
    if (value.is_string()) (*metadata)[key] = value.get<std::string>();
  }
  return absl::OkStatus();
}

// Sets `type` from the dtype and returns its element size.
absl::StatusOr<size_t> ParseDtype(const std::string& path, const std::string& name,
                                  const std::string& dtype, GgmlType* type) {
  if (dtype == "F32") {
    *type = GgmlType::kF32;
    return 4;
  }
  if (dtype == "F16") {
    *type = GgmlType::kF16;
    return 2;
  }
  if (dtype == "BF16") {
    *type = GgmlType::kBF16;
    return 2;
  }
  return Invalid(path, absl::StrCat("tensor ", name, " has dtype ", dtype,
                                    " (supported: F32, F16, BF16)"));
}

// The element count, in 64 bits without overflow (a shape's product can
// exceed them, and dimensions past INT64_MAX would turn negative).
struct ElementCount {
  uint64_t elements = 1;
  bool too_many = false;  // the product overflowed; `elements` is meaningless
};

// Appends the dimensions to `shape` and counts the elements.
absl::StatusOr<ElementCount> ParseShape(const std::string& path, const std::string& name,
                                        const nlohmann::json& dims, std::vector<int64_t>* shape) {
  ElementCount count;
  for (const auto& d : dims) {
    if (!d.is_number_unsigned() ||
        d.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Invalid(path, absl::StrCat("tensor ", name, ": bad shape"));
    }
    const uint64_t dim = d.get<uint64_t>();
    shape->push_back(static_cast<int64_t>(dim));
    if (dim != 0 && count.elements > std::numeric_limits<uint64_t>::max() / dim) {
      count.too_many = true;
    }
    count.elements *= dim;
  }
  if (std::find(shape->begin(), shape->end(), 0) != shape->end()) {
    count.elements = 0, count.too_many = false;
  }
  return count;
}

// Bytes [begin, end) of the data section.
struct ByteRange {
  size_t begin = 0, end = 0;
};

// data_offsets: two unsigned numbers, in order, within the data section.
absl::StatusOr<ByteRange> ParseDataOffsets(const std::string& path, const std::string& name,
                                           const nlohmann::json& offsets, size_t data_size) {
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
  return ByteRange{begin, end};
}

// One tensor's header entry: {"dtype", "shape", "data_offsets"}, whose byte
// count must be what the dtype and shape need.
absl::StatusOr<SafeTensor> ParseTensorEntry(const std::string& path, const std::string& name,
                                            const nlohmann::json& entry, DataSection data) {
  if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
      !entry.contains("data_offsets") || !entry["dtype"].is_string() ||
      !entry["shape"].is_array() || !entry["data_offsets"].is_array() ||
      entry["data_offsets"].size() != 2) {
    return Invalid(path, absl::StrCat("tensor ", name, ": malformed header entry"));
  }
  SafeTensor tensor;
  tensor.name = name;
  absl::StatusOr<size_t> element_bytes =
      ParseDtype(path, name, entry["dtype"].get<std::string>(), &tensor.type);
  if (!element_bytes.ok()) return element_bytes.status();
  absl::StatusOr<ElementCount> count = ParseShape(path, name, entry["shape"], &tensor.shape);
  if (!count.ok()) return count.status();
  absl::StatusOr<ByteRange> bytes =
      ParseDataOffsets(path, name, entry["data_offsets"], data.size);
  if (!bytes.ok()) return bytes.status();
  const auto [begin, end] = *bytes;
  const auto [elements, too_many] = *count;
  if (too_many || elements > (end - begin) / *element_bytes ||
      elements * *element_bytes != end - begin) {
    return Invalid(path, absl::StrCat(
        "tensor ", name, " has ", end - begin, " bytes, its shape needs ",
        too_many || elements > std::numeric_limits<uint64_t>::max() / *element_bytes
            ? std::string("more than 2^64")
            : absl::StrCat(elements * *element_bytes)));
  }
  tensor.data = data.begin + begin;
  tensor.num_bytes = end - begin;
  return tensor;
}

// No two tensors' bytes may overlap; the first overlapping pair in byte
// order is named.
absl::Status CheckNoOverlaps(const std::string& path, DataSection data,
                             const std::map<std::string, SafeTensor>& tensors) {
  std::vector<std::pair<std::pair<size_t, size_t>, std::string>> ranges;  // [begin, end), name
  for (const auto& [name, tensor] : tensors) {
    const size_t begin = static_cast<size_t>(tensor.data - data.begin);
    ranges.push_back({{begin, begin + tensor.num_bytes}, name});
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
  return absl::OkStatus();
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
  // O_NONBLOCK: a FIFO opens at once and is refused below, where a plain
  // open would wait for a writer forever (regular files ignore the flag).
  file->fd_ = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (file->fd_ < 0) return OpenError(path, errno);
  struct stat st;
  if (fstat(file->fd_, &st) != 0) return Invalid(path, "cannot stat");
  if (!S_ISREG(st.st_mode)) return Invalid(path, "not a regular file");
  file->map_size_ = static_cast<size_t>(st.st_size);
  if (file->map_size_ < 8) {
    return absl::DataLossError(absl::StrCat(path, ": truncated (", file->map_size_, " bytes)"));
  }
  void* map = mmap(nullptr, file->map_size_, PROT_READ, MAP_PRIVATE, file->fd_, 0);
  if (map == MAP_FAILED) return Invalid(path, "cannot mmap");
  file->map_ = static_cast<const uint8_t*>(map);

  absl::StatusOr<Header> header = ReadHeaderJson(path, file->map_, file->map_size_);
  if (!header.ok()) return header.status();
  for (const auto& [name, entry] : header->json.items()) {
    if (name == "__metadata__") {
      if (absl::Status s = ReadMetadata(path, entry, &file->metadata_); !s.ok()) return s;
      continue;
    }
    absl::StatusOr<SafeTensor> tensor = ParseTensorEntry(path, name, entry, header->data);
    if (!tensor.ok()) return tensor.status();
    file->tensors_[name] = std::move(*tensor);
  }
  if (absl::Status s = CheckNoOverlaps(path, header->data, file->tensors_); !s.ok()) return s;
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
