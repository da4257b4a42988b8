// SentencePiece BPE encoding (worker/tokenizer/spm_tokenizer.cc) of untrusted
// text against fixed real vocabularies loaded once: Llama 2 (llama-spm) and
// Phi-3 (shared/testdata/vocab).
//
// Input: byte 0 picks the vocabulary, byte 1's bits add_special (1) and
// parse_special (2); the rest is the text.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/fuzz/fuzz_support.h"
#include "worker/tokenizer/tokenizer.h"
#include "worker/tokenizer/utf8.h"

namespace {
std::vector<llorch::fuzz::FixedTokenizer>* tokenizers = nullptr;
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  tokenizers = new std::vector<llorch::fuzz::FixedTokenizer>(
      llorch::fuzz::LoadFixedTokenizers("llama"));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace llorch;
  if (size < 2) return 0;
  const fuzz::FixedTokenizer& fixed = (*tokenizers)[data[0] % tokenizers->size()];
  const bool add_special = data[1] & 1;
  const bool parse_special = data[1] & 2;
  const absl::string_view text(reinterpret_cast<const char*>(data + 2), size - 2);
  const Tokenizer& tokenizer = *fixed.tokenizer;
  fuzz::ExerciseTokenizer(tokenizer, text, add_special, parse_special);
  // Lossless: without special-token parsing valid UTF-8 decodes to itself
  // (byte fallback), unless user-defined tokens split the text (the piece
  // after one gets its own space prefix, as in llama.cpp) or the text holds
  // U+2581 itself (SentencePiece's space: it decodes as " "). Invalid UTF-8
  // is cut into characters by lead bytes as llama.cpp does, which can
  // swallow a following space's marker (the APIs refuse such text).
  const auto& types = tokenizer.vocab().token_types;
  const bool has_user_defined =
      std::find(types.begin(), types.end(), TokenType::kUserDefined) != types.end();
  if (!parse_special && !has_user_defined && !absl::StrContains(text, "\xe2\x96\x81") &&
      utf8::Sanitize(text) == text) {
    const std::string decoded = tokenizer.Decode(tokenizer.Encode(text, false, false), false);
    LLORCH_FUZZ_CHECK(decoded == text, absl::StrCat(fixed.name, ": \"", absl::CHexEscape(text),
                                                    "\" decodes as \"", absl::CHexEscape(decoded),
                                                    "\""));
  }
  return 0;
}
