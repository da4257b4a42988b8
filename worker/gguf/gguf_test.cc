// GGUF reader and dequantisation, checked against files written and values
// computed by llama.cpp's own Python package (gguf-py, run by testdata_gen.py).
#include "worker/gguf/gguf.h"

#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "worker/gguf/ggml_types.h"

namespace llorch {
namespace {

using nlohmann::json;

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteBytes(const std::string& path, absl::string_view bytes) {
  // A fresh inode: truncating a just-mapped file is slow on some filesystems.
  std::remove(path.c_str());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::vector<float> ReadF32(const std::string& path) {
  const std::string bytes = ReadBytes(path);
  std::vector<float> values(bytes.size() / sizeof(float));
  std::memcpy(values.data(), bytes.data(), values.size() * sizeof(float));
  return values;
}

json ReadJson(const std::string& path) { return json::parse(ReadBytes(path)); }

std::string RunPython(const std::string& args) {
  const std::string command =
      absl::StrCat(LLORCH_SOURCE_DIR, "/tools/venv-python ", LLORCH_GGUF_TESTDATA_GEN, " ", args);
  const int rc = std::system(command.c_str());
  return rc == 0 ? "" : absl::StrCat("command failed (", rc, "): ", command);
}

// Writes the gguf-py test files once for the whole binary.
class GgufTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char dir_template[] = "/tmp/llorch_gguf_test.XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
    generation_error_ = RunPython(absl::StrCat("files ", dir_));
  }
  static void TearDownTestSuite() {
    if (!dir_.empty()) std::system(absl::StrCat("rm -rf ", dir_).c_str());
  }
  void SetUp() override { ASSERT_EQ(generation_error_, ""); }

  static std::string Path(absl::string_view name) { return absl::StrCat(dir_, "/", name); }

  static std::string dir_;
  static std::string generation_error_;
};
std::string GgufTest::dir_;
std::string GgufTest::generation_error_;

GgufValueType ValueTypeFromName(const std::string& name) {
  static const char* const kNames[] = {"UINT8", "INT8", "UINT16", "INT16", "UINT32",
                                       "INT32", "FLOAT32", "BOOL", "STRING", "ARRAY",
                                       "UINT64", "INT64", "FLOAT64"};
  for (uint32_t i = 0; i < 13; ++i) {
    if (name == kNames[i]) return static_cast<GgufValueType>(i);
  }
  ADD_FAILURE() << "unknown value type name " << name;
  return GgufValueType::kUint8;
}

std::string Hex(const std::string& bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

// Compares a parsed value with the JSON value gguf-py wrote or read.
void ExpectValueEq(const GgufValue& value, const json& expected, const std::string& where) {
  SCOPED_TRACE(where);
  switch (value.type) {
    case GgufValueType::kBool:
      EXPECT_EQ(value.u != 0, expected.get<bool>());
      break;
    case GgufValueType::kString:
      EXPECT_EQ(value.s, expected.get<std::string>());
      break;
    case GgufValueType::kFloat32:
    case GgufValueType::kFloat64:
      EXPECT_EQ(value.f, expected.get<double>());  // exact: same float bits
      break;
    case GgufValueType::kArray:
      ASSERT_TRUE(expected.is_array());
      ASSERT_EQ(value.array.size(), expected.size());
      for (size_t k = 0; k < value.array.size(); ++k) {
        EXPECT_EQ(value.array[k].type, value.array_type);
        ExpectValueEq(value.array[k], expected[k], absl::StrCat(where, "[", k, "]"));
      }
      break;
    default:  // integers
      if (expected.is_number_unsigned()) {
        EXPECT_EQ(value.u, expected.get<uint64_t>());
      } else {
        EXPECT_EQ(value.i, expected.get<int64_t>());
      }
  }
}

TEST_F(GgufTest, ReadsEveryMetadataTypeAsWritten) {
  auto file = GgufFile::Open(Path("metadata.gguf"));
  ASSERT_TRUE(file.ok()) << file.status();
  const json expected = ReadJson(Path("metadata.json"));
  EXPECT_EQ((*file)->version(), 3u);
  EXPECT_EQ((*file)->metadata().size(), expected.size());
  EXPECT_TRUE((*file)->tensors().empty());
  for (const auto& [key, entry] : expected.items()) {
    const GgufValue* value = (*file)->Find(key);
    ASSERT_NE(value, nullptr) << key;
    EXPECT_EQ(value->type, ValueTypeFromName(entry["type"])) << key;
    if (entry.contains("array_type")) {
      EXPECT_EQ(value->array_type, ValueTypeFromName(entry["array_type"])) << key;
    }
    ExpectValueEq(*value, entry["value"], key);
  }
}

TEST_F(GgufTest, TypedGettersConvertOrRefuse) {
  auto opened = GgufFile::Open(Path("metadata.gguf"));
  ASSERT_TRUE(opened.ok()) << opened.status();
  const GgufFile& file = **opened;
  const json expected = ReadJson(Path("metadata.json"));
  auto value_of = [&](const char* key) { return expected[key]["value"]; };

  EXPECT_EQ(*file.GetInt("t.i64"), value_of("t.i64").get<int64_t>());
  EXPECT_EQ(*file.GetInt("t.u32"), value_of("t.u32").get<int64_t>());
  EXPECT_EQ(*file.GetInt("t.u64_small"), value_of("t.u64_small").get<int64_t>());
  // 2^64-1 does not fit int64.
  EXPECT_EQ(file.GetInt("t.u64").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(file.GetInt("t.f32").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*file.GetFloat("t.f32"), value_of("t.f32").get<double>());
  EXPECT_EQ(*file.GetFloat("t.f64"), value_of("t.f64").get<double>());
  EXPECT_EQ(*file.GetFloat("t.i16"), value_of("t.i16").get<double>());
  EXPECT_EQ(*file.GetBool("t.bool_true"), value_of("t.bool_true").get<bool>());
  EXPECT_EQ(*file.GetBool("t.bool_false"), value_of("t.bool_false").get<bool>());
  EXPECT_EQ(file.GetBool("t.u8").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*file.GetString("t.str"), value_of("t.str").get<std::string>());
  EXPECT_EQ(*file.GetString("general.architecture"),
            value_of("general.architecture").get<std::string>());
  EXPECT_EQ(*file.GetStringArray("t.arr_string"),
            value_of("t.arr_string").get<std::vector<std::string>>());
  EXPECT_EQ(*file.GetIntArray("t.arr_int32_big"),
            value_of("t.arr_int32_big").get<std::vector<int64_t>>());
  EXPECT_EQ(*file.GetIntArray("t.arr_int64"),
            value_of("t.arr_int64").get<std::vector<int64_t>>());
  EXPECT_EQ(file.GetIntArray("t.arr_uint64").status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<float> floats;
  for (double v : value_of("t.arr_float32")) floats.push_back(static_cast<float>(v));
  EXPECT_EQ(*file.GetFloatArray("t.arr_float32"), floats);
  EXPECT_EQ(file.GetStringArray("t.arr_int32").status().code(),
            absl::StatusCode::kInvalidArgument);

  const absl::Status missing = file.GetInt("no.such.key").status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StartsWith(missing.message(), file.path())) << missing;
  EXPECT_TRUE(absl::StrContains(missing.message(), "no.such.key")) << missing;
  const absl::Status wrong = file.GetString("t.u8").status();
  EXPECT_EQ(wrong.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(wrong.message(), "t.u8")) << wrong;
  EXPECT_EQ(file.Find("no.such.key"), nullptr);
}

// Bit-for-bit equality (NaN matches any NaN): ggml's dequantisation formulas
// are evaluated in the same float32 order as gguf-py's numpy code, so even the
// quantised types agree exactly.
void ExpectSameFloats(const std::vector<float>& actual, const std::vector<float>& expected,
                      const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  size_t mismatches = 0;
  for (size_t k = 0; k < actual.size(); ++k) {
    const float a = actual[k], e = expected[k];
    const bool same = std::isnan(e) ? std::isnan(a) : std::memcmp(&a, &e, sizeof(float)) == 0;
    if (!same && ++mismatches <= 5) {
      ADD_FAILURE() << what << "[" << k << "]: got " << a << ", gguf-py gives " << e;
    }
  }
  EXPECT_EQ(mismatches, 0u) << what;
}

TEST_F(GgufTest, DequantisesEveryTypeLikeGgufPy) {
  auto opened = GgufFile::Open(Path("tensors.gguf"));
  ASSERT_TRUE(opened.ok()) << opened.status();
  const GgufFile& file = **opened;
  const json manifest = ReadJson(Path("tensors.json"));
  EXPECT_EQ(file.tensors().size(), manifest.size());
  EXPECT_EQ(file.alignment(), 32u);
  for (const json& entry : manifest) {
    const std::string name = entry["name"];
    SCOPED_TRACE(name);
    const GgufTensorInfo* tensor = file.FindTensor(name);
    ASSERT_NE(tensor, nullptr);
    EXPECT_EQ(tensor->name, name);
    EXPECT_EQ(GgmlTypeName(tensor->type), entry["type"].get<std::string>());
    EXPECT_EQ(tensor->shape, entry["shape"].get<std::vector<int64_t>>());
    EXPECT_EQ((file.data_offset() + tensor->offset) % file.alignment(), 0u);
    EXPECT_EQ(tensor->num_bytes, GgmlRowBytes(tensor->type, tensor->shape[0]) *
                                     (tensor->num_elements() / tensor->shape[0]));
    ASSERT_TRUE(GgmlCanDequantize(tensor->type));
    std::vector<float> values(static_cast<size_t>(tensor->num_elements()));
    ASSERT_TRUE(
        DequantizeToF32(tensor->type, tensor->data, tensor->num_elements(), values.data()).ok());
    ExpectSameFloats(values, ReadF32(Path(name + ".f32")), name);
  }
  EXPECT_EQ(file.FindTensor("no_such_tensor"), nullptr);
}

// Big enough to take the multi-threaded path; built by tiling a gguf-py tensor.
TEST_F(GgufTest, DequantisesLargeTensorsAcrossThreads) {
  auto opened = GgufFile::Open(Path("tensors.gguf"));
  ASSERT_TRUE(opened.ok()) << opened.status();
  for (const char* name : {"q4_1", "f16_all"}) {
    const GgufTensorInfo* tensor = (*opened)->FindTensor(name);
    ASSERT_NE(tensor, nullptr);
    const std::vector<float> reference = ReadF32(Path(absl::StrCat(name, ".f32")));
    const int copies = static_cast<int>((int64_t{5} << 20) / tensor->num_elements()) + 1;
    std::string tiled;
    std::vector<float> tiled_reference;
    for (int c = 0; c < copies; ++c) {
      tiled.append(reinterpret_cast<const char*>(tensor->data), tensor->num_bytes);
      tiled_reference.insert(tiled_reference.end(), reference.begin(), reference.end());
    }
    std::vector<float> values(tiled_reference.size());
    ASSERT_TRUE(DequantizeToF32(tensor->type, tiled.data(),
                                static_cast<int64_t>(values.size()), values.data())
                    .ok());
    ExpectSameFloats(values, tiled_reference, name);
  }
}

TEST_F(GgufTest, DequantiseRejectsPartialBlocksAndUnsupportedTypes) {
  std::vector<uint8_t> bytes(1024);
  std::vector<float> out(1024);
  EXPECT_EQ(DequantizeToF32(GgmlType::kQ4_0, bytes.data(), 33, out.data()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(GgmlCanDequantize(GgmlType::kIQ2_XXS));
  EXPECT_EQ(DequantizeToF32(GgmlType::kIQ2_XXS, bytes.data(), 256, out.data()).code(),
            absl::StatusCode::kUnimplemented);
}

TEST_F(GgufTest, BlockLayoutsMatchGgufPy) {
  const json sizes = ReadJson(Path("quant_sizes.json"));
  for (const auto& [name, entry] : sizes.items()) {
    const GgmlType type = static_cast<GgmlType>(entry[0].get<uint32_t>());
    SCOPED_TRACE(name);
    ASSERT_TRUE(GgmlTypeKnown(type));
    EXPECT_EQ(GgmlTypeName(type), name);
    EXPECT_EQ(GgmlBlockSize(type), entry[1].get<int64_t>());
    // gguf-py 0.17.1 still lists Q8_1 with float scales (40 bytes); ggml's
    // block_q8_1 has two halves (static_assert in ggml-common.h): 36 bytes.
    if (type != GgmlType::kQ8_1) {
      EXPECT_EQ(GgmlBlockBytes(type), entry[2].get<size_t>());
    }
  }
  EXPECT_FALSE(GgmlTypeKnown(static_cast<GgmlType>(4)));
  EXPECT_FALSE(GgmlTypeKnown(static_cast<GgmlType>(99)));
  EXPECT_STREQ(GgmlTypeName(static_cast<GgmlType>(99)), "type 99");
}

TEST_F(GgufTest, HonoursCustomAlignment) {
  auto opened = GgufFile::Open(Path("aligned64.gguf"));
  ASSERT_TRUE(opened.ok()) << opened.status();
  const GgufFile& file = **opened;
  EXPECT_EQ(file.alignment(), 64u);
  EXPECT_EQ(file.data_offset() % 64, 0u);
  for (const char* name : {"a", "b", "c"}) {
    const GgufTensorInfo* tensor = file.FindTensor(name);
    ASSERT_NE(tensor, nullptr) << name;
    EXPECT_EQ(tensor->offset % 64, 0u);
    const std::vector<float> expected = ReadF32(Path(absl::StrCat("aligned64_", name, ".f32")));
    std::vector<float> actual(expected.size());
    ASSERT_EQ(tensor->num_bytes, expected.size() * sizeof(float));
    std::memcpy(actual.data(), tensor->data, tensor->num_bytes);
    EXPECT_EQ(actual, expected) << name;
  }
}

// A tensor's bytes stay readable through data_owner() after the file is
// closed (what a model multiplying from the mapping holds), and the mapping
// goes when its last holder does.
TEST_F(GgufTest, DataOwnerKeepsTheMappingAfterClose) {
  auto opened = GgufFile::Open(Path("aligned64.gguf"));
  ASSERT_TRUE(opened.ok()) << opened.status();
  const GgufTensorInfo* tensor = (*opened)->FindTensor("b");
  ASSERT_NE(tensor, nullptr);
  const auto* data = reinterpret_cast<const float*>(tensor->data);
  const size_t count = tensor->num_bytes / sizeof(float);
  std::shared_ptr<const void> owner = (*opened)->data_owner();
  ASSERT_NE(owner, nullptr);
  std::weak_ptr<const void> watch = owner;
  opened->reset();  // the GgufFile is gone
  const std::vector<float> expected = ReadF32(Path("aligned64_b.f32"));
  EXPECT_EQ(std::vector<float>(data, data + count), expected);
  owner.reset();
  EXPECT_TRUE(watch.expired());
}

void ExpectError(const absl::StatusOr<std::unique_ptr<GgufFile>>& result,
                 const std::string& path, absl::StatusCode code,
                 absl::string_view fragment) {
  ASSERT_FALSE(result.ok()) << path;
  EXPECT_EQ(result.status().code(), code) << result.status();
  EXPECT_TRUE(absl::StartsWith(result.status().message(), path)) << result.status();
  EXPECT_TRUE(absl::StrContains(result.status().message(), fragment))
      << result.status() << " lacks " << fragment;
}

TEST_F(GgufTest, RejectsCorruptFiles) {
  const json manifest = ReadJson(Path("corrupt/manifest.json"));
  ASSERT_GT(manifest.size(), 10u);
  for (const json& entry : manifest) {
    const std::string path = Path(absl::StrCat("corrupt/", entry["file"].get<std::string>()));
    SCOPED_TRACE(path);
    ASSERT_TRUE(entry["code"] == "DATA_LOSS" || entry["code"] == "INVALID_ARGUMENT");
    const absl::StatusCode code = entry["code"] == "DATA_LOSS"
                                      ? absl::StatusCode::kDataLoss
                                      : absl::StatusCode::kInvalidArgument;
    ExpectError(GgufFile::Open(path), path, code, entry["contains"].get<std::string>());
  }
  auto base = GgufFile::Open(Path("corrupt/base.gguf"));
  EXPECT_TRUE(base.ok()) << base.status();  // the variants' unpatched original
}

TEST_F(GgufTest, MissingFileAndDirectory) {
  const std::string missing = Path("does_not_exist.gguf");
  ExpectError(GgufFile::Open(missing), missing, absl::StatusCode::kNotFound, "cannot open");
  ExpectError(GgufFile::Open(dir_), dir_, absl::StatusCode::kInvalidArgument, "regular file");
}

// Every prefix of a valid file that ends before its last tensor's data is
// DataLoss; longer prefixes (cut in the trailing padding) still open. A file
// without tensors may also be cut in the padding after its header.
void CheckTruncations(const std::string& source, const std::string& scratch,
                      size_t dense_prefix, size_t stride) {
  auto whole = GgufFile::Open(source);
  ASSERT_TRUE(whole.ok()) << whole.status();
  const size_t data_offset = (*whole)->data_offset();
  size_t needed = (*whole)->tensors().empty() ? data_offset - (*whole)->alignment() + 1
                                              : data_offset;
  for (const GgufTensorInfo& t : (*whole)->tensors()) {
    needed = std::max<size_t>(needed, data_offset + t.offset + t.num_bytes);
  }
  const std::string bytes = ReadBytes(source);
  bool opened_shorter = false;
  for (size_t cut = 0; cut < bytes.size();
       cut += (cut < dense_prefix || cut + 64 > needed) ? 1 : stride) {
    WriteBytes(scratch, absl::string_view(bytes).substr(0, cut));
    auto result = GgufFile::Open(scratch);
    if (cut < needed || (result.ok() == false && !opened_shorter && cut < data_offset)) {
      ExpectError(result, scratch, absl::StatusCode::kDataLoss, "truncated");
      if (!result.ok() && result.status().code() != absl::StatusCode::kDataLoss) {
        FAIL() << "cut at " << cut;  // stop after the first wrong classification
      }
    } else {
      EXPECT_TRUE(result.ok()) << "cut at " << cut << ": " << result.status();
      opened_shorter = true;
    }
  }
}

TEST_F(GgufTest, TruncatedAtEveryOffsetIsDataLoss) {
  CheckTruncations(Path("corrupt/base.gguf"), Path("truncated_base.gguf"), SIZE_MAX, 1);
  CheckTruncations(Path("metadata.gguf"), Path("truncated_metadata.gguf"), 4096, 5);
  CheckTruncations(Path("tensors.gguf"), Path("truncated_tensors.gguf"), 2048, 1021);
}

TEST(GgufRealModelTest, MatchesGgufPyReader) {
  const char* model = std::getenv("LLORCH_DEFAULT_MODEL");
  if (model == nullptr) GTEST_SKIP() << "LLORCH_DEFAULT_MODEL is not set (source tools/env.sh)";
  char dir_template[] = "/tmp/llorch_gguf_model_test.XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template;
  ASSERT_EQ(RunPython(absl::StrCat("describe ", model, " ", dir)), "");
  const json described = ReadJson(dir + "/describe.json");

  auto opened = GgufFile::Open(model);
  ASSERT_TRUE(opened.ok()) << opened.status();
  const GgufFile& file = **opened;
  EXPECT_EQ(file.version(), described["version"].get<uint32_t>());
  EXPECT_EQ(file.alignment(), described["alignment"].get<size_t>());
  EXPECT_EQ(file.data_offset(), described["data_offset"].get<size_t>());

  const json& metadata = described["metadata"];
  EXPECT_EQ(file.metadata().size(), metadata.size());
  for (const auto& [key, entry] : metadata.items()) {
    SCOPED_TRACE(key);
    const GgufValue* value = file.Find(key);
    ASSERT_NE(value, nullptr);
    EXPECT_EQ(value->type, ValueTypeFromName(entry["type"]));
    if (entry.contains("array_type")) {
      EXPECT_EQ(value->array_type, ValueTypeFromName(entry["array_type"]));
    }
    if (entry.contains("hex")) {
      if (value->type == GgufValueType::kString) {
        EXPECT_EQ(Hex(value->s), entry["hex"].get<std::string>());
      } else {
        ASSERT_EQ(value->array.size(), entry["hex"].size());
        for (size_t k = 0; k < value->array.size(); ++k) {
          ASSERT_EQ(Hex(value->array[k].s), entry["hex"][k].get<std::string>()) << k;
        }
      }
    } else if (entry.contains("value")) {
      ExpectValueEq(*value, entry["value"], key);
    }
  }

  const json& tensors = described["tensors"];
  ASSERT_EQ(file.tensors().size(), tensors.size());
  for (size_t k = 0; k < tensors.size(); ++k) {
    const GgufTensorInfo& tensor = file.tensors()[k];
    SCOPED_TRACE(tensor.name);
    EXPECT_EQ(tensor.name, tensors[k]["name"].get<std::string>());
    EXPECT_EQ(static_cast<uint32_t>(tensor.type), tensors[k]["type"].get<uint32_t>());
    EXPECT_EQ(tensor.shape, tensors[k]["shape"].get<std::vector<int64_t>>());
    EXPECT_EQ(file.data_offset() + tensor.offset, tensors[k]["data_offset"].get<size_t>());
    EXPECT_EQ(tensor.num_bytes, tensors[k]["n_bytes"].get<size_t>());
    EXPECT_EQ(file.FindTensor(tensor.name), &tensor);
  }

  // One tensor of each type in the file, dequantised by both sides.
  ASSERT_FALSE(described["references"].empty());
  for (const auto& [type_name, reference] : described["references"].items()) {
    const GgufTensorInfo* tensor = file.FindTensor(reference["tensor"].get<std::string>());
    ASSERT_NE(tensor, nullptr);
    std::vector<float> values(static_cast<size_t>(tensor->num_elements()));
    ASSERT_TRUE(
        DequantizeToF32(tensor->type, tensor->data, tensor->num_elements(), values.data()).ok());
    ExpectSameFloats(values, ReadF32(dir + "/" + reference["file"].get<std::string>()),
                     tensor->name);
  }
  std::system(absl::StrCat("rm -rf ", dir).c_str());
}

}  // namespace
}  // namespace llorch
