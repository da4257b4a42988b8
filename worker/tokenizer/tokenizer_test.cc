// Checks the tokenizers against Hugging Face's ids for llama.cpp's vocabulary
// test files (shared/testdata/vocab/ggml-vocab-*.gguf{,.inp,.out}), plus
// decoding, streaming detokenization and special-token handling.
#include "worker/tokenizer/tokenizer.h"

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "worker/gguf/gguf.h"
#include "worker/tokenizer/utf8.h"

namespace llorch {
namespace {

std::string VocabPath(const std::string& name) {
  return absl::StrCat(LLORCH_SHARED_DIR, "/testdata/vocab/ggml-vocab-", name, ".gguf");
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

struct VocabCase {
  std::string text;
  std::vector<int32_t> ids;
};

// Cuts the .inp/.out pair exactly as llama.cpp's tests/test-tokenizer-0.cpp:
// cases separated by "\n__ggml_vocab_test__\n", one line of ids per case.
std::vector<VocabCase> ReadCases(const std::string& gguf_path) {
  const std::string raw = ReadFile(gguf_path + ".inp");
  const std::string out = ReadFile(gguf_path + ".out");
  const std::string separator = "\n__ggml_vocab_test__\n";
  std::vector<std::string> inputs;
  for (size_t pos = 0; pos < raw.size();) {
    const size_t next = raw.find(separator, pos);
    if (next == std::string::npos) {
      inputs.push_back(raw.substr(pos));
      break;
    }
    inputs.push_back(raw.substr(pos, next - pos));
    pos = next + separator.size();
  }
  std::vector<std::string> lines = absl::StrSplit(out, '\n');
  if (!lines.empty() && lines.back().empty()) lines.pop_back();
  std::vector<VocabCase> cases;
  if (inputs.size() != lines.size()) return cases;  // caught by the caller
  for (size_t i = 0; i < inputs.size(); ++i) {
    VocabCase c;
    c.text = inputs[i];
    for (absl::string_view id :
         absl::StrSplit(absl::StripAsciiWhitespace(lines[i]), ' ', absl::SkipEmpty())) {
      c.ids.push_back(std::stoi(std::string(id)));
    }
    cases.push_back(std::move(c));
  }
  return cases;
}

std::unique_ptr<Tokenizer> LoadTokenizer(const std::string& path) {
  auto gguf = GgufFile::Open(path);
  EXPECT_TRUE(gguf.ok()) << gguf.status();
  if (!gguf.ok()) return nullptr;
  auto vocab = VocabFromGguf(**gguf);
  EXPECT_TRUE(vocab.ok()) << vocab.status();
  if (!vocab.ok()) return nullptr;
  auto tokenizer = Tokenizer::Create(*std::move(vocab));
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  if (!tokenizer.ok()) return nullptr;
  return *std::move(tokenizer);
}

std::string IdsToString(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) absl::StrAppend(&s, s.empty() ? "" : " ", id);
  return s;
}

bool IsValidUtf8(const std::string& s) {
  for (size_t pos = 0; pos < s.size();) {
    const int n = utf8::CheckSequence(s, pos);
    if (n <= 0) return false;
    pos += n;
  }
  return true;
}

class HuggingFaceVectorsTest : public ::testing::TestWithParam<std::string> {};

// llama.cpp's test-tokenizer-0 tokenizes with add_special=false and
// parse_special=false; the expected ids come from Hugging Face tokenizers.
TEST_P(HuggingFaceVectorsTest, EncodeMatchesHuggingFaceIds) {
  const std::string path = VocabPath(GetParam());
  const auto cases = ReadCases(path);
  ASSERT_FALSE(cases.empty()) << path << ": no cases, or .inp/.out case counts differ";
  auto tokenizer = LoadTokenizer(path);
  ASSERT_NE(tokenizer, nullptr);
  int passed = 0;
  for (const VocabCase& c : cases) {
    const auto ids = tokenizer->Encode(c.text, /*add_special=*/false, /*parse_special=*/false);
    EXPECT_EQ(IdsToString(ids), IdsToString(c.ids)) << "text: \"" << c.text << "\"";
    passed += ids == c.ids;
  }
  std::printf("[ %s ] %d/%zu Hugging Face cases match\n", GetParam().c_str(), passed,
              cases.size());
}

// Decoding the expected ids gives the text back (SentencePiece: the prefix
// space the encoder adds is dropped again).
TEST_P(HuggingFaceVectorsTest, DecodeRoundTrips) {
  const std::string path = VocabPath(GetParam());
  const auto cases = ReadCases(path);
  ASSERT_FALSE(cases.empty());
  auto tokenizer = LoadTokenizer(path);
  ASSERT_NE(tokenizer, nullptr);
  for (const VocabCase& c : cases) {
    EXPECT_EQ(tokenizer->Decode(c.ids, /*render_special=*/false), c.text);
    // With BOS in front, as a prompt would be encoded.
    const auto with_bos = tokenizer->Encode(c.text, /*add_special=*/true, false);
    EXPECT_EQ(tokenizer->Decode(with_bos, false), c.text);
  }
}

// Streaming one id at a time never emits half a character and, flushed,
// equals Decode of the whole sequence.
TEST_P(HuggingFaceVectorsTest, IncrementalDetokenizerMatchesDecode) {
  const std::string path = VocabPath(GetParam());
  const auto cases = ReadCases(path);
  ASSERT_FALSE(cases.empty());
  auto tokenizer = LoadTokenizer(path);
  ASSERT_NE(tokenizer, nullptr);
  for (const VocabCase& c : cases) {
    IncrementalDetokenizer detokenizer(tokenizer.get());
    std::string streamed;
    for (int32_t id : c.ids) {
      const std::string part = detokenizer.Push(id);
      EXPECT_TRUE(IsValidUtf8(part)) << "text: \"" << c.text << "\"";
      streamed += part;
    }
    streamed += detokenizer.Flush();
    EXPECT_EQ(streamed, tokenizer->Decode(c.ids, false)) << "text: \"" << c.text << "\"";
  }
}

INSTANTIATE_TEST_SUITE_P(Vocabs, HuggingFaceVectorsTest,
                         ::testing::Values("llama-spm", "llama-bpe", "qwen2", "phi-3", "gpt-2"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& ch : name) {
                             if (ch == '-') ch = '_';
                           }
                           return name;
                         });

int32_t IdOf(const Tokenizer& tokenizer, const std::string& text) {
  const auto& tokens = tokenizer.vocab().tokens;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] == text) return static_cast<int32_t>(i);
  }
  return -1;
}

TEST(IncrementalDetokenizerTest, HoldsSplitCharacterAndFlushesInvalidTail) {
  auto tokenizer = LoadTokenizer(VocabPath("llama-spm"));
  ASSERT_NE(tokenizer, nullptr);
  // "€" is E2 82 AC; stream its byte tokens one by one.
  const int32_t e2 = IdOf(*tokenizer, "<0xE2>");
  const int32_t x82 = IdOf(*tokenizer, "<0x82>");
  const int32_t xac = IdOf(*tokenizer, "<0xAC>");
  ASSERT_GE(e2, 0);
  ASSERT_GE(x82, 0);
  ASSERT_GE(xac, 0);
  {
    IncrementalDetokenizer detokenizer(tokenizer.get());
    EXPECT_EQ(detokenizer.Push(e2), "");
    EXPECT_EQ(detokenizer.Push(x82), "");
    EXPECT_EQ(detokenizer.Push(xac), "\xe2\x82\xac");
    EXPECT_EQ(detokenizer.Flush(), "");
  }
  {
    // Generation ends inside the character: one replacement character.
    IncrementalDetokenizer detokenizer(tokenizer.get());
    EXPECT_EQ(detokenizer.Push(e2), "");
    EXPECT_EQ(detokenizer.Push(x82), "");
    EXPECT_EQ(detokenizer.Flush(), "\xef\xbf\xbd");
  }
  {
    // A stray continuation byte cannot start a character: replaced at once.
    IncrementalDetokenizer detokenizer(tokenizer.get());
    EXPECT_EQ(detokenizer.Push(x82), "\xef\xbf\xbd");
  }
}

TEST(IncrementalDetokenizerTest, IllFormedSequenceIsOneReplacementPerMaximalSubpart) {
  auto tokenizer = LoadTokenizer(VocabPath("llama-spm"));
  ASSERT_NE(tokenizer, nullptr);
  const int32_t e2 = IdOf(*tokenizer, "<0xE2>");
  const int32_t x82 = IdOf(*tokenizer, "<0x82>");
  const int32_t a = IdOf(*tokenizer, "<0x41>");
  ASSERT_GE(a, 0);
  // E2 82 41: "E2 82" is one maximal subpart (Python: b"\xe2\x82A".decode(errors="replace")).
  IncrementalDetokenizer detokenizer(tokenizer.get());
  std::string text = detokenizer.Push(e2);
  text += detokenizer.Push(x82);
  text += detokenizer.Push(a);
  EXPECT_EQ(text + detokenizer.Flush(), "\xef\xbf\xbd" "A");
  // E0 80: E0 needs A0..BF next, so E0 alone is the subpart and 80 another.
  std::string s = "\xe0\x80";
  EXPECT_EQ(utf8::CheckSequence(s, 0), -1);
  s = "\xf0\x9f\x98" "A";
  EXPECT_EQ(utf8::CheckSequence(s, 0), -3);
}

TEST(IncrementalDetokenizerTest, CompletionKeepsTheSpaceThatContinuesThePrompt) {
  for (const std::string name : {"llama-spm", "phi-3"}) {
    auto tokenizer = LoadTokenizer(VocabPath(name));
    ASSERT_NE(tokenizer, nullptr);
    const std::vector<int32_t> prompt = tokenizer->Encode("The capital of France is", true, false);
    const std::vector<int32_t> paris = tokenizer->Encode("Paris", false, false);  // "▁Paris"
    ASSERT_FALSE(paris.empty());
    ASSERT_EQ(tokenizer->TokenToPiece(paris[0], false)[0], ' ') << name;
    IncrementalDetokenizer continuation(tokenizer.get(), prompt);
    EXPECT_EQ(continuation.Push(paris[0]).substr(0, 2), " P") << name;
    // No context, or only BOS: the stream is a whole text, as Decode.
    const int32_t bos = tokenizer->vocab().bos_id;
    ASSERT_GE(bos, 0);
    IncrementalDetokenizer whole(tokenizer.get(), std::vector<int32_t>{bos});
    EXPECT_EQ(whole.Push(paris[0]).substr(0, 1), "P") << name;
  }
}

// Found by tests/fuzz (spm_encode_fuzzer): [BOS, BOS, "▁x"] streamed as "x"
// while Decode gives " x" (only the sequence's first BOS is skipped).
TEST(IncrementalDetokenizerTest, OnlyTheLeadingBosIsSkipped) {
  auto tokenizer = LoadTokenizer(VocabPath("llama-spm"));
  ASSERT_NE(tokenizer, nullptr);
  const int32_t bos = tokenizer->vocab().bos_id;
  ASSERT_GE(bos, 0);
  const std::vector<int32_t> hello = tokenizer->Encode("Hello", false, false);  // "▁Hello"
  for (const std::vector<int32_t>& context :
       {std::vector<int32_t>{}, std::vector<int32_t>{bos}, std::vector<int32_t>{bos, bos}}) {
    for (int leading_bos = 0; leading_bos <= 2; ++leading_bos) {
      std::vector<int32_t> ids(leading_bos, bos);
      ids.insert(ids.end(), hello.begin(), hello.end());
      IncrementalDetokenizer detokenizer(tokenizer.get(), context);
      std::string streamed;
      for (int32_t id : ids) streamed += detokenizer.Push(id);
      streamed += detokenizer.Flush();
      std::vector<int32_t> all = context;
      all.insert(all.end(), ids.begin(), ids.end());
      const std::string whole = tokenizer->Decode(all, false);
      const std::string before = tokenizer->Decode(context, false);
      EXPECT_EQ(before + streamed, whole)
          << "context " << context.size() << " BOS, " << leading_bos << " leading BOS";
    }
  }
}

// Found by tests/fuzz (gguf_fuzzer): a byte-typed token whose text is not
// "<0xXX>" threw std::invalid_argument out of std::stoi (the process died).
TEST(TokenToPieceTest, MalformedByteTokenRendersAsItsText) {
  for (const char* model : {"llama", "gpt2"}) {
    VocabData vocab;
    vocab.model = model;
    vocab.pre = "gpt-2";
    vocab.tokens = {"<0x41>", "<0xZZ>", "<0x4", "<0x4a>", "<0x+1>"};
    vocab.token_types.assign(vocab.tokens.size(), TokenType::kByte);
    auto tokenizer = Tokenizer::Create(vocab);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    EXPECT_EQ((*tokenizer)->TokenToPiece(0, false), "A") << model;
    EXPECT_EQ((*tokenizer)->TokenToPiece(1, false), "<0xZZ>") << model;
    EXPECT_EQ((*tokenizer)->TokenToPiece(2, false), "<0x4") << model;
    EXPECT_EQ((*tokenizer)->TokenToPiece(3, false), "J") << model;
    EXPECT_EQ((*tokenizer)->TokenToPiece(4, false), "<0x+1>") << model;
    EXPECT_EQ((*tokenizer)->Decode({0, 1, 2, 3, 4}, false), "A<0xZZ><0x4J<0x+1>") << model;
  }
}

TEST(SpecialTokensTest, ControlTextsBecomeTokensOnlyWithParseSpecial) {
  for (const std::string name : {"llama-spm", "llama-bpe", "qwen2"}) {
    auto tokenizer = LoadTokenizer(VocabPath(name));
    ASSERT_NE(tokenizer, nullptr);
    const int32_t eos = tokenizer->vocab().eos_id;
    ASSERT_GE(eos, 0);
    const std::string eos_text = tokenizer->vocab().tokens[eos];
    const std::string text = "Hello" + eos_text + "world";
    const auto parsed = tokenizer->Encode(text, false, /*parse_special=*/true);
    const auto literal = tokenizer->Encode(text, false, /*parse_special=*/false);
    EXPECT_EQ(std::count(parsed.begin(), parsed.end(), eos), 1) << name;
    EXPECT_EQ(std::count(literal.begin(), literal.end(), eos), 0) << name;
    // The pieces around the special token are tokenized on their own
    // (SentencePiece adds its prefix space after a special token too).
    std::vector<int32_t> expected = tokenizer->Encode("Hello", false, false);
    expected.push_back(eos);
    const std::vector<int32_t> rest = tokenizer->Encode("world", false, false);
    expected.insert(expected.end(), rest.begin(), rest.end());
    EXPECT_EQ(parsed, expected) << name;
    const std::string space_after_special = tokenizer->vocab().add_space_prefix ? " " : "";
    EXPECT_EQ(tokenizer->Decode(parsed, /*render_special=*/true),
              "Hello" + eos_text + space_after_special + "world");
    EXPECT_EQ(tokenizer->Decode(parsed, /*render_special=*/false),
              "Hello" + space_after_special + "world");
    EXPECT_TRUE(tokenizer->IsEog(eos)) << name;
  }
}

// llama.cpp decodes the text to code points before byte-level BPE and turns
// every invalid byte into U+FFFD; SentencePiece keeps the raw byte (byte
// fallback), so decoding gives it back.
TEST(InvalidUtf8Test, HandledAsLlamaCpp) {
  auto gpt2 = LoadTokenizer(VocabPath("gpt-2"));
  ASSERT_NE(gpt2, nullptr);
  EXPECT_EQ(gpt2->Encode("a\xff\xe2\x82" "b", false, false),
            gpt2->Encode("a\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" "b", false, false));
  auto spm = LoadTokenizer(VocabPath("llama-spm"));
  ASSERT_NE(spm, nullptr);
  const auto ids = spm->Encode("x\xff", false, false);
  EXPECT_NE(std::find(ids.begin(), ids.end(), IdOf(*spm, "<0xFF>")), ids.end());
  EXPECT_EQ(spm->Decode(ids, false), "x\xff");
}

TEST(SpecialTokensTest, AddSpecialFollowsVocabulary) {
  auto spm = LoadTokenizer(VocabPath("llama-spm"));
  ASSERT_NE(spm, nullptr);
  ASSERT_TRUE(spm->vocab().add_bos);  // the file says so
  auto ids = spm->Encode("Hi", /*add_special=*/true, false);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.front(), spm->vocab().bos_id);

  auto gpt2 = LoadTokenizer(VocabPath("gpt-2"));
  ASSERT_NE(gpt2, nullptr);
  EXPECT_FALSE(gpt2->vocab().add_bos);  // no key, llama.cpp's default for gpt-2
  EXPECT_EQ(gpt2->Encode("Hi", true, false), gpt2->Encode("Hi", false, false));

  auto llama3 = LoadTokenizer(VocabPath("llama-bpe"));
  ASSERT_NE(llama3, nullptr);
  EXPECT_TRUE(llama3->vocab().add_bos);  // no key, llama.cpp's default for llama-bpe
  EXPECT_TRUE(llama3->IsEog(IdOf(*llama3, "<|eot_id|>")));
  EXPECT_FALSE(llama3->IsEog(IdOf(*llama3, "<|start_header_id|>")));
}

TEST(TokenizerCreateTest, UnknownPreTokenizerIsRejectedWithTheSupportedList) {
  VocabData vocab;
  vocab.model = "gpt2";
  vocab.pre = "no-such-pre";
  vocab.tokens = {"a", "b"};
  auto tokenizer = Tokenizer::Create(vocab);
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_NE(tokenizer.status().message().find("no-such-pre"), absl::string_view::npos);
  EXPECT_NE(tokenizer.status().message().find("smollm"), absl::string_view::npos);
  vocab.model = "wordpiece";
  EXPECT_FALSE(Tokenizer::Create(vocab).ok());
}

// A minimal GGUF v3 file with string metadata only, for the error paths.
std::string WriteGguf(const std::vector<std::pair<std::string, std::string>>& strings) {
  std::string data = "GGUF";
  const auto put32 = [&](uint32_t v) { data.append(reinterpret_cast<const char*>(&v), 4); };
  const auto put64 = [&](uint64_t v) { data.append(reinterpret_cast<const char*>(&v), 8); };
  const auto put_string = [&](const std::string& s) {
    put64(s.size());
    data += s;
  };
  put32(3);
  put64(0);
  put64(strings.size());
  for (const auto& [key, value] : strings) {
    put_string(key);
    put32(8);  // string
    put_string(value);
  }
  char path[] = "/tmp/llorch_tokenizer_test_XXXXXX";
  const int fd = mkstemp(path);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
  close(fd);
  return path;
}

TEST(VocabFromGgufTest, ErrorsNameTheFileAndTheKey) {
  {
    const std::string path =
        WriteGguf({{"tokenizer.ggml.model", "gpt2"}, {"tokenizer.ggml.pre", "no-such-pre"}});
    auto gguf = GgufFile::Open(path);
    ASSERT_TRUE(gguf.ok()) << gguf.status();
    auto vocab = VocabFromGguf(**gguf);
    ASSERT_FALSE(vocab.ok());
    EXPECT_NE(vocab.status().message().find(path), absl::string_view::npos) << vocab.status();
    EXPECT_NE(vocab.status().message().find("tokenizer.ggml.pre"), absl::string_view::npos);
    unlink(path.c_str());
  }
  {
    const std::string path = WriteGguf({{"tokenizer.ggml.model", "llama"}});
    auto gguf = GgufFile::Open(path);
    ASSERT_TRUE(gguf.ok()) << gguf.status();
    auto vocab = VocabFromGguf(**gguf);
    ASSERT_FALSE(vocab.ok());
    EXPECT_NE(vocab.status().message().find(path), absl::string_view::npos) << vocab.status();
    EXPECT_NE(vocab.status().message().find("tokenizer.ggml.tokens"), absl::string_view::npos);
    unlink(path.c_str());
  }
}

}  // namespace
}  // namespace llorch
