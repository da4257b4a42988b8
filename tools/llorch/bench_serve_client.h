// The load side of `llorch bench-serve`: one streaming request at a time per
// caller thread against a llorch-worker (gRPC Execute), a llorch-scheduler
// (gRPC Generate) or any OpenAI-compatible server (streamed /v1/completions,
// server-sent events), with the client's own clock on every token event.
#ifndef LLORCH_TOOLS_LLORCH_BENCH_SERVE_CLIENT_H_
#define LLORCH_TOOLS_LLORCH_BENCH_SERVE_CLIENT_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace llorch {
namespace tool {

// One request as the client saw it.
struct RequestRecord {
  bool ok = false;
  // Why not ok: a gRPC code name ("UNAVAILABLE"), "HTTP_503", "HTTP_CONNECTION",
  // "STREAM_ERROR" (an error event inside a 200 stream), "INCOMPLETE" (the
  // stream ended without a finish), "SHORT" (fewer tokens than asked).
  std::string error;
  std::string message;        // the server's or the transport's words, if any
  double ttft_seconds = -1;   // request sent -> first token event; < 0: none came
  std::vector<double> gaps;   // seconds between consecutive token events
  int prompt_tokens = -1;     // as the server counted them; -1: not reported
  int completion_tokens = 0;  // as the server counted them, else token events seen
};

// What every request asks for.
struct RequestShape {
  int max_tokens = 64;  // generated exactly (greedy, EOS ignored)
  double timeout_seconds = 600;
};

// A server to load. Send may be called from several threads at once, each
// with its own `slot` (0 .. slots-1 given to the Make* function).
class BenchClient {
 public:
  virtual ~BenchClient() = default;
  virtual RequestRecord Send(int slot, const std::string& prompt, const RequestShape& shape) = 0;
};

// The --worker, --scheduler (with `model`) and --openai (with `model`)
// targets. `tls_ca`/`token` as the other subcommands' connection flags
// (through Connect for gRPC; a bearer token for HTTP).
absl::StatusOr<std::unique_ptr<BenchClient>> MakeWorkerClient(const std::string& address);
absl::StatusOr<std::unique_ptr<BenchClient>> MakeSchedulerClient(const std::string& address,
                                                                 const std::string& model);
absl::StatusOr<std::unique_ptr<BenchClient>> MakeOpenAiClient(const std::string& url,
                                                              const std::string& model,
                                                              int slots);

// The prompt of request `index`: `words` common English words, each one
// token in Llama-family BPE vocabularies when preceded by a space, so about
// `words` tokens (the servers' own counts are reported). Drawn from a fixed
// sequence seeded by `index`: prompts differ from their first word, so no
// server can reuse a cached prefix across requests.
std::string BenchPrompt(int index, int words);

// Server-sent events: Feed bytes as they arrive; `on_data` gets the data of
// each complete event (its `data:` lines joined by newlines).
class SseParser {
 public:
  void Feed(absl::string_view bytes, const std::function<void(const std::string&)>& on_data);

 private:
  std::string pending_;  // an incomplete line
  std::string data_;     // the current event's data so far
  bool has_data_ = false;
};

}  // namespace tool
}  // namespace llorch

#endif  // LLORCH_TOOLS_LLORCH_BENCH_SERVE_CLIENT_H_
