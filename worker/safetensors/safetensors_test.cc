#include "worker/safetensors/safetensors.h"

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace llorch {
namespace {

class SafeTensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/llorch-safetensors-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }

  // Writes a file: u64 header length, `header`, then `data`.
  std::string Write(const std::string& header, const std::vector<uint8_t>& data,
                    int64_t header_length = -1) {
    const std::string path = dir_ + "/t" + std::to_string(count_++) + ".safetensors";
    std::ofstream out(path, std::ios::binary);
    const uint64_t n = header_length < 0 ? header.size() : static_cast<uint64_t>(header_length);
    out.write(reinterpret_cast<const char*>(&n), 8);
    out.write(header.data(), header.size());
    out.write(reinterpret_cast<const char*>(data.data()), data.size());
    return path;
  }

  std::string dir_;
  int count_ = 0;
};

TEST_F(SafeTensorsTest, ReadsTensorsOfEachDtype) {
  std::vector<uint8_t> data(4 * 6 + 2 * 2 + 2 * 3);
  const float values[6] = {1, -2, 3.5f, 0, 1e-3f, 42};
  std::memcpy(data.data(), values, sizeof(values));
  const std::string path = Write(
      R"({"__metadata__":{"format":"pt"},)"
      R"("w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
      R"("h":{"dtype":"F16","shape":[2],"data_offsets":[24,28]},)"
      R"("b":{"dtype":"BF16","shape":[3],"data_offsets":[28,34]}})",
      data);
  auto file = SafeTensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  const SafeTensor* w = (*file)->Find("w");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->type, GgmlType::kF32);
  EXPECT_EQ(w->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(w->num_bytes, 24u);
  EXPECT_EQ(std::memcmp(w->data, values, 24), 0);
  EXPECT_EQ((*file)->Find("h")->type, GgmlType::kF16);
  EXPECT_EQ((*file)->Find("b")->type, GgmlType::kBF16);
  EXPECT_EQ((*file)->Find("b")->num_elements(), 3);
  EXPECT_EQ((*file)->Find("missing"), nullptr);
}

TEST_F(SafeTensorsTest, RejectsMalformedFiles) {
  struct Case {
    const char* name;
    std::string header;
    size_t data_bytes;
    int64_t header_length;
    absl::StatusCode code;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"header past the end", "{}", 0, 1000, absl::StatusCode::kDataLoss, "header"},
      {"not JSON", "{nope", 0, -1, absl::StatusCode::kInvalidArgument, "JSON"},
      {"not an object", "[1,2]", 0, -1, absl::StatusCode::kInvalidArgument, "JSON"},
      {"unsupported dtype", R"({"x":{"dtype":"I8","shape":[4],"data_offsets":[0,4]}})", 4, -1,
       absl::StatusCode::kInvalidArgument, "I8"},
      {"size mismatch", R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8, -1,
       absl::StatusCode::kInvalidArgument, "shape needs"},
      {"range past the data", R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8,
       -1, absl::StatusCode::kDataLoss, "outside"},
      {"overlap", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                  R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
       12, -1, absl::StatusCode::kInvalidArgument, "overlap"},
      {"overlap names both tensors",
       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
       8, -1, absl::StatusCode::kInvalidArgument, "tensors a (bytes [0, 8)) and b"},
      {"reversed offsets", R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", 8, -1,
       absl::StatusCode::kInvalidArgument, "end before they begin"},
      {"header length 2^62", "{}", 0, int64_t{1} << 62, absl::StatusCode::kDataLoss, "header"},
      {"missing field", R"({"x":{"dtype":"F32","shape":[2]}})", 8, -1,
       absl::StatusCode::kInvalidArgument, "malformed"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = Write(c.header, std::vector<uint8_t>(c.data_bytes), c.header_length);
    auto file = SafeTensorsFile::Open(path);
    ASSERT_FALSE(file.ok());
    EXPECT_EQ(file.status().code(), c.code) << file.status();
    EXPECT_NE(file.status().message().find(c.message), std::string::npos) << file.status();
    EXPECT_NE(file.status().message().find(path), std::string::npos) << file.status();
  }
  auto missing = SafeTensorsFile::Open(dir_ + "/absent.safetensors");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  std::ofstream(dir_ + "/short.safetensors") << "abc";
  EXPECT_EQ(SafeTensorsFile::Open(dir_ + "/short.safetensors").status().code(),
            absl::StatusCode::kDataLoss);
}

// Found by tests/fuzz (safetensors_fuzzer): the shape's element count
// overflowed int64 (undefined behaviour), and dimensions past INT64_MAX read
// as negative, so [2^64-1, 2^64-1] F32 passed as 4 bytes of shape [-1, -1].
TEST_F(SafeTensorsTest, ShapesWhoseSizeOverflowsAreRefused) {
  for (const char* shape : {"[4294967296,4294967296]", "[4611686018427387904,4]",
                            "[18446744073709551615,18446744073709551615]",
                            "[9223372036854775808]"}) {
    const std::string path = Write(
        std::string(R"({"x":{"dtype":"F32","shape":)") + shape + R"(,"data_offsets":[0,4]}})",
        std::vector<uint8_t>(4));
    auto file = SafeTensorsFile::Open(path);
    EXPECT_TRUE(absl::IsInvalidArgument(file.status())) << shape << ": " << file.status();
  }
  // A zero dimension still makes an empty tensor, however big the others.
  const std::string path = Write(
      R"({"x":{"dtype":"F32","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}})", {});
  auto file = SafeTensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->Find("x")->num_bytes, 0u);
}

}  // namespace
}  // namespace llorch
