#include "tools/llorch/bench_serve_client.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "llorch/v1/scheduler.grpc.pb.h"
#include "tools/llorch/common.h"

namespace llorch {
namespace tool {
namespace {

namespace api = ::llorch::v1;
using Clock = std::chrono::steady_clock;

double Since(Clock::time_point start, Clock::time_point now) {
  return std::chrono::duration<double>(now - start).count();
}

// Token arrival times -> TTFT and gaps.
class TokenClock {
 public:
  TokenClock() : sent_(Clock::now()) {}
  void Token() {
    const Clock::time_point now = Clock::now();
    if (count_ == 0) {
      record_.ttft_seconds = Since(sent_, now);
    } else {
      record_.gaps.push_back(Since(last_, now));
    }
    last_ = now;
    ++count_;
  }
  int count() const { return count_; }
  RequestRecord& record() { return record_; }

 private:
  const Clock::time_point sent_;
  Clock::time_point last_;
  int count_ = 0;
  RequestRecord record_;
};

// The record's verdict once the stream is over.
RequestRecord Finish(TokenClock& clock, const RequestShape& shape) {
  RequestRecord& r = clock.record();
  if (r.error.empty() && r.completion_tokens < shape.max_tokens) {
    r.error = "SHORT";
    r.message = absl::StrCat(r.completion_tokens, " of ", shape.max_tokens, " tokens");
  }
  r.ok = r.error.empty();
  return std::move(r);
}

void GrpcError(const grpc::Status& status, RequestRecord* r) {
  r->error = absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code()));
  r->message = status.error_message();
}

// One greedy request that ignores EOS, streamed to its end. The worker's
// Execute and the scheduler's Generate share the request fields and the
// started/token/finished events; `call` starts the one or the other.
template <typename Event, typename Request, typename Call>
RequestRecord StreamGreedy(const Connection& connection, Request request,
                           const std::string& prompt, const RequestShape& shape, Call call) {
  request.set_text(prompt);
  request.mutable_sampling()->set_temperature(0);
  request.set_max_tokens(shape.max_tokens);
  request.set_ignore_eos(true);
  grpc::ClientContext context;
  connection.Prepare(&context, shape.timeout_seconds);
  TokenClock clock;
  std::unique_ptr<grpc::ClientReader<Event>> reader = call(&context, request);
  Event event;
  bool finished = false;
  RequestRecord& r = clock.record();
  while (reader->Read(&event)) {
    if (event.has_token()) {
      clock.Token();
    } else if (event.has_started()) {
      r.prompt_tokens = event.started().prompt_tokens();
    } else if (event.has_finished()) {
      finished = true;
      r.completion_tokens = event.finished().completion_tokens();
    }
  }
  const grpc::Status status = reader->Finish();
  if (!status.ok()) {
    GrpcError(status, &r);
    r.completion_tokens = clock.count();
  } else if (!finished) {
    r.error = "INCOMPLETE";
    r.completion_tokens = clock.count();
  }
  return Finish(clock, shape);
}

class WorkerClient : public BenchClient {
 public:
  explicit WorkerClient(Connection connection)
      : connection_(std::move(connection)),
        stub_(worker::v1::Worker::NewStub(connection_.channel)),
        job_prefix_(NewJobId()) {}

  RequestRecord Send(int /*slot*/, const std::string& prompt, const RequestShape& shape) override {
    worker::v1::ExecuteRequest request;
    request.set_job_id(absl::StrCat(job_prefix_, "-", next_job_++));
    return StreamGreedy<worker::v1::ExecuteEvent>(
        connection_, std::move(request), prompt, shape,
        [&](grpc::ClientContext* context, const worker::v1::ExecuteRequest& r) {
          return stub_->Execute(context, r);
        });
  }

 private:
  const Connection connection_;
  const std::unique_ptr<worker::v1::Worker::Stub> stub_;
  const std::string job_prefix_;
  std::atomic<int64_t> next_job_{0};
};

class SchedulerClient : public BenchClient {
 public:
  SchedulerClient(Connection connection, std::string model)
      : connection_(std::move(connection)),
        stub_(api::Scheduler::NewStub(connection_.channel)),
        model_(std::move(model)) {}

  RequestRecord Send(int /*slot*/, const std::string& prompt, const RequestShape& shape) override {
    api::GenerateRequest request;
    request.set_model(model_);
    return StreamGreedy<api::GenerateResponse>(
        connection_, std::move(request), prompt, shape,
        [&](grpc::ClientContext* context, const api::GenerateRequest& r) {
          return stub_->Generate(context, r);
        });
  }

 private:
  const Connection connection_;
  const std::unique_ptr<api::Scheduler::Stub> stub_;
  const std::string model_;
};

// One /v1/completions answer as it arrives: its HTTP status, then its body
// (SSE events when 200). The clock starts as the request goes out.
struct CompletionStream {
  TokenClock clock;
  int status = 0;
  std::string error_body;  // a non-200 answer
  bool finished = false;   // a choice came with its finish_reason
  bool done = false;       // [DONE] came
  std::optional<int> usage_tokens;
  SseParser sse;
};

// A parsed chunk: a token, a finish_reason or usage, or an error event.
void ReadCompletionChunk(const json& chunk, CompletionStream* stream) {
  RequestRecord& r = stream->clock.record();
  if (const auto e = chunk.find("error"); e != chunk.end()) {
    if (r.error.empty()) {
      r.error = "STREAM_ERROR";
      r.message = e->is_object() ? e->value("message", e->dump()) : e->dump();
    }
    return;
  }
  if (const auto c = chunk.find("choices"); c != chunk.end() && c->is_array() && !c->empty()) {
    const json& choice = (*c)[0];
    const auto reason = choice.find("finish_reason");
    if (reason == choice.end() || reason->is_null()) {
      stream->clock.Token();
    } else {
      stream->finished = true;
    }
  }
  if (const auto u = chunk.find("usage"); u != chunk.end() && u->is_object()) {
    if (u->contains("completion_tokens")) stream->usage_tokens = u->value("completion_tokens", 0);
    if (u->contains("prompt_tokens")) r.prompt_tokens = u->value("prompt_tokens", -1);
  }
}

// One SSE event's data: a chunk, or [DONE].
void ReadCompletionEvent(const std::string& data, CompletionStream* stream) {
  if (data == "[DONE]") {
    stream->done = true;
    return;
  }
  RequestRecord& r = stream->clock.record();
  const json chunk = json::parse(data, nullptr, /*allow_exceptions=*/false);
  if (chunk.is_discarded() || !chunk.is_object()) return;
  try {  // value() throws on a field of another type: a failed request, not the bench
    ReadCompletionChunk(chunk, stream);
  } catch (const json::exception& e) {
    if (r.error.empty()) {
      r.error = "BAD_EVENT";
      r.message = absl::StrCat("an event the bench cannot read: ", e.what());
    }
  }
}

// A non-200 answer's message: its OpenAI error's, else the body's start.
std::string HttpErrorMessage(const std::string& body) {
  const json e = json::parse(body, nullptr, false);
  if (e.is_object() && e.contains("error") && e["error"].is_object()) {
    const json message = e["error"].value("message", json());
    if (message.is_string()) return message.get<std::string>();
  }
  return body.substr(0, 200);
}

// An OpenAI-compatible server's streamed /v1/completions. One keep-alive
// connection per slot (httplib's client is not for concurrent requests).
class OpenAiClient : public BenchClient {
 public:
  OpenAiClient(std::string origin, std::string path, std::string model, std::string token,
               int slots)
      : origin_(std::move(origin)),
        path_(std::move(path)),
        model_(std::move(model)),
        token_(std::move(token)),
        clients_(slots) {}

  RequestRecord Send(int slot, const std::string& prompt, const RequestShape& shape) override {
    bool reused = false;
    RequestRecord r = Attempt(slot, prompt, shape, &reused);
    // A kept-alive connection the server closed just as the request went out
    // (nothing came back): once more on a new connection, as HTTP clients do.
    if (reused && r.error == "HTTP_CONNECTION") r = Attempt(slot, prompt, shape, &reused);
    return r;
  }

 private:
  RequestRecord Attempt(int slot, const std::string& prompt, const RequestShape& shape,
                        bool* reused) {
    httplib::Client& http = Http(slot, shape, reused);
    httplib::Request request = CompletionRequest(prompt, shape);
    CompletionStream stream;
    RequestRecord& r = stream.clock.record();
    auto on_data = [&stream](const std::string& data) { ReadCompletionEvent(data, &stream); };
    request.response_handler = [&](const httplib::Response& response) {
      stream.status = response.status;
      return true;
    };
    request.content_receiver = [&](const char* data, size_t length, uint64_t, uint64_t) {
      if (stream.status != 200) {
        stream.error_body.append(data, length);
      } else {
        stream.sse.Feed(absl::string_view(data, length), on_data);
      }
      return true;
    };
    httplib::Response response;
    httplib::Error error = httplib::Error::Success;
    const bool sent = http.send(request, response, error);
    if (!sent || error != httplib::Error::Success) {
      r.error = stream.status == 0 ? "HTTP_CONNECTION" : "HTTP_READ";
      r.message = absl::StrCat(origin_, ": ", httplib::to_string(error));
      // The connection is in an unknown state: a new one next time.
      std::lock_guard<std::mutex> lock(mu_);
      clients_[slot].reset();
    } else if (stream.status != 200) {
      r.error = absl::StrCat("HTTP_", stream.status);
      r.message = HttpErrorMessage(stream.error_body);
    } else if (r.error.empty() && !stream.finished) {
      r.error = "INCOMPLETE";
      r.message = stream.done ? "no finish_reason before [DONE]" : "the stream ended early";
    }
    r.completion_tokens = stream.usage_tokens.value_or(stream.clock.count());
    return Finish(stream.clock, shape);
  }

  // A streamed /v1/completions request: greedy, EOS ignored, usage at the end.
  httplib::Request CompletionRequest(const std::string& prompt, const RequestShape& shape) const {
    const json body = {{"model", model_},
                       {"prompt", prompt},
                       {"max_tokens", shape.max_tokens},
                       {"temperature", 0},
                       {"stream", true},
                       {"stream_options", {{"include_usage", true}}},
                       {"ignore_eos", true}};
    httplib::Request request;
    request.method = "POST";
    request.path = path_;
    request.headers = {{"Content-Type", "application/json"}, {"Accept", "text/event-stream"}};
    if (!token_.empty()) request.headers.emplace("Authorization", absl::StrCat("Bearer ", token_));
    request.body = Dump(body);
    return request;
  }

  // The slot's client; `reused`: it has served a request before.
  httplib::Client& Http(int slot, const RequestShape& shape, bool* reused) {
    std::lock_guard<std::mutex> lock(mu_);
    std::unique_ptr<httplib::Client>& http = clients_.at(slot);
    *reused = http != nullptr;
    if (http == nullptr) {
      http = std::make_unique<httplib::Client>(origin_);
      http->set_keep_alive(true);
      http->set_tcp_nodelay(true);
      const auto timeout = static_cast<time_t>(shape.timeout_seconds);
      http->set_connection_timeout(std::min<time_t>(timeout, 10), 0);
      http->set_read_timeout(timeout, 0);
      http->set_write_timeout(timeout, 0);
    }
    return *http;
  }

  const std::string origin_;  // scheme://host:port
  const std::string path_;    // .../v1/completions
  const std::string model_;
  const std::string token_;
  std::mutex mu_;  // clients_ (each slot's client is its thread's alone)
  std::vector<std::unique_ptr<httplib::Client>> clients_;
};

// Common English words, one token each after a space in GPT-2-style and
// SentencePiece vocabularies.
constexpr const char* kWords[] = {
    "the",   "of",    "and",   "to",    "in",    "was",   "for",   "on",    "that",  "with",
    "as",    "by",    "at",    "from",  "his",   "an",    "were",  "which", "be",    "this",
    "has",   "had",   "not",   "but",   "also",  "first", "one",   "their", "its",   "after",
    "new",   "who",   "they",  "have",  "her",   "she",   "two",   "been",  "other", "when",
    "there", "all",   "into",  "time",  "more",  "only",  "over",  "city",  "some",  "world",
    "would", "where", "later", "up",    "such",  "used",  "many",  "can",   "state", "about",
    "out",   "made",  "then",  "year",  "day",   "water", "house", "light", "small", "great"};

}  // namespace

std::string BenchPrompt(int index, int words) {
  // splitmix64 of the index: a different, fixed word sequence per request.
  uint64_t state = 0x9e3779b97f4a7c15ull * (static_cast<uint64_t>(index) + 1);
  auto next = [&state] {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  constexpr size_t kCount = sizeof(kWords) / sizeof(kWords[0]);
  std::string text;
  for (int i = 0; i < words; ++i) {
    if (i > 0) text += ' ';
    text += kWords[next() % kCount];
  }
  return text;
}

void SseParser::Feed(absl::string_view bytes,
                     const std::function<void(const std::string&)>& on_data) {
  pending_.append(bytes.data(), bytes.size());
  size_t start = 0;
  for (size_t end; (end = pending_.find('\n', start)) != std::string::npos; start = end + 1) {
    absl::string_view line(pending_.data() + start, end - start);
    if (absl::EndsWith(line, "\r")) line.remove_suffix(1);
    if (line.empty()) {  // the event's end
      if (has_data_) on_data(data_);
      data_.clear();
      has_data_ = false;
    } else if (absl::StartsWith(line, "data:")) {
      line.remove_prefix(5);
      if (absl::StartsWith(line, " ")) line.remove_prefix(1);
      if (has_data_) data_ += '\n';
      data_.append(line.data(), line.size());
      has_data_ = true;
    }  // other fields (event:, id:, retry:) and comments (":") are not used
  }
  pending_.erase(0, start);
}

absl::StatusOr<std::unique_ptr<BenchClient>> MakeWorkerClient(const std::string& address) {
  absl::StatusOr<Connection> connection = Connect(address);
  if (!connection.ok()) return connection.status();
  return std::make_unique<WorkerClient>(*std::move(connection));
}

absl::StatusOr<std::unique_ptr<BenchClient>> MakeSchedulerClient(const std::string& address,
                                                                 const std::string& model) {
  absl::StatusOr<Connection> connection = Connect(address);
  if (!connection.ok()) return connection.status();
  return std::make_unique<SchedulerClient>(*std::move(connection), model);
}

absl::StatusOr<std::unique_ptr<BenchClient>> MakeOpenAiClient(const std::string& url,
                                                              const std::string& model,
                                                              int slots) {
  const size_t scheme_end = url.find("://");
  const std::string scheme =
      scheme_end == std::string::npos ? "" : absl::AsciiStrToLower(url.substr(0, scheme_end));
  if (scheme != "http" && scheme != "https") {
    return absl::InvalidArgumentError(
        absl::StrCat("--openai: expected http://HOST:PORT[/PATH], got '", url, "'"));
  }
  const size_t path_start = url.find('/', scheme_end + 3);
  const std::string origin = url.substr(0, path_start);
  if (origin.size() <= scheme_end + 3) {
    return absl::InvalidArgumentError(absl::StrCat("--openai: no host in '", url, "'"));
  }
  std::string path = path_start == std::string::npos ? "" : url.substr(path_start);
  while (absl::EndsWith(path, "/")) path.pop_back();
  path += absl::EndsWith(path, "/v1") ? "/completions" : "/v1/completions";
  // The bearer token of --token-file, read and checked as for the gRPC
  // targets (the channel is never used: gRPC connects on the first call).
  absl::StatusOr<Connection> connection = Connect("127.0.0.1:1");
  if (!connection.ok()) return connection.status();
  return std::make_unique<OpenAiClient>(origin, path, model, connection->token, slots);
}

}  // namespace tool
}  // namespace llorch
