#include "services/worker/execute_request.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/grpc/lenient_utf8.h"
#include "worker/tokenizer/utf8.h"

namespace llorch {

namespace v1 = worker::v1;

namespace {

absl::Status TooLarge(absl::string_view field, size_t size, absl::string_view unit,
                      size_t limit) {
  return absl::InvalidArgumentError(
      absl::StrCat(field, " has ", size, " ", unit, ", more than the limit of ", limit));
}

absl::StatusOr<std::vector<int32_t>> ChatPrompt(const v1::ChatMessages& chat,
                                                const ServedModel& served) {
  if (chat.messages_size() == 0) return absl::InvalidArgumentError("messages is empty");
  if (chat.messages_size() > kMaxChatMessages) {
    return TooLarge("messages", chat.messages_size(), "messages", kMaxChatMessages);
  }
  size_t bytes = 0;
  for (const v1::ChatMessage& m : chat.messages()) bytes += m.role().size() + m.content().size();
  if (bytes > kMaxPromptBytes) return TooLarge("messages", bytes, "bytes", kMaxPromptBytes);
  std::vector<ChatMessage> messages;
  messages.reserve(chat.messages_size());
  for (int i = 0; i < chat.messages_size(); ++i) {
    const v1::ChatMessage& m = chat.messages(i);
    if (m.role().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("messages[", i, "].role is empty"));
    }
    for (const std::string* field : {&m.role(), &m.content()}) {
      if (utf8::Sanitize(*field) != *field) {
        return absl::InvalidArgumentError(absl::StrCat(
            "messages[", i, "].", field == &m.role() ? "role" : "content", " is not valid UTF-8"));
      }
    }
    messages.push_back({m.role(), m.content()});
  }
  const bool add_generation_prompt =
      !chat.has_add_generation_prompt() || chat.add_generation_prompt();
  absl::StatusOr<std::vector<int32_t>> ids =
      ChatPromptIds(served, messages, add_generation_prompt);
  if (!ids.ok()) {
    if (absl::IsInvalidArgument(ids.status())) {
      return absl::InvalidArgumentError(
          absl::StrCat("messages: the chat template says: ", ids.status().message()));
    }
    return ids.status();
  }
  if (ids->empty()) return absl::InvalidArgumentError("messages: the rendered prompt is empty");
  return ids;
}

// Starts from the shared defaults (a default GenerationParams) and
// overrides what the request sets.
absl::Status SetGenerationParams(const v1::ExecuteRequest& request, GenerationParams* params) {
  SamplingParams& sampling = params->sampling;
  const v1::SamplingParams& in = request.sampling();
  if (in.has_temperature()) sampling.temperature = in.temperature();
  if (in.has_top_k()) sampling.top_k = in.top_k();
  if (in.has_top_p()) sampling.top_p = in.top_p();
  if (in.has_min_p()) sampling.min_p = in.min_p();
  if (in.has_repetition_penalty()) sampling.repetition_penalty = in.repetition_penalty();
  if (in.has_seed()) sampling.seed = in.seed();  // else the job draws one

  // proto3 cannot tell 0 from unset: 0 means the default, negatives are errors.
  if (request.max_tokens() != 0) params->max_tokens = request.max_tokens();
  if (request.stop_size() > kMaxStopStrings) {
    return TooLarge("stop", request.stop_size(), "strings", kMaxStopStrings);
  }
  for (int i = 0; i < request.stop_size(); ++i) {
    const std::string& stop = request.stop(i);
    if (stop.empty()) return absl::InvalidArgumentError("stop: stop strings must not be empty");
    if (stop.size() > kMaxStopStringBytes) {
      return TooLarge(absl::StrCat("stop[", i, "]"), stop.size(), "bytes", kMaxStopStringBytes);
    }
    params->stop_strings.push_back(stop);
  }
  if (request.stop_token_ids_size() > kMaxStopTokenIds) {
    return TooLarge("stop_token_ids", request.stop_token_ids_size(), "ids", kMaxStopTokenIds);
  }
  params->stop_ids.assign(request.stop_token_ids().begin(), request.stop_token_ids().end());
  params->top_logprobs = request.logprobs();
  params->ignore_eos = request.ignore_eos();
  return absl::OkStatus();
}

// The prompt in whichever form the request gives it, as token ids.
absl::StatusOr<std::vector<int32_t>> PromptIds(const v1::ExecuteRequest& request,
                                               const ServedModel& served) {
  switch (request.prompt_case()) {
    case v1::ExecuteRequest::kText: {
      const std::string& text = request.text();
      if (text.empty()) return absl::InvalidArgumentError("text (the prompt) is empty");
      if (text.size() > kMaxPromptBytes) {
        return TooLarge("text (the prompt)", text.size(), "bytes", kMaxPromptBytes);
      }
      if (utf8::Sanitize(text) != text) {
        return absl::InvalidArgumentError("text (the prompt) is not valid UTF-8");
      }
      return served.tokenizer->Encode(
          text, /*add_special=*/true,
          /*parse_special=*/!request.has_parse_special() || request.parse_special());
    }
    case v1::ExecuteRequest::kMessages:
      return ChatPrompt(request.messages(), served);
    case v1::ExecuteRequest::kTokenIds: {
      const auto& ids = request.token_ids().ids();
      if (ids.empty()) return absl::InvalidArgumentError("token_ids (the prompt) is empty");
      return std::vector<int32_t>(ids.begin(), ids.end());
    }
    case v1::ExecuteRequest::PROMPT_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("prompt is required: set text, token_ids or messages");
}

}  // namespace

absl::StatusOr<JobRequest> ToJobRequest(const v1::ExecuteRequest& request,
                                        const ServedModel& served) {
  JobRequest job;
  if (std::string unparsed = UnparsedRequest(request); !unparsed.empty()) {
    return absl::InvalidArgumentError(unparsed);
  }
  if (request.job_id().empty()) return absl::InvalidArgumentError("job_id is required");
  if (request.job_id().size() > kMaxJobIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("job_id is ", request.job_id().size(), " bytes, more than ", kMaxJobIdBytes));
  }
  // Strings the worker sends back or matches must be UTF-8 (protobuf lets
  // them through: common/grpc/lenient_utf8.h).
  if (utf8::Sanitize(request.job_id()) != request.job_id()) {
    return absl::InvalidArgumentError("job_id is not valid UTF-8");
  }
  for (int i = 0; i < request.stop_size(); ++i) {
    if (utf8::Sanitize(request.stop(i)) != request.stop(i)) {
      return absl::InvalidArgumentError(absl::StrCat("stop[", i, "] is not valid UTF-8"));
    }
  }
  job.job_id = request.job_id();
  // The cheap checks before the prompt is tokenised or rendered.
  if (absl::Status s = SetGenerationParams(request, &job.params); !s.ok()) return s;
  absl::StatusOr<std::vector<int32_t>> prompt = PromptIds(request, served);
  if (!prompt.ok()) return prompt.status();
  job.prompt = std::move(*prompt);
  return job;
}

v1::FinishReason ToProtoFinishReason(FinishReason reason) {
  switch (reason) {
    case FinishReason::kEos: return v1::FINISH_REASON_EOS;
    case FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    case FinishReason::kStop: return v1::FINISH_REASON_STOP;
    case FinishReason::kCancelled: return v1::FINISH_REASON_CANCELLED;
    case FinishReason::kNone: break;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

}  // namespace llorch
