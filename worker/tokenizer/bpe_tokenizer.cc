// Byte-level BPE (GGUF model "gpt2"), following llama.cpp's
// llm_tokenizer_bpe: the text is cut into words by the pre-tokenizer's
// regexes (PCRE2), each word's bytes are mapped to GPT-2's printable code
// points, and adjacent symbols are merged by merge rank.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cstdio>
#include <queue>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "worker/tokenizer/tokenizer.h"
#include "worker/tokenizer/tokenizer_internal.h"
#include "worker/tokenizer/utf8.h"

namespace llorch {
namespace tokenizer_internal {
namespace {

// The regexes as llama.cpp uses them (llama-vocab.cpp, llm_tokenizer_bpe);
// the case-insensitive contractions are spelled out as llama.cpp does.
constexpr char kGpt2Regex[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
constexpr char kLlama3Regex[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr char kQwen2Regex[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

struct PreTokenizerGroup {
  std::vector<const char*> names;
  PreTokenizerInfo info;
};

const std::vector<PreTokenizerGroup>& PreTokenizerGroups() {
  static const auto* groups = new std::vector<PreTokenizerGroup>{
      {{"default"},
       {{"[\\p{P}\\$\\+<=>\\^~\\|]+", kGpt2Regex, "\\p{N}+", "[0-9][0-9][0-9]"}, false, false}},
      {{"gpt-2", "phi-2", "mpt", "olmo", "jais", "trillion", "granite-docling", "gigachat",
        "mellum", "a.x-4.0", "exaone4", "jina-es", "jina-de", "jina-v2-es", "jina-v2-de",
        "modern-bert"},
       {{kGpt2Regex}, false, false}},
      {{"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0",
        "lfm2"},
       {{kLlama3Regex}, true, true}},
      {{"dbrx", "smaug-bpe"}, {{kLlama3Regex}, false, false}},
      {{"qwen2", "deepseek-r1-qwen", "kormo", "megrez", "stablelm2"},
       {{kQwen2Regex}, false, false}},
      // SmolLM and the StarCoder family: single digits, then GPT-2's regex.
      {{"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"},
       {{"\\p{N}", kGpt2Regex}, false, false}},
      {{"falcon"},
       {{"[\\p{P}\\$\\+<=>\\^~\\|`]+", kGpt2Regex, "[0-9][0-9][0-9]"}, false, false}},
  };
  return *groups;
}

// Unicode White_Space, the set llama.cpp and Hugging Face treat as \s (PCRE2's
// own \s with UCP would add U+180E).
constexpr char kWhitespaceChars[] =
    "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";

std::string ExpandWhitespaceClasses(absl::string_view regex) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < regex.size(); ++i) {
    const char c = regex[i];
    if (c == '\\' && i + 1 < regex.size()) {
      const char next = regex[i + 1];
      if (next == 's') {
        out += in_class ? std::string(kWhitespaceChars) : absl::StrCat("[", kWhitespaceChars, "]");
      } else if (next == 'S' && !in_class) {
        out += absl::StrCat("[^", kWhitespaceChars, "]");
      } else {
        out += c;
        out += next;
      }
      ++i;
      continue;
    }
    if (c == '[') in_class = true;
    if (c == ']') in_class = false;
    out += c;
  }
  return out;
}

class PreTokenizer {
 public:
  ~PreTokenizer() {
    for (pcre2_code* code : codes_) pcre2_code_free(code);
  }

  static absl::StatusOr<std::unique_ptr<PreTokenizer>> Create(
      const std::vector<std::string>& regexes) {
    auto pre = std::unique_ptr<PreTokenizer>(new PreTokenizer());
    for (const std::string& regex : regexes) {
      const std::string pattern = ExpandWhitespaceClasses(regex);
      int error = 0;
      PCRE2_SIZE error_offset = 0;
      pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()),
                                       pattern.size(), PCRE2_UTF | PCRE2_NO_UTF_CHECK,
                                       &error, &error_offset, nullptr);
      if (code == nullptr) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(error, message, sizeof(message));
        return absl::InternalError(absl::StrFormat(
            "tokenizer: pre-tokenizer regex \"%s\" does not compile at offset %d: %s", regex,
            static_cast<int>(error_offset), reinterpret_cast<const char*>(message)));
      }
      pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // optional speed-up
      pre->codes_.push_back(code);
    }
    return pre;
  }

  // Cuts valid UTF-8 text into words, [begin, end) byte ranges. Each regex
  // splits every current piece into its matches and the gaps between them.
  std::vector<std::pair<size_t, size_t>> Split(absl::string_view text) const {
    std::vector<std::pair<size_t, size_t>> pieces;
    if (!text.empty()) pieces.emplace_back(0, text.size());
    pcre2_match_data* match = pcre2_match_data_create(1, nullptr);
    for (pcre2_code* code : codes_) {
      std::vector<std::pair<size_t, size_t>> next;
      next.reserve(pieces.size() * 2);
      for (const auto& [begin, end] : pieces) {
        // The piece is matched as a subject of its own, as llama.cpp does, so
        // lookaheads stop at its end.
        const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data() + begin);
        const size_t length = end - begin;
        size_t last = 0;
        size_t start = 0;
        while (start < length) {
          int rc = pcre2_match(code, subject, length, start, PCRE2_NO_UTF_CHECK, match, nullptr);
          if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
            rc = pcre2_match(code, subject, length, start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                             match, nullptr);
          }
          if (rc < 0) break;  // no further match (or a failure): rest is a gap
          const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match);
          const size_t match_begin = ovector[0];
          const size_t match_end = ovector[1];
          if (match_end == match_begin) {  // empty match: step one character
            start = match_begin + utf8::SequenceLength(text[begin + match_begin]);
            continue;
          }
          if (match_begin > last) next.emplace_back(begin + last, begin + match_begin);
          next.emplace_back(begin + match_begin, begin + match_end);
          last = start = match_end;
        }
        if (last < length) next.emplace_back(begin + last, end);
      }
      pieces = std::move(next);
    }
    pcre2_match_data_free(match);
    return pieces;
  }

 private:
  PreTokenizer() = default;
  std::vector<pcre2_code*> codes_;
};

std::string MergeKey(absl::string_view left, absl::string_view right) {
  // 0xFF never occurs in UTF-8, so it cannot be part of either side.
  return absl::StrCat(left, "\xff", right);
}

class BpeTokenizer : public Tokenizer {
 public:
  BpeTokenizer(VocabData vocab, PreTokenizerInfo info, std::unique_ptr<PreTokenizer> pre)
      : Tokenizer(std::move(vocab)),
        info_(std::move(info)),
        pre_(std::move(pre)),
        index_(BuildTokenIndex(vocab_.tokens)),
        splitter_(vocab_) {
    ranks_.reserve(vocab_.merges.size());
    for (size_t i = 0; i < vocab_.merges.size(); ++i) {
      const std::string& merge = vocab_.merges[i];
      const size_t space = merge.find(' ', 1);
      std::string key = space == std::string::npos
                            ? MergeKey("", "")
                            : MergeKey(absl::string_view(merge).substr(0, space),
                                       absl::string_view(merge).substr(space + 1));
      ranks_.emplace(std::move(key), static_cast<int>(i));  // first rank wins
    }
    // The merges live on as ranks_ (a 150k-merge vocabulary: ~5 MB less).
    vocab_.merges.clear();
    vocab_.merges.shrink_to_fit();
  }

  std::vector<int32_t> Encode(absl::string_view text, bool add_special,
                              bool parse_special) const override {
    std::vector<int32_t> out;
    if (add_special && vocab_.add_bos && vocab_.bos_id >= 0) out.push_back(vocab_.bos_id);
    for (const Fragment& fragment : splitter_.Split(text, parse_special)) {
      if (fragment.is_token) {
        out.push_back(fragment.token);
        continue;
      }
      std::string clean =
          utf8::Sanitize(text.substr(fragment.begin, fragment.end - fragment.begin));
      if (vocab_.nfc) clean = utf8::Nfc(clean);
      for (const auto& [begin, end] : pre_->Split(clean)) {
        std::string word;
        for (size_t i = begin; i < end; ++i) {
          word += utf8::ByteToUnicode(static_cast<uint8_t>(clean[i]));
        }
        EncodeWord(word, &out);
      }
    }
    if (add_special && vocab_.add_eos && vocab_.eos_id >= 0) out.push_back(vocab_.eos_id);
    return out;
  }

  std::string TokenToPiece(int32_t id, bool render_special) const override {
    if (id < 0 || id >= vocab_size()) return "";
    const std::string& text = vocab_.tokens[id];
    switch (token_type(id)) {
      case TokenType::kControl:
      case TokenType::kUnknown:
        return render_special ? text : "";
      case TokenType::kUserDefined:
        return text;
      case TokenType::kNormal: {
        std::string bytes;
        for (size_t pos = 0; pos < text.size();) {
          const size_t char_begin = pos;
          const int byte = utf8::UnicodeToByte(utf8::DecodeAt(text, &pos));
          if (byte >= 0) {
            bytes.push_back(static_cast<char>(byte));
          } else {
            // Not a byte-level symbol: llama.cpp's visible marker.
            bytes += "[UNK_BYTE_0x";
            for (size_t i = char_begin; i < pos; ++i) {
              bytes += absl::StrFormat("%02x", static_cast<unsigned char>(text[i]));
            }
            bytes += text + "]";
          }
        }
        return bytes;
      }
      case TokenType::kByte: {
        // "<0xXX>"; a byte token with other text (a corrupt vocabulary) is
        // rendered as its text.
        const int byte = ByteTokenValue(text);
        return byte >= 0 ? std::string(1, static_cast<char>(byte)) : text;
      }
      default:
        return "";
    }
  }

 private:
  struct Symbol {
    int prev;
    int next;
    size_t begin;
    size_t size;
  };
  struct Bigram {
    int left;
    int right;
    int rank;
    std::string text;
  };
  // Lowest rank first; on ties the leftmost pair (llama.cpp's order).
  struct BigramOrder {
    bool operator()(const Bigram& a, const Bigram& b) const {
      return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
    }
  };

  void EncodeWord(const std::string& word, std::vector<int32_t>* out) const {
    if (info_.ignore_merges) {
      auto it = index_.find(word);
      if (it != index_.end()) {
        out->push_back(it->second);
        return;
      }
    }
    std::vector<Symbol> symbols;
    for (size_t offset = 0; offset < word.size();) {
      const size_t len = std::min(utf8::SequenceLength(word[offset]), word.size() - offset);
      const int index = static_cast<int>(symbols.size());
      offset += len;
      symbols.push_back({index - 1, offset == word.size() ? -1 : index + 1, offset - len, len});
    }
    std::priority_queue<Bigram, std::vector<Bigram>, BigramOrder> queue;
    const auto add_bigram = [&](int left, int right) {
      if (left == -1 || right == -1) return;
      const absl::string_view view(word);
      const absl::string_view left_text = view.substr(symbols[left].begin, symbols[left].size);
      const absl::string_view right_text = view.substr(symbols[right].begin, symbols[right].size);
      auto it = ranks_.find(MergeKey(left_text, right_text));
      if (it == ranks_.end()) return;
      queue.push({left, right, it->second, absl::StrCat(left_text, right_text)});
    };
    for (int i = 1; i < static_cast<int>(symbols.size()); ++i) add_bigram(i - 1, i);
    while (!queue.empty()) {
      const Bigram bigram = queue.top();
      queue.pop();
      Symbol& left = symbols[bigram.left];
      Symbol& right = symbols[bigram.right];
      if (left.size == 0 || right.size == 0) continue;
      // Outdated if either side changed since the pair was queued.
      if (left.size + right.size != bigram.text.size() ||
          word.compare(left.begin, bigram.text.size(), bigram.text) != 0 ||
          right.begin != left.begin + left.size) {
        continue;
      }
      left.size += right.size;
      right.size = 0;
      left.next = right.next;
      if (right.next >= 0) symbols[right.next].prev = bigram.left;
      add_bigram(left.prev, bigram.left);
      add_bigram(bigram.left, left.next);
    }
    for (const Symbol& symbol : symbols) {
      if (symbol.size == 0) continue;
      const std::string piece = word.substr(symbol.begin, symbol.size);
      auto it = index_.find(piece);
      if (it != index_.end()) {
        out->push_back(it->second);
        continue;
      }
      // No token for the merged piece: llama.cpp tries each byte alone.
      for (char byte : piece) {
        auto byte_it = index_.find(std::string(1, byte));
        if (byte_it != index_.end()) out->push_back(byte_it->second);
      }
    }
  }

  PreTokenizerInfo info_;
  std::unique_ptr<PreTokenizer> pre_;
  TokenIndex index_;
  absl::flat_hash_map<std::string, int> ranks_;
  SpecialTokenSplitter splitter_;
};

}  // namespace

std::string SupportedPreTokenizers() {
  std::vector<std::string> names;
  for (const auto& group : PreTokenizerGroups()) {
    for (const char* name : group.names) names.emplace_back(name);
  }
  return absl::StrJoin(names, ", ");
}

absl::StatusOr<PreTokenizerInfo> LookupPreTokenizer(const std::string& pre) {
  const std::string name = pre.empty() ? "default" : pre;
  for (const auto& group : PreTokenizerGroups()) {
    for (const char* candidate : group.names) {
      if (name == candidate) return group.info;
    }
  }
  return absl::NotFoundError(absl::StrCat("unsupported pre-tokenizer \"", pre,
                                          "\" (supported: ", SupportedPreTokenizers(), ")"));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> CreateBpeTokenizer(VocabData vocab) {
  auto info = LookupPreTokenizer(vocab.pre);
  if (!info.ok()) return absl::InvalidArgumentError(absl::StrCat("tokenizer: ", info.status().message()));
  auto pre = PreTokenizer::Create(info->regexes);
  if (!pre.ok()) return pre.status();
  return std::unique_ptr<Tokenizer>(
      new BpeTokenizer(std::move(vocab), *std::move(info), *std::move(pre)));
}

}  // namespace tokenizer_internal
}  // namespace llorch
