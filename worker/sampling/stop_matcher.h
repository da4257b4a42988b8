// Stop strings matched on decoded text across token boundaries. Text that
// could still be the start of a stop string is held back; the stop string
// itself is never emitted. Matching is on bytes: with valid UTF-8 text and
// stop strings, the held-back suffix always starts on a character boundary.
// Empty stop strings are ignored (they would match everywhere). With
// overlapping stop strings the first one to complete wins (as if text came
// byte by byte): {"abcd", "bc"} on "xabcd" stops at "bc" and emits "xa".
#ifndef LLORCH_WORKER_SAMPLING_STOP_MATCHER_H_
#define LLORCH_WORKER_SAMPLING_STOP_MATCHER_H_

#include <string>
#include <vector>

namespace llorch {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stop_strings);

  // Feeds newly decoded text; returns the text now safe to emit. After a
  // match, stopped() is true and the returned text ends before the match.
  std::string Push(const std::string& text);
  // End of generation without a match: returns the held-back text.
  std::string Flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stop_strings_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace llorch

#endif  // LLORCH_WORKER_SAMPLING_STOP_MATCHER_H_
