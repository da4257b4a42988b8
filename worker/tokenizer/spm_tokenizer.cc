// SentencePiece-style BPE over a vocabulary with scores (GGUF model "llama"),
// following llama.cpp's llm_tokenizer_spm: characters are merged pairwise,
// best-scoring pair first, and what never forms a token falls back to
// <0xXX> byte tokens.
#include <algorithm>
#include <cstdio>
#include <map>
#include <queue>
#include <utility>
#include <vector>

#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "worker/tokenizer/tokenizer.h"
#include "worker/tokenizer/tokenizer_internal.h"
#include "worker/tokenizer/utf8.h"

namespace llorch {
namespace tokenizer_internal {
namespace {

constexpr char kSpaceMarker[] = "\xe2\x96\x81";  // U+2581 "▁"

class SpmTokenizer : public Tokenizer {
 public:
  explicit SpmTokenizer(VocabData vocab)
      : Tokenizer(std::move(vocab)),
        index_(BuildTokenIndex(vocab_.tokens)),
        splitter_(vocab_) {
    for (int b = 0; b < 256; ++b) {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "<0x%02X>", b);
      auto it = index_.find(hex);
      if (it == index_.end()) it = index_.find(std::string(1, static_cast<char>(b)));
      byte_tokens_[b] = it == index_.end() ? vocab_.unk_id : it->second;
    }
  }

  std::vector<int32_t> Encode(absl::string_view text, bool add_special,
                              bool parse_special) const override {
    std::vector<int32_t> out;
    if (add_special && vocab_.add_bos && vocab_.bos_id >= 0) out.push_back(vocab_.bos_id);
    bool prev_special = true;  // the text start counts as "after a special"
    for (const Fragment& fragment : splitter_.Split(text, parse_special)) {
      if (fragment.is_token) {
        out.push_back(fragment.token);
        prev_special = true;
        continue;
      }
      std::string piece;
      if (vocab_.add_space_prefix && prev_special) piece = " ";
      piece.append(text.data() + fragment.begin, fragment.end - fragment.begin);
      TokenizeRaw(absl::StrReplaceAll(piece, {{" ", kSpaceMarker}}), &out);
      prev_special = false;
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
      case TokenType::kNormal:
        return absl::StrReplaceAll(text, {{kSpaceMarker, " "}});
      case TokenType::kByte: {
        // "<0xXX>"; a byte token with other text (a corrupt vocabulary) is
        // rendered as its text.
        const int byte = ByteTokenValue(text);
        return byte >= 0 ? std::string(1, static_cast<char>(byte)) : text;
      }
      default:
        return "";  // unused/undefined tokens render as nothing (llama.cpp)
    }
  }

 private:
  struct Symbol {
    int prev;
    int next;
    size_t begin;  // into the escaped text
    size_t size;   // 0 once merged into its left neighbour
  };
  struct Bigram {
    int left;
    int right;
    float score;
    size_t size;
  };
  // Highest score first; on ties the leftmost pair (llama.cpp's order).
  struct BigramOrder {
    bool operator()(const Bigram& a, const Bigram& b) const {
      return a.score < b.score || (a.score == b.score && a.left > b.left);
    }
  };

  struct Session {
    const SpmTokenizer& tok;
    const std::string& text;
    std::vector<Symbol> symbols;
    std::priority_queue<Bigram, std::vector<Bigram>, BigramOrder> queue;
    std::map<std::string, std::pair<int, int>> rev_merge;

    void TryAddBigram(int left, int right) {
      if (left == -1 || right == -1) return;
      std::string pair = text.substr(symbols[left].begin,
                                     symbols[left].size + symbols[right].size);
      auto it = tok.index_.find(pair);
      if (it == tok.index_.end()) return;
      const float score = tok.vocab_.scores.empty() ? 0.0f : tok.vocab_.scores[it->second];
      queue.push({left, right, score, pair.size()});
      rev_merge[pair] = {left, right};
    }

    void Resegment(const Symbol& symbol, std::vector<int32_t>* out) const {
      const std::string piece = text.substr(symbol.begin, symbol.size);
      auto it = tok.index_.find(piece);
      if (it != tok.index_.end()) {
        out->push_back(it->second);
        return;
      }
      auto merge = rev_merge.find(piece);
      if (merge == rev_merge.end()) {
        for (unsigned char byte : piece) {
          const int32_t id = tok.byte_tokens_[byte];
          if (id >= 0) out->push_back(id);
        }
        return;
      }
      Resegment(symbols[merge->second.first], out);
      Resegment(symbols[merge->second.second], out);
    }
  };

  void TokenizeRaw(const std::string& text, std::vector<int32_t>* out) const {
    Session session{*this, text, {}, {}, {}};
    std::vector<Symbol>& symbols = session.symbols;
    for (size_t offset = 0; offset < text.size();) {
      const size_t len = std::min(utf8::SequenceLength(text[offset]), text.size() - offset);
      const int index = static_cast<int>(symbols.size());
      offset += len;
      symbols.push_back({index - 1, offset == text.size() ? -1 : index + 1,
                         offset - len, len});
    }
    for (int i = 1; i < static_cast<int>(symbols.size()); ++i) session.TryAddBigram(i - 1, i);
    while (!session.queue.empty()) {
      const Bigram bigram = session.queue.top();
      session.queue.pop();
      Symbol& left = symbols[bigram.left];
      Symbol& right = symbols[bigram.right];
      // Stale entry: one side was merged away or grew since it was queued.
      if (left.size == 0 || right.size == 0 || left.size + right.size != bigram.size) continue;
      left.size += right.size;
      right.size = 0;
      left.next = right.next;
      if (right.next >= 0) symbols[right.next].prev = bigram.left;
      session.TryAddBigram(left.prev, bigram.left);
      session.TryAddBigram(bigram.left, left.next);
    }
    if (symbols.empty()) return;
    for (int i = 0; i != -1; i = symbols[i].next) session.Resegment(symbols[i], out);
  }

  TokenIndex index_;
  SpecialTokenSplitter splitter_;
  int32_t byte_tokens_[256];
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> CreateSpmTokenizer(VocabData vocab) {
  return std::unique_ptr<Tokenizer>(new SpmTokenizer(std::move(vocab)));
}

}  // namespace tokenizer_internal
}  // namespace llorch
