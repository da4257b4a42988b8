#include "worker/tokenizer/utf8.h"

#include <utf8proc.h>

#include <cstdlib>

#include <array>
#include <vector>

namespace llorch {
namespace utf8 {

size_t SequenceLength(unsigned char lead) {
  static constexpr size_t kLengths[16] = {1, 1, 1, 1, 1, 1, 1, 1,
                                          1, 1, 1, 1, 2, 2, 3, 4};
  return kLengths[lead >> 4];
}

void AppendCodepoint(uint32_t cp, std::string* out) {
  if (cp <= 0x7F) {
    out->push_back(static_cast<char>(cp));
  } else if (cp <= 0x7FF) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp <= 0xFFFF) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

int CheckSequence(absl::string_view text, size_t pos) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(pos);
  if (lead < 0x80) return 1;
  int len;
  uint32_t min_cp;
  if (lead >= 0xC2 && lead <= 0xDF) {
    len = 2;
    min_cp = 0x80;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    len = 3;
    min_cp = 0x800;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    len = 4;
    min_cp = 0x10000;
  } else {
    return -1;  // continuation byte, C0/C1 or F5..FF
  }
  uint32_t cp = lead & (0x7F >> len);
  for (int i = 1; i < len; ++i) {
    if (pos + i >= text.size()) {
      // Truncated. The second-byte range checks below already rule out
      // overlong forms, surrogates and > U+10FFFF, so this is a valid prefix.
      return 0;
    }
    const unsigned char c = byte(pos + i);
    if ((c & 0xC0) != 0x80) return -i;  // bytes [pos, pos + i) are the maximal subpart
    cp = (cp << 6) | (c & 0x3F);
    if (i == 1) {
      // Second-byte range checks reject overlong forms, surrogates and
      // > U+10FFFF as soon as they are decidable.
      if ((lead == 0xE0 && c < 0xA0) || (lead == 0xED && c > 0x9F) ||
          (lead == 0xF0 && c < 0x90) || (lead == 0xF4 && c > 0x8F)) {
        return -1;  // only the lead byte: c may start the next sequence
      }
    }
  }
  return (cp < min_cp) ? -1 : len;
}

std::string Sanitize(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const int n = CheckSequence(text, pos);
    if (n > 0) {
      out.append(text.data() + pos, n);
      pos += n;
    } else {
      AppendCodepoint(0xFFFD, &out);
      ++pos;
    }
  }
  return out;
}

uint32_t DecodeAt(absl::string_view text, size_t* pos) {
  const unsigned char lead = static_cast<unsigned char>(text[*pos]);
  size_t len = SequenceLength(lead);
  if (*pos + len > text.size()) len = text.size() - *pos;
  uint32_t cp = len == 1 ? lead : (lead & (0x7F >> len));
  for (size_t i = 1; i < len; ++i) {
    cp = (cp << 6) | (static_cast<unsigned char>(text[*pos + i]) & 0x3F);
  }
  *pos += len;
  return cp;
}

namespace {

struct ByteMaps {
  std::array<std::string, 256> byte_to_text;
  std::vector<int> cp_to_byte;  // indexed by code point < 512
  ByteMaps() : cp_to_byte(512, -1) {
    // Printable Latin-1 bytes stand for themselves; the rest are mapped in
    // order to U+0100.. (the GPT-2 bytes_to_unicode table).
    std::array<int, 256> cp{};
    std::array<bool, 256> direct{};
    for (int b = 0x21; b <= 0x7E; ++b) direct[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
    int next = 0;
    for (int b = 0; b < 256; ++b) cp[b] = direct[b] ? b : 256 + next++;
    for (int b = 0; b < 256; ++b) {
      AppendCodepoint(cp[b], &byte_to_text[b]);
      cp_to_byte[cp[b]] = b;
    }
  }
};

const ByteMaps& Maps() {
  static const ByteMaps* maps = new ByteMaps();
  return *maps;
}

}  // namespace

const std::string& ByteToUnicode(uint8_t byte) { return Maps().byte_to_text[byte]; }

int UnicodeToByte(uint32_t cp) {
  return cp < 512 ? Maps().cp_to_byte[cp] : -1;
}

std::string Nfc(absl::string_view text) {
  utf8proc_uint8_t* normalized = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(
      reinterpret_cast<const utf8proc_uint8_t*>(text.data()), static_cast<utf8proc_ssize_t>(text.size()),
      &normalized, static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (n < 0) return std::string(text);  // not valid UTF-8: leave it as it is
  std::string out(reinterpret_cast<const char*>(normalized), static_cast<size_t>(n));
  std::free(normalized);
  return out;
}

}  // namespace utf8
}  // namespace llorch
