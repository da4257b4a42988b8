// GGUF files (worker/gguf/gguf.h) from untrusted bytes: the reader, every
// typed getter, dequantisation of (small) tensors, the model config and the
// tokenizer built from the file's tokenizer.ggml.* vocabulary
// (worker/tokenizer/vocab_gguf.cc), encoding a few fixed texts.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tests/fuzz/fuzz_support.h"
#include "worker/gguf/ggml_types.h"
#include "worker/gguf/gguf.h"
#include "worker/model/model_config.h"
#include "worker/tokenizer/tokenizer.h"

namespace llorch::fuzz {
namespace {

// Dequantising is linear in the tensor's size; bigger tensors only cost time.
constexpr int64_t kMaxDequantElements = int64_t{1} << 16;

void ExerciseMetadata(const GgufFile& file) {
  for (const auto& [key, value] : file.metadata()) {
    LLORCH_FUZZ_CHECK(file.Find(key) == &value, key);
    (void)file.GetString(key);
    (void)file.GetInt(key);
    (void)file.GetFloat(key);
    (void)file.GetBool(key);
    (void)file.GetStringArray(key);
    (void)file.GetFloatArray(key);
    (void)file.GetIntArray(key);
  }
  LLORCH_FUZZ_CHECK(absl::IsNotFound(file.GetInt("no.such.key").status()), "missing key");
}

void ExerciseTensors(const GgufFile& file) {
  for (const GgufTensorInfo& t : file.tensors()) {
    LLORCH_FUZZ_CHECK(file.FindTensor(t.name) != nullptr, t.name);
    LLORCH_FUZZ_CHECK(GgmlTypeKnown(t.type), t.name);
    LLORCH_FUZZ_CHECK(t.offset % file.alignment() == 0, t.name);
    // The data lies inside the file.
    LLORCH_FUZZ_CHECK(file.data_offset() + t.offset <= file.file_size() &&
                          t.num_bytes <= file.file_size() - file.data_offset() - t.offset,
                      absl::StrCat(t.name, ": ", t.num_bytes, " bytes at ", t.offset));
    const int64_t n = t.num_elements();
    LLORCH_FUZZ_CHECK(n >= 0, t.name);
    if (!t.shape.empty()) {
      LLORCH_FUZZ_CHECK(GgmlRowBytes(t.type, t.shape[0]) * static_cast<size_t>(n / std::max<int64_t>(t.shape[0], 1)) ==
                            t.num_bytes || n == 0,
                        absl::StrCat(t.name, ": row bytes disagree with num_bytes"));
    }
    if (GgmlCanDequantize(t.type) && n > 0 && n <= kMaxDequantElements) {
      std::vector<float> out(static_cast<size_t>(n));
      const absl::Status s = DequantizeToF32(t.type, t.data, n, out.data());
      LLORCH_FUZZ_CHECK(s.ok(), s.ToString());
    }
  }
}

void ExerciseVocab(const GgufFile& file) {
  absl::StatusOr<VocabData> vocab = VocabFromGguf(file);
  if (!vocab.ok()) return;
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Create(*std::move(vocab));
  if (!tokenizer.ok()) return;
  for (const char* text : {"Hello world", " <s>a</s> <|im_start|>user\n\xc3\xa9\xf0\x9f\xa6\x99 12345 ",
                           "\xff\xfe invalid \xed\xa0\x80", ""}) {
    for (int flags = 0; flags < 4; ++flags) {
      ExerciseTokenizer(**tokenizer, text, flags & 1, flags & 2);
    }
  }
  // Every id decodes, whatever its type and text.
  std::vector<int32_t> all;
  for (int32_t id = 0; id < (*tokenizer)->vocab_size() && id < 4096; ++id) all.push_back(id);
  (void)(*tokenizer)->Decode(all, /*render_special=*/true);
}

}  // namespace
}  // namespace llorch::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace llorch;
  const std::string& path = fuzz::BytesAsFile(data, size);
  absl::StatusOr<std::unique_ptr<GgufFile>> file = GgufFile::Open(path);
  if (!file.ok()) {
    // gguf.h: InvalidArgument for malformed content, DataLoss for truncation.
    LLORCH_FUZZ_CHECK(absl::IsInvalidArgument(file.status()) || absl::IsDataLoss(file.status()),
                      file.status().ToString());
    return 0;
  }
  fuzz::ExerciseMetadata(**file);
  fuzz::ExerciseTensors(**file);
  (void)ModelConfigFromGguf(**file);
  fuzz::ExerciseVocab(**file);
  return 0;
}
