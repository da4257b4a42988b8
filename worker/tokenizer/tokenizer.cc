#include "worker/tokenizer/tokenizer.h"

#include <algorithm>
#include <cctype>
#include <list>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/tokenizer/tokenizer_internal.h"
#include "worker/tokenizer/utf8.h"

namespace llorch {
namespace tokenizer_internal {

TokenIndex BuildTokenIndex(const std::vector<std::string>& tokens) {
  TokenIndex index;
  index.reserve(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    index[tokens[i]] = static_cast<int32_t>(i);
  }
  return index;
}

int ByteTokenValue(absl::string_view text) {
  if (text.size() != 6 || text.substr(0, 3) != "<0x" || text[5] != '>') return -1;
  int value = 0;
  for (char c : text.substr(3, 2)) {
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else {
      return -1;
    }
    value = value * 16 + digit;
  }
  return value;
}

SpecialTokenSplitter::SpecialTokenSplitter(const VocabData& vocab) {
  std::vector<bool> rstrip(vocab.tokens.size(), false);
  for (int32_t id : vocab.rstrip_ids) {
    if (id >= 0 && static_cast<size_t>(id) < rstrip.size()) rstrip[id] = true;
  }
  for (size_t id = 0; id < vocab.tokens.size(); ++id) {
    const TokenType type = TypeOf(vocab, static_cast<int32_t>(id));
    if (type != TokenType::kControl && type != TokenType::kUserDefined &&
        type != TokenType::kUnknown) {
      continue;
    }
    if (vocab.tokens[id].empty()) continue;
    specials_.push_back({static_cast<int32_t>(id), vocab.tokens[id],
                         type != TokenType::kUserDefined, rstrip[id]});
  }
  // Longest first so that e.g. "<|im_start|>" wins over "<|im"; ties by id
  // keep the order deterministic.
  std::stable_sort(specials_.begin(), specials_.end(),
                   [](const Special& a, const Special& b) {
                     return a.text.size() > b.text.size();
                   });
}

std::vector<Fragment> SpecialTokenSplitter::Split(absl::string_view text,
                                                  bool parse_special) const {
  std::list<Fragment> fragments;
  if (text.empty()) return {};
  fragments.push_back({false, -1, 0, text.size()});
  for (const Special& special : specials_) {
    if (!parse_special && special.control_or_unknown) continue;
    for (auto it = fragments.begin(); it != fragments.end(); ++it) {
      if (it->is_token) continue;
      size_t begin = it->begin;
      const size_t end = it->end;
      // Replace this raw fragment by [left][token][right...] pieces.
      bool matched = false;
      while (begin < end) {
        const size_t match =
            absl::string_view(text.data(), end).find(special.text, begin);
        if (match == absl::string_view::npos) break;
        matched = true;
        if (match > begin) fragments.insert(it, {false, -1, begin, match});
        fragments.insert(it, {true, special.id, 0, 0});
        begin = match + special.text.size();
        if (special.rstrip) {
          while (begin < end && std::isspace(static_cast<unsigned char>(text[begin]))) {
            ++begin;
          }
        }
      }
      if (!matched) continue;
      if (begin < end) {
        it->begin = begin;  // the remainder stays in place, still raw
      } else {
        it = std::prev(fragments.erase(it));
      }
    }
  }
  return std::vector<Fragment>(fragments.begin(), fragments.end());
}

}  // namespace tokenizer_internal

Tokenizer::Tokenizer(VocabData vocab) : vocab_(std::move(vocab)) {
  is_eog_.assign(vocab_.tokens.size(), false);
  for (int32_t id : vocab_.eog_ids) {
    if (id >= 0 && static_cast<size_t>(id) < is_eog_.size()) is_eog_[id] = true;
  }
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Create(VocabData vocab) {
  if (vocab.tokens.empty()) {
    return absl::InvalidArgumentError("tokenizer: the vocabulary has no tokens");
  }
  if (!vocab.token_types.empty() && vocab.token_types.size() != vocab.tokens.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer: ", vocab.token_types.size(), " token types for ",
        vocab.tokens.size(), " tokens"));
  }
  if (!vocab.scores.empty() && vocab.scores.size() != vocab.tokens.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer: ", vocab.scores.size(), " scores for ", vocab.tokens.size(),
        " tokens"));
  }
  const int32_t n = static_cast<int32_t>(vocab.tokens.size());
  for (int32_t* id : {&vocab.bos_id, &vocab.eos_id, &vocab.unk_id, &vocab.pad_id,
                      &vocab.eot_id, &vocab.eom_id}) {
    if (*id >= n) *id = -1;  // out of range: treat as absent, as llama.cpp does
  }
  // llama.cpp renames empty token texts so that they stay distinct.
  for (int32_t i = 0; i < n; ++i) {
    if (vocab.tokens[i].empty()) vocab.tokens[i] = absl::StrCat("[EMPTY_", i, "]");
  }
  if (vocab.model == "llama") return tokenizer_internal::CreateSpmTokenizer(std::move(vocab));
  if (vocab.model == "gpt2") return tokenizer_internal::CreateBpeTokenizer(std::move(vocab));
  return absl::UnimplementedError(absl::StrCat(
      "tokenizer: unsupported tokenizer model \"", vocab.model,
      "\" (supported: \"llama\" SentencePiece BPE, \"gpt2\" byte-level BPE)"));
}

bool Tokenizer::IsEog(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < is_eog_.size() && is_eog_[id];
}

TokenType Tokenizer::token_type(int32_t id) const {
  return tokenizer_internal::TypeOf(vocab_, id);
}

bool Tokenizer::IsControl(int32_t id) const {
  const TokenType type = token_type(id);
  return type == TokenType::kControl || type == TokenType::kUnknown;
}

std::string Tokenizer::Decode(const std::vector<int32_t>& ids, bool render_special) const {
  std::string text;
  // Like llama.cpp's detokenize with remove_special: a leading BOS does not
  // count as the first piece, whose prefix space (added by the encoder when
  // add_space_prefix) is dropped.
  size_t start = 0;
  if (!ids.empty() && ids[0] == vocab_.bos_id && vocab_.bos_id >= 0) {
    text += TokenToPiece(ids[0], render_special);
    start = 1;
  }
  for (size_t i = start; i < ids.size(); ++i) {
    std::string piece = TokenToPiece(ids[i], render_special);
    if (i == start && vocab_.add_space_prefix && !piece.empty() && piece[0] == ' ') {
      piece.erase(0, 1);
    }
    text += piece;
  }
  return text;
}

namespace {

// Moves the longest UTF-8-complete prefix of *pending to the result; each
// maximal subpart of an ill-formed sequence becomes one U+FFFD at once (as
// Python, browsers and Rust's from_utf8_lossy replace), a truncated tail stays
// in *pending until `flush`.
std::string TakeComplete(std::string* pending, bool flush) {
  std::string out;
  size_t pos = 0;
  while (pos < pending->size()) {
    const int n = utf8::CheckSequence(*pending, pos);
    if (n > 0) {
      out.append(*pending, pos, n);
      pos += n;
    } else if (n == 0 && !flush) {
      break;
    } else {
      utf8::AppendCodepoint(0xFFFD, &out);
      // A truncated tail at flush time is one bad character, not several.
      pos = (n == 0) ? pending->size() : pos - n;
    }
  }
  pending->erase(0, pos);
  return out;
}

}  // namespace

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer* tokenizer,
                                               absl::Span<const int32_t> context)
    : tokenizer_(tokenizer) {
  // The text starts here when there is no context or only a BOS: a
  // completion continues its prompt, so its first piece keeps its space. As
  // in Decode(context + ids), only the sequence's first id is skipped as BOS.
  const int32_t bos = tokenizer->vocab().bos_id;
  may_skip_bos_ = context.empty();
  starts_text_ = context.empty() || (context.size() == 1 && bos >= 0 && context[0] == bos);
}

std::string IncrementalDetokenizer::Push(int32_t id) {
  std::string piece = tokenizer_->TokenToPiece(id, /*render_special=*/false);
  if (starts_text_) {
    // Same rule as Decode: skip a leading BOS, strip the prefix space of the
    // piece after it (a second BOS is that piece: rendered, nothing stripped).
    const int32_t bos = tokenizer_->vocab().bos_id;
    if (may_skip_bos_ && bos >= 0 && id == bos) {
      may_skip_bos_ = false;
    } else {
      starts_text_ = false;
      if (tokenizer_->vocab().add_space_prefix && !piece.empty() && piece[0] == ' ') {
        piece.erase(0, 1);
      }
    }
  }
  pending_ += piece;
  return TakeComplete(&pending_, /*flush=*/false);
}

std::string IncrementalDetokenizer::Flush() {
  return TakeComplete(&pending_, /*flush=*/true);
}

}  // namespace llorch
