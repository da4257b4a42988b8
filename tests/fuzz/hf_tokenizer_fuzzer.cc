// Hugging Face tokenizer files (worker/convert/hf_tokenizer.h) from untrusted
// bytes, then the tokenizer built from them encoding text.
//
// Input: up to four parts separated by "\n--8<--\n": tokenizer.json,
// tokenizer_config.json, config.json, and a text to encode (fixed texts when
// absent). A part that is absent is a file that is absent.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tests/fuzz/fuzz_support.h"
#include "worker/convert/hf_tokenizer.h"
#include "worker/gguf/gguf.h"
#include "worker/tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace llorch;
  const absl::string_view input(reinterpret_cast<const char*>(data), size);
  const std::vector<absl::string_view> parts = fuzz::SplitParts(input, 4);
  const std::string& dir = fuzz::ScratchDir();
  const char* const files[] = {"tokenizer.json", "tokenizer_config.json", "config.json"};
  for (size_t i = 0; i < 3; ++i) {
    const std::string path = absl::StrCat(dir, "/", files[i]);
    if (i < parts.size()) {
      fuzz::WriteFile(path, parts[i]);
    } else {
      unlink(path.c_str());
    }
  }
  std::map<std::string, GgufValue> metadata;
  const absl::Status status = AddHfTokenizerMetadata(dir, /*vocab_size=*/0, &metadata);
  if (!status.ok()) {
    LLORCH_FUZZ_CHECK(absl::IsInvalidArgument(status), status.ToString());
    return 0;
  }
  std::unique_ptr<GgufFile> gguf =
      GgufFile::FromParts(dir + "/tokenizer.json", std::move(metadata), {}, {});
  absl::StatusOr<VocabData> vocab = VocabFromGguf(*gguf);
  if (!vocab.ok()) return 0;
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Create(*std::move(vocab));
  if (!tokenizer.ok()) return 0;
  std::vector<std::string> texts;
  if (parts.size() >= 4) {
    texts.emplace_back(parts[3]);
  } else {
    texts = {"Hello world! 123 \xc3\xa9\xf0\x9f\xa6\x99", " <s> <|endoftext|>\n\n  x", ""};
  }
  for (const std::string& text : texts) {
    for (int flags = 0; flags < 4; ++flags) {
      fuzz::ExerciseTokenizer(**tokenizer, text, flags & 1, flags & 2);
    }
  }
  return 0;
}
