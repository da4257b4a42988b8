// OpenAI's HTTP API (chat completions, completions) in llorch's terms: a
// request body becomes a llorch.v1.GenerateRequest, the Generate stream's
// events become OpenAI's response bodies and server-sent-event chunks, and
// statuses become OpenAI's error bodies. Shapes only: ranges, limits and
// everything that needs a model are the scheduler's to check (its
// INVALID_ARGUMENT names the field, which becomes the error's `param`).
#ifndef LLORCH_SERVICES_OPENAI_OPENAI_REQUEST_H_
#define LLORCH_SERVICES_OPENAI_OPENAI_REQUEST_H_

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "llorch/v1/scheduler.pb.h"

namespace llorch::openai {

enum class Endpoint {
  kChatCompletions,  // POST /v1/chat/completions
  kCompletions,      // POST /v1/completions
};

struct OpenAiRequest {
  Endpoint endpoint = Endpoint::kChatCompletions;
  // model, prompt (text / token_ids / messages), sampling, max_tokens, stop,
  // stop_token_ids, logprobs, ignore_eos; job_id empty (the scheduler's).
  v1::GenerateRequest generate;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool logprobs = false;       // answer with log-probs (chat `logprobs`; completions' set)
  int top_logprobs = 0;        // alternatives per token (= generate.logprobs())
  // The names the client used, for error params: "max_tokens" or
  // "max_completion_tokens"; "top_logprobs" (chat) or "logprobs".
  std::string max_tokens_param = "max_tokens";
};

// Parses and converts a request body. InvalidArgument for malformed JSON, a
// field of the wrong type or an unsupported value (n > 1, tool calls, ...);
// the field is attached (ParamOf). Unknown fields are ignored, and null
// means absent, as OpenAI's API treats them.
absl::StatusOr<OpenAiRequest> ParseRequest(Endpoint endpoint, absl::string_view body);

// InvalidArgument `message` about the request field `param`.
absl::Status InvalidParam(absl::string_view param, absl::string_view message);
// The field a status is about: attached by InvalidParam, else "".
std::string ParamOf(const absl::Status& status);

// An error as OpenAI's API answers it: {"error": {message, type, param, code}}.
struct ApiError {
  int http_status = 500;
  std::string message;
  std::string type;   // invalid_request_error, rate_limit_error, server_error, ...
  std::string param;  // "" is null
  std::string code;   // "" is null
};

// The HTTP status and OpenAI type of a status from the scheduler (or from
// ParseRequest): INVALID_ARGUMENT/FAILED_PRECONDITION/OUT_OF_RANGE 400,
// UNAUTHENTICATED 401, PERMISSION_DENIED 403, NOT_FOUND 404 (code
// model_not_found), ALREADY_EXISTS 409, RESOURCE_EXHAUSTED 429, UNAVAILABLE
// 503, DEADLINE_EXCEEDED 504, anything else 500. For INVALID_ARGUMENT the
// param is the attached one, else the field the scheduler's message starts
// with, in the request's own names (`request` may be null).
ApiError ToApiError(const absl::Status& status, const OpenAiRequest* request);

nlohmann::json ErrorBody(const ApiError& error);

// "data: JSON\n\n", and the stream's end "data: [DONE]\n\n".
std::string SseEvent(const nlohmann::json& data);
inline constexpr char kSseDone[] = "data: [DONE]\n\n";
// JSON text as bodies carry it (invalid UTF-8, never expected, replaced).
std::string Dump(const nlohmann::json& value);

// OpenAI's finish_reason: "stop" (EOS, a stop string or id), "length",
// "cancelled" (the job was cancelled through the gRPC API or a drain).
std::string FinishReasonName(v1::FinishReason reason);

// One choice's answer, built from a Generate stream's events: whole for a
// non-streaming request (Add each token, then Response), or as
// chat.completion.chunk / text_completion chunks for a streaming one.
//
// Token log-probs: the sampled token is named by its text (Token.text, the
// UTF-8 it completed: may be empty while a character is incomplete) and its
// UTF-8 bytes; alternatives, which the scheduler names by id only, as
// "token_id:ID" (vLLM's form for ids) with bytes null.
class ResponseBuilder {
 public:
  // `id`: "chatcmpl-JOB" / "cmpl-JOB" (ResponseId); `created`: Unix seconds;
  // `cached_prompt_tokens`: Started's, for usage.prompt_tokens_details.
  ResponseBuilder(const OpenAiRequest& request, std::string id, int64_t created,
                  int32_t cached_prompt_tokens = 0);

  static std::string ResponseId(Endpoint endpoint, const std::string& job_id);

  // Streaming. The chat stream's first chunk: delta {role: "assistant",
  // content: ""}; none for completions.
  std::optional<nlohmann::json> FirstChunk() const;
  // Adds a token; its chunk, or none when its text is empty (its log-probs
  // then go with the next chunk).
  std::optional<nlohmann::json> TokenChunk(const v1::Token& token);
  // The chunk with finish_reason (and log-probs still pending).
  nlohmann::json FinalChunk(const v1::Finished& finished);
  // include_usage: choices [] and usage.
  nlohmann::json UsageChunk(const v1::Finished& finished) const;

  // Not streaming.
  void Add(const v1::Token& token);
  nlohmann::json Response(const v1::Finished& finished) const;

  const std::string& text() const { return text_; }

 private:
  nlohmann::json Chunk(nlohmann::json choice) const;
  nlohmann::json UsageOf(const v1::Finished& finished) const;
  // The log-probs object of the tokens [from, to).
  nlohmann::json LogprobsOf(size_t from, size_t to) const;

  const Endpoint endpoint_;
  const std::string model_;
  const std::string id_;
  const int64_t created_;
  const bool logprobs_;
  const bool include_usage_;
  const int32_t cached_prompt_tokens_;
  std::string text_;
  size_t text_chars_ = 0;  // code points in text_ (completions' text_offset)
  // Per token: chat content entries, or completions' four lists.
  nlohmann::json entries_ = nlohmann::json::array();
  nlohmann::json tokens_ = nlohmann::json::array();
  nlohmann::json token_logprobs_ = nlohmann::json::array();
  nlohmann::json top_logprobs_ = nlohmann::json::array();
  nlohmann::json text_offsets_ = nlohmann::json::array();
  size_t streamed_logprobs_ = 0;  // tokens whose log-probs a chunk carried
};

}  // namespace llorch::openai

#endif  // LLORCH_SERVICES_OPENAI_OPENAI_REQUEST_H_
