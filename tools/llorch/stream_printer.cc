#include "tools/llorch/stream_printer.h"

#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "tools/llorch/common.h"

namespace llorch {
namespace tool {

void StreamPrinter::Started(const worker::v1::Started& started, const json& extra) {
  if (!jsonl_) return;  // the text is the tokens' only
  json line = {{"event", "started"},
               {"job_id", started.job_id()},
               {"prompt_tokens", started.prompt_tokens()},
               {"seed", started.seed()}};
  line.update(extra);
  std::cout << Dump(line) << "\n" << std::flush;
}

void StreamPrinter::Token(const worker::v1::Token& t) {
  any_tokens_ = true;
  if (!jsonl_) {
    std::cout << t.text() << std::flush;
    return;
  }
  json line = {{"event", "token"}, {"index", t.index()}, {"id", t.id()},
               {"text", t.text()},  {"logprob", t.logprob()}};
  if (t.top_logprobs_size() > 0) {
    json top = json::array();
    for (const auto& alt : t.top_logprobs()) top.push_back({alt.id(), alt.logprob()});
    line["top_logprobs"] = top;
  }
  std::cout << Dump(line) << "\n" << std::flush;
}

void StreamPrinter::Finished(const worker::v1::Finished& f) {
  const std::string reason(absl::StripPrefix(
      absl::AsciiStrToLower(worker::v1::FinishReason_Name(f.reason())), "finish_reason_"));
  if (jsonl_) {
    json done = {{"event", "finished"},
                 {"reason", reason},
                 {"prompt_tokens", f.prompt_tokens()},
                 {"completion_tokens", f.completion_tokens()},
                 {"ttft_ms", f.ttft_seconds() * 1000},
                 {"decode_tokens_per_s", f.decode_tokens_per_second()}};
    std::cout << Dump(done) << "\n" << std::flush;
    return;
  }
  std::cout << "\n" << std::flush;
  std::cerr << absl::StrCat("[", f.prompt_tokens(), " prompt tokens, ", f.completion_tokens(),
                            " generated, finished: ", reason, ", ttft ",
                            static_cast<int>(f.ttft_seconds() * 1000), " ms, ",
                            static_cast<int>(f.decode_tokens_per_second() * 10) / 10.0, " tok/s]")
            << std::endl;
}

absl::Status StreamPrinter::End(const std::string& address, const grpc::Status& status,
                                const std::optional<worker::v1::Finished>& finished) {
  if (!status.ok()) {
    if (!jsonl_ && any_tokens_) std::cout << "\n" << std::flush;
    return RpcError(address, status);
  }
  if (!finished.has_value()) return absl::InternalError("stream ended without Finished");
  Finished(*finished);
  return absl::OkStatus();
}

}  // namespace tool
}  // namespace llorch
