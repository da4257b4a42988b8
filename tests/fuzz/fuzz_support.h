// Helpers shared by the fuzzers in tests/fuzz (built only in build-fuzz/).
#ifndef LLORCH_TESTS_FUZZ_FUZZ_SUPPORT_H_
#define LLORCH_TESTS_FUZZ_FUZZ_SUPPORT_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "worker/gguf/gguf.h"
#include "worker/tokenizer/tokenizer.h"

namespace llorch::fuzz {

// Aborts with `message` (libFuzzer then saves the input as a crash): for
// broken invariants, which are bugs even though nothing crashed.
[[noreturn]] void Fail(absl::string_view message);
#define LLORCH_FUZZ_CHECK(cond, message)                                           \
  do {                                                                             \
    if (!(cond)) ::llorch::fuzz::Fail(std::string(#cond ": ") + std::string(message)); \
  } while (0)

// A path whose file holds exactly these bytes: an in-memory file (memfd),
// rewritten on every call, as /proc/self/fd/N. For readers that open paths.
const std::string& BytesAsFile(const uint8_t* data, size_t size);

// This process's own scratch directory (on /dev/shm when there is one).
const std::string& ScratchDir();
void WriteFile(const std::string& path, absl::string_view data);

// Splits fuzz input into parts at a separator line ("\n--8<--\n" by default),
// so that one input can carry several files or fields.
std::vector<absl::string_view> SplitParts(absl::string_view input, size_t max_parts,
                                          absl::string_view separator = "\n--8<--\n");

// A tokenizer over a fixed vocabulary, loaded once per process.
struct FixedTokenizer {
  std::string name;
  std::unique_ptr<GgufFile> gguf;  // the file it came from (null if built in memory)
  std::unique_ptr<Tokenizer> tokenizer;
};

// The real vocabularies of tokenizer model `model` ("gpt2": byte-level BPE;
// "llama": SentencePiece): shared/testdata/vocab/ggml-vocab-*.gguf
// ($LLORCH_FUZZ_VOCAB_DIR overrides the folder) and, for gpt2, SmolLM2
// ($LLORCH_DEFAULT_MODEL). When none of the files exist (a checkout without
// shared/), a small vocabulary built in memory, so the fuzzer still runs.
std::vector<FixedTokenizer> LoadFixedTokenizers(const std::string& model);

// Encodes `text`, decodes the ids, streams them through an
// IncrementalDetokenizer, and checks what the interfaces promise: ids in
// range; streamed text == Decode(ids) when that is valid UTF-8.
void ExerciseTokenizer(const Tokenizer& tokenizer, absl::string_view text, bool add_special,
                       bool parse_special);

}  // namespace llorch::fuzz

#endif  // LLORCH_TESTS_FUZZ_FUZZ_SUPPORT_H_
