#include "worker/gguf/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"

namespace llorch {
namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read little-endian
constexpr size_t kDefaultAlignment = 32;
constexpr int kMaxDims = 4;            // GGML_MAX_DIMS
constexpr int kMaxArrayNesting = 8;    // deeper nesting is not a real file
// No real file comes near this many bytes; a count or length that would need
// more is corrupt rather than truncated.
constexpr uint64_t kImplausibleBytes = uint64_t{1} << 48;

const char* ValueTypeName(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8: return "uint8";
    case GgufValueType::kInt8: return "int8";
    case GgufValueType::kUint16: return "uint16";
    case GgufValueType::kInt16: return "int16";
    case GgufValueType::kUint32: return "uint32";
    case GgufValueType::kInt32: return "int32";
    case GgufValueType::kFloat32: return "float32";
    case GgufValueType::kBool: return "bool";
    case GgufValueType::kString: return "string";
    case GgufValueType::kArray: return "array";
    case GgufValueType::kUint64: return "uint64";
    case GgufValueType::kInt64: return "int64";
    case GgufValueType::kFloat64: return "float64";
  }
  return "unknown";
}

bool IsKnownValueType(uint32_t type) { return type <= 12; }

bool IsInteger(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8: case GgufValueType::kInt8:
    case GgufValueType::kUint16: case GgufValueType::kInt16:
    case GgufValueType::kUint32: case GgufValueType::kInt32:
    case GgufValueType::kUint64: case GgufValueType::kInt64:
      return true;
    default:
      return false;
  }
}

bool IsSigned(GgufValueType type) {
  return type == GgufValueType::kInt8 || type == GgufValueType::kInt16 ||
         type == GgufValueType::kInt32 || type == GgufValueType::kInt64;
}

bool IsFloat(GgufValueType type) {
  return type == GgufValueType::kFloat32 || type == GgufValueType::kFloat64;
}

// Smallest encoding of one array element of `type`, to bound counts by the
// bytes that remain.
uint64_t MinEncodedBytes(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8: case GgufValueType::kInt8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kUint16: case GgufValueType::kInt16:
      return 2;
    case GgufValueType::kUint32: case GgufValueType::kInt32:
    case GgufValueType::kFloat32:
      return 4;
    case GgufValueType::kString: case GgufValueType::kUint64:
    case GgufValueType::kInt64: case GgufValueType::kFloat64:
      return 8;
    case GgufValueType::kArray:
      return 12;  // element type + count
  }
  return 1;
}

// Integer value of an integer-typed GgufValue as int64, if it fits.
bool IntegerValue(const GgufValue& value, int64_t* out) {
  if (!IsInteger(value.type)) return false;
  if (IsSigned(value.type)) {
    *out = value.i;
    return true;
  }
  if (value.u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return false;
  }
  *out = static_cast<int64_t>(value.u);
  return true;
}

bool NumericValue(const GgufValue& value, double* out) {
  if (IsFloat(value.type)) {
    *out = value.f;
    return true;
  }
  if (IsInteger(value.type)) {
    *out = IsSigned(value.type) ? static_cast<double>(value.i)
                                : static_cast<double>(value.u);
    return true;
  }
  return false;
}

// Bounds-checked little-endian reader over the mapping. Every failure is
// reported with the byte offset so that corrupt files can be diagnosed.
class Cursor {
 public:
  Cursor(const std::string& path, const uint8_t* data, size_t size)
      : path_(path), data_(data), size_(size) {}

  size_t offset() const { return offset_; }
  size_t remaining() const { return size_ - offset_; }

  absl::Status Truncated(absl::string_view what, uint64_t needed) const {
    return absl::DataLossError(absl::StrCat(
        path_, ": truncated file: reading ", what, " at offset ", offset_,
        " needs ", needed, " bytes, only ", remaining(), " remain (file size ",
        size_, ")"));
  }

  absl::Status Corrupt(absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": ", what, " (at offset ", offset_, ")"));
  }

  absl::Status Bytes(absl::string_view what, size_t n, const uint8_t** out) {
    if (n > remaining()) return Truncated(what, n);
    *out = data_ + offset_;
    offset_ += n;
    return absl::OkStatus();
  }

  template <typename T>
  absl::Status Scalar(absl::string_view what, T* out) {
    const uint8_t* p = nullptr;
    absl::Status status = Bytes(what, sizeof(T), &p);
    if (!status.ok()) return status;
    std::memcpy(out, p, sizeof(T));  // little-endian host
    return absl::OkStatus();
  }

  // Checks that `count` items of at least `min_bytes` each can still follow.
  absl::Status CheckCount(absl::string_view what, uint64_t count,
                          uint64_t min_bytes) const {
    if (min_bytes != 0 && count > kImplausibleBytes / min_bytes) {
      return Corrupt(absl::StrCat("implausible ", what, " ", count));
    }
    if (count * min_bytes > remaining()) {
      return Truncated(absl::StrCat(what, " ", count), count * min_bytes);
    }
    return absl::OkStatus();
  }

  absl::Status String(absl::string_view what, std::string* out) {
    uint64_t length{};
    absl::Status status = Scalar(absl::StrCat(what, " length"), &length);
    if (!status.ok()) return status;
    status = CheckCount(absl::StrCat(what, " length"), length, 1);
    if (!status.ok()) return status;
    const uint8_t* p = nullptr;
    status = Bytes(what, static_cast<size_t>(length), &p);
    if (!status.ok()) return status;
    out->assign(reinterpret_cast<const char*>(p), static_cast<size_t>(length));
    return absl::OkStatus();
  }

 private:
  const std::string& path_;
  const uint8_t* data_;
  size_t size_;
  size_t offset_ = 0;
};

absl::Status ReadValue(Cursor& cursor, GgufValueType type, absl::string_view key,
                       int depth, GgufValue* value);

template <typename T>
absl::Status ReadInteger(Cursor& cursor, absl::string_view key, GgufValue* value) {
  T raw{};
  absl::Status status = cursor.Scalar(absl::StrCat("value of '", key, "'"), &raw);
  if (!status.ok()) return status;
  if (std::numeric_limits<T>::is_signed) {
    value->i = static_cast<int64_t>(raw);
    if (raw >= 0) value->u = static_cast<uint64_t>(raw);
  } else {
    value->u = static_cast<uint64_t>(raw);
    if (value->u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      value->i = static_cast<int64_t>(value->u);
    }
  }
  return absl::OkStatus();
}

absl::Status ReadValue(Cursor& cursor, GgufValueType type, absl::string_view key,
                       int depth, GgufValue* value) {
  value->type = type;
  switch (type) {
    case GgufValueType::kUint8: return ReadInteger<uint8_t>(cursor, key, value);
    case GgufValueType::kInt8: return ReadInteger<int8_t>(cursor, key, value);
    case GgufValueType::kUint16: return ReadInteger<uint16_t>(cursor, key, value);
    case GgufValueType::kInt16: return ReadInteger<int16_t>(cursor, key, value);
    case GgufValueType::kUint32: return ReadInteger<uint32_t>(cursor, key, value);
    case GgufValueType::kInt32: return ReadInteger<int32_t>(cursor, key, value);
    case GgufValueType::kUint64: return ReadInteger<uint64_t>(cursor, key, value);
    case GgufValueType::kInt64: return ReadInteger<int64_t>(cursor, key, value);
    case GgufValueType::kBool: {
      uint8_t raw{};
      absl::Status status = cursor.Scalar(absl::StrCat("value of '", key, "'"), &raw);
      if (!status.ok()) return status;
      if (raw > 1) {
        return cursor.Corrupt(absl::StrCat("bool value of '", key, "' is ",
                                           static_cast<int>(raw), ", not 0 or 1"));
      }
      value->u = raw;
      value->i = raw;
      return absl::OkStatus();
    }
    case GgufValueType::kFloat32: {
      float raw{};
      absl::Status status = cursor.Scalar(absl::StrCat("value of '", key, "'"), &raw);
      value->f = raw;
      return status;
    }
    case GgufValueType::kFloat64:
      return cursor.Scalar(absl::StrCat("value of '", key, "'"), &value->f);
    case GgufValueType::kString:
      return cursor.String(absl::StrCat("string value of '", key, "'"), &value->s);
    case GgufValueType::kArray: {
      if (depth >= kMaxArrayNesting) {
        return cursor.Corrupt(absl::StrCat("arrays nested deeper than ",
                                           kMaxArrayNesting, " in '", key, "'"));
      }
      uint32_t element_type{};
      absl::Status status = cursor.Scalar(
          absl::StrCat("array element type of '", key, "'"), &element_type);
      if (!status.ok()) return status;
      if (!IsKnownValueType(element_type)) {
        return cursor.Corrupt(absl::StrCat("array '", key,
                                           "' has unknown element type ", element_type));
      }
      value->array_type = static_cast<GgufValueType>(element_type);
      uint64_t count{};
      status = cursor.Scalar(absl::StrCat("array length of '", key, "'"), &count);
      if (!status.ok()) return status;
      status = cursor.CheckCount(absl::StrCat("array length of '", key, "'"), count,
                                 MinEncodedBytes(value->array_type));
      if (!status.ok()) return status;
      value->array.resize(static_cast<size_t>(count));
      for (GgufValue& element : value->array) {
        status = ReadValue(cursor, value->array_type, key, depth + 1, &element);
        if (!status.ok()) return status;
      }
      return absl::OkStatus();
    }
  }
  return cursor.Corrupt(absl::StrCat("'", key, "' has unknown value type ",
                                     static_cast<uint32_t>(type)));
}

std::string Quoted(absl::string_view key) { return absl::StrCat("'", key, "'"); }

// What the fixed-size header announces after the magic and version.
struct HeaderCounts {
  uint64_t tensors = 0;
  uint64_t metadata = 0;
};

absl::Status CheckVersion(const std::string& path, uint32_t version) {
  if (version == 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": GGUF version 1 is not supported (only versions 2 and 3); "
              "re-convert the model with a current llama.cpp"));
  }
  if (version != 2 && version != 3) {
    // A big-endian file reads as a byte-swapped small version.
    const bool big_endian = (version & 0xffff) == 0 && version != 0;
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": unsupported GGUF version ", version,
        big_endian ? " (a big-endian GGUF file?)" : "", "; only 2 and 3 are supported"));
  }
  return absl::OkStatus();
}

// Magic, version, tensor count and metadata count.
absl::Status ReadHeader(Cursor& cursor, const std::string& path, uint32_t* version,
                        HeaderCounts* counts) {
  uint32_t magic{};
  absl::Status status = cursor.Scalar("magic", &magic);
  if (!status.ok()) return status;
  if (magic != kGgufMagic) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a GGUF file (bad magic)"));
  }
  status = cursor.Scalar("version", version);
  if (!status.ok()) return status;
  status = CheckVersion(path, *version);
  if (!status.ok()) return status;
  status = cursor.Scalar("tensor count", &counts->tensors);
  if (!status.ok()) return status;
  return cursor.Scalar("metadata count", &counts->metadata);
}

// `count` key-value pairs into `metadata`; keys must be unique.
absl::Status ReadMetadata(Cursor& cursor, uint64_t count,
                          std::map<std::string, GgufValue>* metadata) {
  // key length + value type + at least one value byte
  absl::Status status = cursor.CheckCount("metadata count", count, 8 + 4 + 1);
  if (!status.ok()) return status;
  for (uint64_t k = 0; k < count; ++k) {
    std::string key;
    status = cursor.String(absl::StrCat("key of metadata entry ", k), &key);
    if (!status.ok()) return status;
    uint32_t type{};
    status = cursor.Scalar(absl::StrCat("value type of ", Quoted(key)), &type);
    if (!status.ok()) return status;
    if (!IsKnownValueType(type)) {
      return cursor.Corrupt(
          absl::StrCat("metadata ", Quoted(key), " has unknown value type ", type));
    }
    GgufValue value;
    status = ReadValue(cursor, static_cast<GgufValueType>(type), key, 0, &value);
    if (!status.ok()) return status;
    if (!metadata->emplace(key, std::move(value)).second) {
      return cursor.Corrupt(absl::StrCat("duplicate metadata key ", Quoted(key)));
    }
  }
  return absl::OkStatus();
}

// general.alignment, or the default where the file has none.
absl::StatusOr<size_t> AlignmentOf(const std::string& path,
                                   const std::map<std::string, GgufValue>& metadata) {
  auto it = metadata.find("general.alignment");
  if (it == metadata.end()) return kDefaultAlignment;
  int64_t value;
  if (!IntegerValue(it->second, &value) || value <= 0 || value > (1 << 30) ||
      (value & (value - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": general.alignment must be a positive power-of-two integer"));
  }
  return static_cast<size_t>(value);
}

// A tensor's dimensions into `shape`, and the product of them, which must
// fit in int64.
absl::Status ReadTensorShape(Cursor& cursor, const std::string& what,
                             std::vector<int64_t>* shape, int64_t* num_elements) {
  uint32_t n_dims{};
  absl::Status status = cursor.Scalar(absl::StrCat("dimension count of ", what), &n_dims);
  if (!status.ok()) return status;
  if (n_dims > kMaxDims) {
    return cursor.Corrupt(absl::StrCat(what, " has ", n_dims,
                                       " dimensions; at most ", kMaxDims, " are allowed"));
  }
  shape->resize(n_dims);
  *num_elements = 1;
  for (uint32_t d = 0; d < n_dims; ++d) {
    uint64_t dim{};
    status = cursor.Scalar(absl::StrCat("shape of ", what), &dim);
    if (!status.ok()) return status;
    if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        (dim != 0 && *num_elements > std::numeric_limits<int64_t>::max() /
                                         static_cast<int64_t>(dim))) {
      return cursor.Corrupt(absl::StrCat(what, " has an implausible shape"));
    }
    (*shape)[d] = static_cast<int64_t>(dim);
    *num_elements *= static_cast<int64_t>(dim);
  }
  return absl::OkStatus();
}

// info->num_bytes from its type and `num_elements`: rows must be whole blocks.
absl::Status SizeTensorData(const Cursor& cursor, const std::string& what,
                            int64_t num_elements, GgufTensorInfo* info) {
  const int64_t block_size = GgmlBlockSize(info->type);
  const int64_t row_length = info->shape.empty() ? 1 : info->shape[0];
  if (row_length % block_size != 0) {
    return cursor.Corrupt(absl::StrCat(
        what, " of type ", GgmlTypeName(info->type), " has rows of ", row_length,
        " elements, not a multiple of the block size ", block_size));
  }
  const uint64_t num_blocks = static_cast<uint64_t>(num_elements / block_size);
  if (num_blocks > kImplausibleBytes / GgmlBlockBytes(info->type)) {
    return cursor.Corrupt(absl::StrCat(what, " has an implausible size"));
  }
  info->num_bytes = static_cast<size_t>(num_blocks * GgmlBlockBytes(info->type));
  return absl::OkStatus();
}

// Entry `index` of the tensor table: name, shape, type and data offset.
absl::Status ReadTensorInfo(Cursor& cursor, uint64_t index, size_t alignment,
                            GgufTensorInfo* info) {
  absl::Status status = cursor.String(absl::StrCat("name of tensor ", index), &info->name);
  if (!status.ok()) return status;
  const std::string what = absl::StrCat("tensor ", Quoted(info->name));
  int64_t num_elements = 1;
  status = ReadTensorShape(cursor, what, &info->shape, &num_elements);
  if (!status.ok()) return status;
  uint32_t type{};
  status = cursor.Scalar(absl::StrCat("type of ", what), &type);
  if (!status.ok()) return status;
  info->type = static_cast<GgmlType>(type);
  if (!GgmlTypeKnown(info->type)) {
    return cursor.Corrupt(absl::StrCat(what, " has unknown ggml type ", type));
  }
  status = cursor.Scalar(absl::StrCat("data offset of ", what), &info->offset);
  if (!status.ok()) return status;
  status = SizeTensorData(cursor, what, num_elements, info);
  if (!status.ok()) return status;
  if (info->offset % alignment != 0) {
    return cursor.Corrupt(absl::StrCat(what, " has data offset ", info->offset,
                                       ", not a multiple of the alignment ", alignment));
  }
  return absl::OkStatus();
}

// The tensor table: `count` entries into `tensors`, indexed by (unique) name.
absl::Status ReadTensorInfos(Cursor& cursor, uint64_t count, size_t alignment,
                             std::vector<GgufTensorInfo>* tensors,
                             std::map<std::string, size_t, std::less<>>* index) {
  // name length + n_dims + type + offset
  absl::Status status = cursor.CheckCount("tensor count", count, 8 + 4 + 4 + 8);
  if (!status.ok()) return status;
  tensors->resize(static_cast<size_t>(count));
  for (uint64_t t = 0; t < count; ++t) {
    GgufTensorInfo& info = (*tensors)[t];
    status = ReadTensorInfo(cursor, t, alignment, &info);
    if (!status.ok()) return status;
    if (!index->emplace(info.name, static_cast<size_t>(t)).second) {
      return cursor.Corrupt(absl::StrCat("duplicate tensor name ", Quoted(info.name)));
    }
  }
  return absl::OkStatus();
}

// The file's mapping, `size` bytes from `map`, whose data section starts at
// `data_offset`.
struct MappedFile {
  const std::string& path;
  const uint8_t* map;
  size_t size;
  size_t data_offset;
};

// Points each tensor at its data, which must lie inside the file.
absl::Status LocateTensorData(const MappedFile& file, std::vector<GgufTensorInfo>* tensors) {
  for (GgufTensorInfo& info : *tensors) {
    if (info.offset > kImplausibleBytes) {  // data_offset + offset could wrap
      return absl::DataLossError(absl::StrCat(
          file.path, ": truncated or corrupt file: tensor ", Quoted(info.name),
          " has data offset ", info.offset, ", past the end of the file (", file.size,
          " bytes)"));
    }
    const uint64_t begin = file.data_offset + info.offset;
    if (begin + info.num_bytes > file.size) {
      return absl::DataLossError(absl::StrCat(
          file.path, ": truncated file: data of tensor ", Quoted(info.name), " (",
          info.num_bytes, " bytes at offset ", begin, ") extends past the end of the file (",
          file.size, " bytes)"));
    }
    info.data = file.map + begin;
  }
  return absl::OkStatus();
}

// Each tensor's bytes are its own: llama.cpp lays them out one after the
// other, and two tensors sharing bytes is a corrupt tensor table.
absl::Status CheckTensorsDisjoint(const std::string& path,
                                  const std::vector<GgufTensorInfo>& tensors) {
  std::vector<const GgufTensorInfo*> by_offset;
  by_offset.reserve(tensors.size());
  for (const GgufTensorInfo& info : tensors) {
    if (info.num_bytes > 0) by_offset.push_back(&info);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const GgufTensorInfo* a, const GgufTensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const GgufTensorInfo& before = *by_offset[i - 1];
    const GgufTensorInfo& after = *by_offset[i];
    if (after.offset < before.offset + before.num_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": the data of tensors ", Quoted(before.name), " (bytes ", before.offset, " to ",
          before.offset + before.num_bytes, " of the data section) and ", Quoted(after.name),
          " (from byte ", after.offset, ") overlap"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

int64_t GgufTensorInfo::num_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->path_ = path;
  // O_NONBLOCK: a FIFO opens at once and is refused below, where a plain
  // open would wait for a writer forever (regular files ignore the flag).
  file->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (file->fd_ < 0) {
    const int error = errno;
    const std::string message = absl::StrCat(path, ": cannot open: ", std::strerror(error));
    if (error == ENOENT) return absl::NotFoundError(message);
    if (error == EACCES || error == EPERM) return absl::PermissionDeniedError(message);
    return absl::InvalidArgumentError(message);
  }
  struct stat st;
  if (::fstat(file->fd_, &st) != 0) {
    return absl::InternalError(absl::StrCat(path, ": cannot stat: ", std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  file->map_size_ = static_cast<size_t>(st.st_size);
  if (file->map_size_ > 0) {
    void* map = ::mmap(nullptr, file->map_size_, PROT_READ, MAP_PRIVATE, file->fd_, 0);
    if (map == MAP_FAILED) {
      return absl::InternalError(absl::StrCat(path, ": cannot mmap ", file->map_size_,
                                              " bytes: ", std::strerror(errno)));
    }
    file->map_ = static_cast<const uint8_t*>(map);
    const size_t map_size = file->map_size_;
    file->data_owner_ = std::shared_ptr<const void>(
        map, [map_size](const void* p) { ::munmap(const_cast<void*>(p), map_size); });
  }
  absl::Status status = file->Parse();
  if (!status.ok()) return status;
  return file;
}

void GgufFile::ReleasePages(const GgufTensorInfo& tensor) const {
  if (map_ == nullptr || tensor.data < map_ || tensor.data >= map_ + map_size_) return;
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(tensor.data) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(tensor.data) + tensor.num_bytes) / page * page;
  // Advice only: a failure leaves the pages resident, nothing else.
  if (begin < end) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

GgufValue GgufInt(GgufValueType type, int64_t v) {
  GgufValue value;
  value.type = type;
  value.i = v;
  value.u = static_cast<uint64_t>(v);
  return value;
}

GgufValue GgufFloat32(double v) {
  GgufValue value;
  value.type = GgufValueType::kFloat32;
  value.f = static_cast<float>(v);
  return value;
}

GgufValue GgufString(std::string v) {
  GgufValue value;
  value.type = GgufValueType::kString;
  value.s = std::move(v);
  return value;
}

GgufValue GgufStringArray(std::vector<std::string> strings) {
  GgufValue value;
  value.type = GgufValueType::kArray;
  value.array_type = GgufValueType::kString;
  for (std::string& s : strings) value.array.push_back(GgufString(std::move(s)));
  return value;
}

std::unique_ptr<GgufFile> GgufFile::FromParts(std::string path,
                                             std::map<std::string, GgufValue> metadata,
                                             std::vector<GgufTensorInfo> tensors,
                                             std::vector<std::shared_ptr<const void>> keep_alive) {
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->path_ = std::move(path);
  file->version_ = 3;
  file->metadata_ = std::move(metadata);
  file->tensors_ = std::move(tensors);
  for (size_t i = 0; i < file->tensors_.size(); ++i) {
    file->tensor_index_[file->tensors_[i].name] = i;
  }
  file->data_owner_ =
      std::make_shared<std::vector<std::shared_ptr<const void>>>(std::move(keep_alive));
  return file;
}

GgufFile::~GgufFile() {
  // The mapping goes with the last holder of data_owner_.
  if (fd_ >= 0) ::close(fd_);
}

absl::Status GgufFile::Parse() {
  Cursor cursor(path_, map_, map_size_);
  HeaderCounts counts;
  absl::Status status = ReadHeader(cursor, path_, &version_, &counts);
  if (!status.ok()) return status;
  status = ReadMetadata(cursor, counts.metadata, &metadata_);
  if (!status.ok()) return status;
  // Before the tensor table: each tensor's offset must be a multiple of it.
  absl::StatusOr<size_t> alignment = AlignmentOf(path_, metadata_);
  if (!alignment.ok()) return alignment.status();
  alignment_ = *alignment;
  status = ReadTensorInfos(cursor, counts.tensors, alignment_, &tensors_, &tensor_index_);
  if (!status.ok()) return status;

  const size_t header_end = cursor.offset();
  data_offset_ = (header_end + alignment_ - 1) / alignment_ * alignment_;
  status = LocateTensorData({path_, map_, map_size_, data_offset_}, &tensors_);
  if (!status.ok()) return status;
  return CheckTensorsDisjoint(path_, tensors_);
}

const GgufValue* GgufFile::Find(absl::string_view key) const {
  auto it = metadata_.find(std::string(key));
  return it == metadata_.end() ? nullptr : &it->second;
}

const GgufTensorInfo* GgufFile::FindTensor(absl::string_view name) const {
  auto it = tensor_index_.find(std::string(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {

absl::Status Missing(const std::string& path, absl::string_view key) {
  return absl::NotFoundError(absl::StrCat(path, ": metadata key ", Quoted(key), " is missing"));
}

absl::Status WrongType(const std::string& path, absl::string_view key,
                       const GgufValue& value, absl::string_view wanted) {
  std::string actual = ValueTypeName(value.type);
  if (value.type == GgufValueType::kArray) {
    absl::StrAppend(&actual, " of ", ValueTypeName(value.array_type));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      path, ": metadata key ", Quoted(key), " is ", actual, ", expected ", wanted));
}

}  // namespace

absl::StatusOr<std::string> GgufFile::GetString(absl::string_view key) const {
  const GgufValue* value = Find(key);
  if (value == nullptr) return Missing(path_, key);
  if (value->type != GgufValueType::kString) return WrongType(path_, key, *value, "string");
  return value->s;
}

absl::StatusOr<int64_t> GgufFile::GetInt(absl::string_view key) const {
  const GgufValue* value = Find(key);
  if (value == nullptr) return Missing(path_, key);
  int64_t result;
  if (!IntegerValue(*value, &result)) {
    return WrongType(path_, key, *value, "an integer that fits int64");
  }
  return result;
}

absl::StatusOr<double> GgufFile::GetFloat(absl::string_view key) const {
  const GgufValue* value = Find(key);
  if (value == nullptr) return Missing(path_, key);
  double result;
  if (!NumericValue(*value, &result)) return WrongType(path_, key, *value, "a number");
  return result;
}

absl::StatusOr<bool> GgufFile::GetBool(absl::string_view key) const {
  const GgufValue* value = Find(key);
  if (value == nullptr) return Missing(path_, key);
  if (value->type != GgufValueType::kBool) return WrongType(path_, key, *value, "bool");
  return value->u != 0;
}

void GgufFile::DropMetadata(absl::string_view key) {
  const auto it = metadata_.find(std::string(key));
  if (it != metadata_.end()) metadata_.erase(it);
}

absl::StatusOr<std::vector<std::string>> GgufFile::GetStringArray(
    absl::string_view key) const {
  const GgufValue* value = Find(key);
  if (value == nullptr) return Missing(path_, key);
  if (value->type != GgufValueType::kArray || value->array_type != GgufValueType::kString) {
    return WrongType(path_, key, *value, "array of string");
  }
  std::vector<std::string> result;
  result.reserve(value->array.size());
  for (const GgufValue& element : value->array) result.push_back(element.s);
  return result;
}

absl::StatusOr<std::vector<float>> GgufFile::GetFloatArray(absl::string_view key) const {
  const GgufValue* value = Find(key);
  if (value == nullptr) return Missing(path_, key);
  if (value->type != GgufValueType::kArray ||
      !(IsFloat(value->array_type) || IsInteger(value->array_type))) {
    return WrongType(path_, key, *value, "array of numbers");
  }
  std::vector<float> result;
  result.reserve(value->array.size());
  for (const GgufValue& element : value->array) {
    double number = 0;
    NumericValue(element, &number);
    result.push_back(static_cast<float>(number));
  }
  return result;
}

absl::StatusOr<std::vector<int64_t>> GgufFile::GetIntArray(absl::string_view key) const {
  const GgufValue* value = Find(key);
  if (value == nullptr) return Missing(path_, key);
  if (value->type != GgufValueType::kArray || !IsInteger(value->array_type)) {
    return WrongType(path_, key, *value, "array of integers");
  }
  std::vector<int64_t> result;
  result.reserve(value->array.size());
  for (const GgufValue& element : value->array) {
    int64_t number;
    if (!IntegerValue(element, &number)) {
      return absl::InvalidArgumentError(absl::StrCat(
          path_, ": metadata key ", Quoted(key), " holds ", element.u,
          ", which does not fit int64"));
    }
    result.push_back(number);
  }
  return result;
}

}  // namespace llorch
