// Byte-level BPE encoding (worker/tokenizer/bpe_tokenizer.cc) of untrusted
// text against fixed real vocabularies loaded once: GPT-2, Llama 3, Qwen2
// (shared/testdata/vocab) and SmolLM2 ($LLORCH_DEFAULT_MODEL).
//
// Input: byte 0 picks the vocabulary, byte 1's bits add_special (1) and
// parse_special (2); the rest is the text.
#include <algorithm>
#include <bitset>
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_set>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "tests/fuzz/fuzz_support.h"
#include "worker/tokenizer/tokenizer.h"
#include "worker/tokenizer/utf8.h"

namespace {
std::vector<llorch::fuzz::FixedTokenizer>* tokenizers = nullptr;
// Per tokenizer: the bytes whose byte-level symbol is a token. Some real
// vocabularies lack a few (SmolLM2: 0x04, 0x06, 0x13, 0x14, 0x16, 0x1D);
// those bytes cannot be encoded and are dropped, as in llama.cpp.
std::vector<std::bitset<256>>* encodable = nullptr;
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  tokenizers = new std::vector<llorch::fuzz::FixedTokenizer>(
      llorch::fuzz::LoadFixedTokenizers("gpt2"));
  encodable = new std::vector<std::bitset<256>>();
  for (const llorch::fuzz::FixedTokenizer& t : *tokenizers) {
    const auto& tokens = t.tokenizer->vocab().tokens;
    const std::unordered_set<std::string> texts(tokens.begin(), tokens.end());
    std::bitset<256> bytes;
    for (int b = 0; b < 256; ++b) {
      bytes[b] = texts.count(llorch::utf8::ByteToUnicode(static_cast<uint8_t>(b))) > 0;
    }
    encodable->push_back(bytes);
  }
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
  const std::bitset<256>& bytes = (*encodable)[data[0] % tokenizers->size()];
  fuzz::ExerciseTokenizer(tokenizer, text, add_special, parse_special);
  // Lossless: valid UTF-8 of encodable bytes, without special-token parsing,
  // decodes to itself.
  const bool all_encodable = std::all_of(text.begin(), text.end(), [&](char c) {
    return bytes[static_cast<unsigned char>(c)];
  });
  if (!parse_special && !tokenizer.vocab().nfc && all_encodable && utf8::Sanitize(text) == text) {
    const std::string decoded = tokenizer.Decode(tokenizer.Encode(text, false, false), false);
    LLORCH_FUZZ_CHECK(decoded == text, absl::StrCat(fixed.name, ": \"", absl::CHexEscape(text),
                                                    "\" decodes as \"", absl::CHexEscape(decoded),
                                                    "\""));
  }
  return 0;
}
