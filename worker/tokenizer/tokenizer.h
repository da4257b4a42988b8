// Tokenizers built from a model's vocabulary: SentencePiece-style BPE with
// scores and byte fallback (GGUF `tokenizer.ggml.model` = "llama") and
// byte-level BPE with merges and a named pre-tokenizer ("gpt2").
#ifndef LLORCH_WORKER_TOKENIZER_TOKENIZER_H_
#define LLORCH_WORKER_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace llorch {

class GgufFile;

// Token attribute as in GGUF `tokenizer.ggml.token_type`.
enum class TokenType : int32_t {
  kUndefined = 0, kNormal = 1, kUnknown = 2, kControl = 3,
  kUserDefined = 4, kUnused = 5, kByte = 6,
};

// Everything a tokenizer needs, independent of the file format it came from.
struct VocabData {
  std::string model;  // "llama" (SentencePiece BPE) or "gpt2" (byte-level BPE)
  std::string pre;    // pre-tokenizer name for gpt2: "default", "gpt-2", "llama-bpe", "qwen2", "smollm", ...
  std::vector<std::string> tokens;
  std::vector<float> scores;           // may be empty for gpt2
  std::vector<TokenType> token_types;  // may be empty: all kNormal
  std::vector<std::string> merges;     // gpt2: "a b" pairs in rank order
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int32_t unk_id = -1;
  int32_t pad_id = -1;
  std::vector<int32_t> eog_ids;  // every end-of-generation id (eos, eot, <|im_end|>, ...)
  bool add_bos = false;
  bool add_eos = false;
  bool add_space_prefix = true;  // SentencePiece: prepend "▁" to the text
  int32_t eot_id = -1;  // end of turn (<|eot_id|>, <|im_end|>, ...), -1 if none
  int32_t eom_id = -1;  // end of message (<|eom_id|>), -1 if none
  // Special tokens that swallow the whitespace after them when matched in
  // text (llama.cpp's RSTRIP attribute, which it sets for Phi-3 vocabularies).
  std::vector<int32_t> rstrip_ids;
  // Read from a Hugging Face tokenizer.json (llorch.tokenizer.* keys, set in
  // memory only): behave as the tokenizers library does. Token types come
  // from the file alone (no control-by-text overrides) and only the
  // configured EOS ids end generation.
  bool hf_semantics = false;
  bool nfc = false;  // NFC-normalise text before pre-tokenisation (Qwen)
};

// Reads tokenizer.ggml.* keys. Errors name the file and the missing/bad key.
absl::StatusOr<VocabData> VocabFromGguf(const GgufFile& gguf);

class Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(VocabData vocab);
  virtual ~Tokenizer() = default;

  // add_special: add BOS (and EOS) per the vocabulary's add_bos/add_eos.
  // parse_special: text matching control/user-defined token texts becomes
  // those tokens (as llama.cpp's llama_tokenize with parse_special=true).
  virtual std::vector<int32_t> Encode(absl::string_view text, bool add_special,
                                      bool parse_special) const = 0;
  // The raw bytes a token stands for ("▁" -> " ", byte tokens -> the byte,
  // byte-level BPE unmapped). Control tokens give "" unless render_special.
  virtual std::string TokenToPiece(int32_t id, bool render_special) const = 0;
  // Concatenated pieces. With add_space_prefix the first piece after an
  // optional leading BOS loses one leading space (the one Encode added), so
  // Decode(Encode(text)) == text. Unlike llama.cpp's detokenize, no
  // clean_up_tokenization_spaces (" ," -> ","): the text stays lossless.
  std::string Decode(const std::vector<int32_t>& ids, bool render_special) const;

  const VocabData& vocab() const { return vocab_; }
  int32_t vocab_size() const { return static_cast<int32_t>(vocab_.tokens.size()); }
  bool IsEog(int32_t id) const;
  // The token's type (kNormal when the vocabulary has no types).
  TokenType token_type(int32_t id) const;
  // Control and unknown tokens: rendered as "" unless render_special.
  bool IsControl(int32_t id) const;

 protected:
  explicit Tokenizer(VocabData vocab);
  VocabData vocab_;
  std::vector<bool> is_eog_;  // indexed by id
};

// Turns a stream of token ids into text without ever emitting half a UTF-8
// character: bytes of an incomplete sequence are held until completed, each
// maximal subpart of an ill-formed sequence becomes one U+FFFD. Control tokens
// render as "". Text is what llama.cpp's server and TGI stream: the pieces as
// they are, except that a stream with no context (a whole text, or a
// completion of a prompt that is only BOS) loses the first piece's prefix
// space as Decode does (one leading BOS of the whole sequence skipped, the
// piece after it stripped). So the concatenated output plus Flush() equals
// Decode(ids, false) without context, and the concatenated token_to_piece of
// the ids (Hugging Face: decode(prompt + ids) minus decode(prompt)) with one.
class IncrementalDetokenizer {
 public:
  // `context`: the tokens before the streamed ones (the prompt); only whether
  // it is empty, a lone BOS, or more matters.
  explicit IncrementalDetokenizer(const Tokenizer* tokenizer,
                                  absl::Span<const int32_t> context = {});
  // Returns the newly completed text (possibly empty).
  std::string Push(int32_t id);
  // Returns held bytes at the end of generation (invalid UTF-8 replaced by U+FFFD).
  std::string Flush();

 private:
  const Tokenizer* tokenizer_;
  std::string pending_;
  bool starts_text_ = true;   // the next real piece starts a whole text
  bool may_skip_bos_ = true;  // ...unless it is the sequence's leading BOS
};

}  // namespace llorch

#endif  // LLORCH_WORKER_TOKENIZER_TOKENIZER_H_
