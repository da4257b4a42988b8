#include "worker/sampling/stop_matcher.h"

#include <algorithm>
#include <utility>

namespace llorch {

StopMatcher::StopMatcher(std::vector<std::string> stop_strings)
    : stop_strings_(std::move(stop_strings)) {
  stop_strings_.erase(
      std::remove_if(stop_strings_.begin(), stop_strings_.end(),
                     [](const std::string& s) { return s.empty(); }),
      stop_strings_.end());
}

std::string StopMatcher::Push(const std::string& text) {
  if (stopped_) return std::string();
  held_ += text;

  // Generation stops where the first stop string completes, so the cut is
  // decided on the shortest prefix of the text that contains a stop string
  // (earliest end; among stop strings ending there, the earliest start).
  // This makes the result independent of how the text was split into tokens.
  // Everything emitted so far was checked to start no possible match, so any
  // match lies inside held_.
  size_t match_begin = std::string::npos;
  size_t match_end = std::string::npos;
  for (const std::string& stop : stop_strings_) {
    const size_t begin = held_.find(stop);  // its earliest end, too
    if (begin == std::string::npos) continue;
    const size_t end = begin + stop.size();
    if (end < match_end || (end == match_end && begin < match_begin)) {
      match_begin = begin;
      match_end = end;
    }
  }
  if (match_begin != std::string::npos) {
    std::string out = held_.substr(0, match_begin);
    held_.clear();
    stopped_ = true;
    return out;
  }

  // Hold back the longest suffix of held_ that is a proper prefix of some
  // stop string; it may still complete with the next token.
  size_t keep = 0;
  for (const std::string& stop : stop_strings_) {
    const size_t longest = std::min(stop.size() - 1, held_.size());
    for (size_t length = longest; length > keep; --length) {
      if (held_.compare(held_.size() - length, length, stop, 0, length) == 0) {
        keep = length;
        break;
      }
    }
  }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopMatcher::Flush() {
  std::string out;
  out.swap(held_);
  return out;
}

}  // namespace llorch
