// The output of `llorch generate`, one form whichever server streamed: the
// worker's events as they come, or the scheduler's converted to them (the
// shared messages have the same fields, numbers and types), so --worker and
// --scheduler print alike. text: the tokens' text on stdout, a summary on
// stderr; jsonl: one JSON event per line, tokens as `llorch run` prints them.
#ifndef LLORCH_TOOLS_LLORCH_STREAM_PRINTER_H_
#define LLORCH_TOOLS_LLORCH_STREAM_PRINTER_H_

#include <optional>
#include <string>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "llorch/worker/v1/worker.pb.h"

namespace llorch {
namespace tool {

// A message as another type with the same fields, by its bytes.
template <typename To, typename From>
To SameFields(const From& message) {
  To out;
  out.ParseFromString(message.SerializeAsString());
  return out;
}

class StreamPrinter {
 public:
  explicit StreamPrinter(bool jsonl) : jsonl_(jsonl) {}

  // jsonl: {"event": "started", job_id, prompt_tokens, seed, ...`extra`}.
  void Started(const worker::v1::Started& started,
               const nlohmann::json& extra = nlohmann::json::object());
  void Token(const worker::v1::Token& token);
  // After the stream's status: prints Finished, or ends the text line and
  // returns the error as "ADDRESS: CODE_NAME: message".
  absl::Status End(const std::string& address, const grpc::Status& status,
                   const std::optional<worker::v1::Finished>& finished);

 private:
  void Finished(const worker::v1::Finished& finished);

  const bool jsonl_;
  bool any_tokens_ = false;
};

}  // namespace tool
}  // namespace llorch

#endif  // LLORCH_TOOLS_LLORCH_STREAM_PRINTER_H_
