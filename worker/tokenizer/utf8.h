// UTF-8 helpers shared by the tokenizers and the incremental detokenizer.
#ifndef LLORCH_WORKER_TOKENIZER_UTF8_H_
#define LLORCH_WORKER_TOKENIZER_UTF8_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace llorch {
namespace utf8 {

// Length of the sequence a lead byte announces, as llama.cpp counts it
// (continuation and invalid bytes count 1).
size_t SequenceLength(unsigned char lead);

void AppendCodepoint(uint32_t cp, std::string* out);

// Re-encodes `text` the way llama.cpp decodes it before pre-tokenisation:
// every byte that does not start a well-formed sequence becomes U+FFFD. Also
// replaces what PCRE2 refuses as UTF-8 (surrogates, overlong forms, code
// points above U+10FFFF) so that the result is always valid UTF-8.
std::string Sanitize(absl::string_view text);

// Unicode Normalization Form C (through utf8proc) of valid UTF-8 text.
std::string Nfc(absl::string_view text);

// Status of the sequence starting at text[pos]:
//   > 0: a complete, valid sequence of that many bytes;
//   0:   a valid but truncated prefix (text ends inside it);
//   < 0: invalid; -n means the first n bytes are the maximal subpart of an
//        ill-formed sequence (Unicode's "U+FFFD substitution of maximal
//        subparts", as Python, browsers and Rust's from_utf8_lossy replace).
int CheckSequence(absl::string_view text, size_t pos);

// GPT-2 byte-level BPE: each byte has a printable code point standing for it.
const std::string& ByteToUnicode(uint8_t byte);
// Inverse for one code point (as UTF-8); returns -1 if it stands for no byte.
int UnicodeToByte(uint32_t cp);

// Decodes one code point at text[*pos] (valid UTF-8 assumed), advancing *pos.
uint32_t DecodeAt(absl::string_view text, size_t* pos);

}  // namespace utf8
}  // namespace llorch

#endif  // LLORCH_WORKER_TOKENIZER_UTF8_H_
