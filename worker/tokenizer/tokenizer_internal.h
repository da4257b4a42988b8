// Pieces shared by the two tokenizer kinds; not part of the public interface.
#ifndef LLORCH_WORKER_TOKENIZER_TOKENIZER_INTERNAL_H_
#define LLORCH_WORKER_TOKENIZER_TOKENIZER_INTERNAL_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/tokenizer/tokenizer.h"

namespace llorch {
namespace tokenizer_internal {

// A piece of the input after special-token matching: either a token found
// verbatim in the text or a stretch [begin, end) of raw text.
struct Fragment {
  bool is_token = false;
  int32_t token = -1;
  size_t begin = 0;
  size_t end = 0;
};

// Finds control/user-defined/unknown token texts in raw text before the
// model's own tokenisation, as llama.cpp's tokenizer_st_partition: longest
// token texts first, each one split out of every remaining raw fragment.
class SpecialTokenSplitter {
 public:
  explicit SpecialTokenSplitter(const VocabData& vocab);
  // With parse_special false only user-defined tokens are matched (control
  // and unknown texts stay ordinary text), as in llama.cpp and HF tokenizers.
  std::vector<Fragment> Split(absl::string_view text, bool parse_special) const;

 private:
  struct Special {
    int32_t id;
    std::string text;
    bool control_or_unknown;
    bool rstrip;
  };
  std::vector<Special> specials_;  // longest text first
};

// Text -> id, where a later duplicate wins (as llama.cpp's token_to_id).
using TokenIndex = absl::flat_hash_map<std::string, int32_t>;
TokenIndex BuildTokenIndex(const std::vector<std::string>& tokens);

// The byte a byte token's text "<0xXX>" stands for (XX two hex digits), or
// -1 when the text is not of that form (a corrupt vocabulary).
int ByteTokenValue(absl::string_view text);

inline TokenType TypeOf(const VocabData& vocab, int32_t id) {
  return vocab.token_types.empty() ? TokenType::kNormal : vocab.token_types[id];
}

absl::StatusOr<std::unique_ptr<Tokenizer>> CreateSpmTokenizer(VocabData vocab);
absl::StatusOr<std::unique_ptr<Tokenizer>> CreateBpeTokenizer(VocabData vocab);

// Byte-level BPE pre-tokenizers known here, by GGUF `tokenizer.ggml.pre`.
struct PreTokenizerInfo {
  std::vector<std::string> regexes;  // applied in order, each splitting further
  bool ignore_merges = false;        // a word that is a token is kept whole
  bool default_add_bos = false;      // llama.cpp's add_bos default for this pre
};
// NotFound (naming the supported ones) for an unknown name. "" means default.
absl::StatusOr<PreTokenizerInfo> LookupPreTokenizer(const std::string& pre);
std::string SupportedPreTokenizers();

}  // namespace tokenizer_internal
}  // namespace llorch

#endif  // LLORCH_WORKER_TOKENIZER_TOKENIZER_INTERNAL_H_
