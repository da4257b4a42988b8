#include "worker/sampling/stop_matcher.h"

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace llorch {
namespace {

// Reference behaviour from the definitions, on the whole text at once.
struct Expected {
  std::string emitted;
  bool stopped;
};

// The first stop string to complete ends the text; among those completing at
// the same byte the one starting earliest is cut.
Expected WholeTextResult(const std::string& text,
                         const std::vector<std::string>& stops) {
  for (size_t end = 1; end <= text.size(); ++end) {
    size_t begin = std::string::npos;
    for (const std::string& stop : stops) {
      if (!stop.empty() && stop.size() <= end &&
          text.compare(end - stop.size(), stop.size(), stop) == 0) {
        begin = std::min(begin, end - stop.size());
      }
    }
    if (begin != std::string::npos) return {text.substr(0, begin), true};
  }
  return {text, false};
}

// Length of the longest suffix of `text` that is a proper prefix of a stop
// string: what may legitimately be held back.
size_t LongestPendingSuffix(const std::string& text,
                            const std::vector<std::string>& stops) {
  size_t best = 0;
  for (const std::string& stop : stops) {
    for (size_t length = 1; length < stop.size() && length <= text.size(); ++length) {
      if (text.compare(text.size() - length, length, stop.substr(0, length)) == 0) {
        best = std::max(best, length);
      }
    }
  }
  return best;
}

// Feeds `pieces` one by one and checks, after every push, that exactly the
// text that cannot yet be part of a stop string has been emitted; then checks
// the final result against the whole-text reference.
void CheckPieces(const std::vector<std::string>& pieces,
                 const std::vector<std::string>& stops) {
  std::string text;
  for (const std::string& piece : pieces) text += piece;
  const Expected expected = WholeTextResult(text, stops);

  StopMatcher matcher(stops);
  std::string consumed;
  std::string emitted;
  for (const std::string& piece : pieces) {
    const std::string out = matcher.Push(piece);
    emitted += out;
    if (matcher.stopped()) break;
    consumed += piece;
    const size_t pending = LongestPendingSuffix(consumed, stops);
    ASSERT_EQ(emitted, consumed.substr(0, consumed.size() - pending))
        << "after pushing " << consumed.size() << " of " << text.size()
        << " bytes of \"" << text << "\"";
  }
  if (!matcher.stopped()) emitted += matcher.Flush();
  EXPECT_EQ(matcher.stopped(), expected.stopped) << text;
  EXPECT_EQ(emitted, expected.emitted) << text;
}

// Every way of cutting `text` into two pieces, into single bytes, and a set
// of random cuts.
void CheckAllSplits(const std::string& text, const std::vector<std::string>& stops) {
  for (size_t cut = 0; cut <= text.size(); ++cut) {
    SCOPED_TRACE("cut at " + std::to_string(cut));
    CheckPieces({text.substr(0, cut), text.substr(cut)}, stops);
  }
  std::vector<std::string> bytes;
  for (char c : text) bytes.emplace_back(1, c);
  {
    SCOPED_TRACE("byte by byte");
    CheckPieces(bytes, stops);
  }
  std::mt19937 rng(static_cast<uint32_t>(text.size()));
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<std::string> pieces;
    size_t pos = 0;
    while (pos < text.size()) {
      const size_t length = std::uniform_int_distribution<size_t>(0, 4)(rng);
      pieces.push_back(text.substr(pos, length));
      pos += length;
    }
    SCOPED_TRACE("random split " + std::to_string(trial));
    CheckPieces(pieces, stops);
  }
}

TEST(StopMatcherTest, NoStopStringsPassEverythingThrough) {
  StopMatcher matcher({});
  EXPECT_EQ(matcher.Push("hello "), "hello ");
  EXPECT_EQ(matcher.Push("world"), "world");
  EXPECT_EQ(matcher.Flush(), "");
  EXPECT_FALSE(matcher.stopped());
}

TEST(StopMatcherTest, EmptyStopStringsAreIgnored) {
  StopMatcher matcher({"", "END"});
  EXPECT_EQ(matcher.Push("abc"), "abc");
  EXPECT_FALSE(matcher.stopped());
  EXPECT_EQ(matcher.Push("E"), "");
  EXPECT_EQ(matcher.Push("ND!"), "");
  EXPECT_TRUE(matcher.stopped());
}

TEST(StopMatcherTest, SingleStopStringEverySplit) {
  CheckAllSplits("The answer is 42.\n\nUser: next", {"\n\nUser:"});
  CheckAllSplits("no stop string in here at all", {"\n\nUser:"});
}

TEST(StopMatcherTest, StopAtVeryStart) {
  CheckAllSplits("</s> trailing", {"</s>"});
  StopMatcher matcher({"</s>"});
  EXPECT_EQ(matcher.Push("</s>"), "");
  EXPECT_TRUE(matcher.stopped());
}

TEST(StopMatcherTest, TextAfterStopIsDropped) {
  StopMatcher matcher({"STOP"});
  EXPECT_EQ(matcher.Push("abcST"), "abc");
  EXPECT_EQ(matcher.Push("OPxyz"), "");
  EXPECT_TRUE(matcher.stopped());
  EXPECT_EQ(matcher.Push("more"), "");
  EXPECT_EQ(matcher.Flush(), "");
}

TEST(StopMatcherTest, OverlappingStopStringsEarliestMatchWins) {
  const std::vector<std::string> stops = {"abcd", "bc", "cde", "xyz"};
  CheckAllSplits("__abcde__", stops);
  CheckAllSplits("__abx_bx_b", stops);
  CheckAllSplits("xy xy xyz", stops);
  // One stop is a prefix of another: the shorter completes first.
  CheckAllSplits("say ab then abc", {"abc", "ab"});
  // Both complete at the same byte: the longer one (earlier start) is cut.
  CheckAllSplits("x abc y", {"bc", "abc"});
  // A later-starting stop string completes before an earlier, longer one.
  StopMatcher matcher({"abcd", "bc"});
  EXPECT_EQ(matcher.Push("xabcd"), "xa");
}

TEST(StopMatcherTest, SelfOverlappingStopString) {
  // "aab" after "aaa...": a naive matcher that restarts after a mismatch
  // would miss it or hold back too much.
  CheckAllSplits("aaaaab tail", {"aab"});
  CheckAllSplits("abababac", {"ababac"});
  CheckAllSplits("abababab", {"ababac"});
}

TEST(StopMatcherTest, NoFalseHoldBackAfterMismatch) {
  StopMatcher matcher({"<|im_end|>"});
  EXPECT_EQ(matcher.Push("a <|im"), "a ");
  // "<|im_" continues the prefix; "<|im_x" breaks it and is released at once.
  EXPECT_EQ(matcher.Push("_"), "");
  EXPECT_EQ(matcher.Push("x"), "<|im_x");
  EXPECT_FALSE(matcher.stopped());
  CheckAllSplits("a <|im_start|> b <|im_end|> c", {"<|im_end|>"});
}

TEST(StopMatcherTest, UnicodeSplitInsideCharacters) {
  // Tokens can end in the middle of a UTF-8 sequence; matching is on bytes.
  CheckAllSplits("Привет, мир! Пока.", {"мир"});
  CheckAllSplits("日本語のテキスト。次の文", {"。", "次"});
  CheckAllSplits("emoji 🙂🙃 here", {"🙃"});
  CheckAllSplits("café cafe\xCC\x81", {"e\xCC\x81"});  // decomposed é
}

TEST(StopMatcherTest, HeldBackSuffixStartsOnCharacterBoundary) {
  StopMatcher matcher({"мир"});
  // "м" is a prefix of the stop string: held back whole, and "ы" (which
  // shares no prefix with "м") is emitted whole.
  EXPECT_EQ(matcher.Push("ым"), "ы");
  EXPECT_EQ(matcher.Flush(), "м");
}

}  // namespace
}  // namespace llorch
