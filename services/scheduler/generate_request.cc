#include "services/scheduler/generate_request.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/grpc/lenient_utf8.h"
#include "services/worker/request_limits.h"
#include "worker/sampling/sampler.h"
#include "worker/tokenizer/utf8.h"

namespace llorch {
namespace {

absl::Status Invalid(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, " ", what));
}

absl::Status TooLarge(absl::string_view field, size_t size, absl::string_view unit,
                      size_t limit) {
  return absl::InvalidArgumentError(
      absl::StrCat(field, " has ", size, " ", unit, ", more than the limit of ", limit));
}

bool ValidUtf8(const std::string& text) { return utf8::Sanitize(text) == text; }

// `field`: non-empty (when required), at most `limit` bytes, valid UTF-8.
absl::Status CheckString(absl::string_view field, const std::string& text, size_t limit,
                         bool required) {
  if (required && text.empty()) return Invalid(field, "is required");
  if (text.size() > limit) return TooLarge(field, text.size(), "bytes", limit);
  if (!ValidUtf8(text)) return Invalid(field, "is not valid UTF-8");
  return absl::OkStatus();
}

absl::Status CheckMessages(const v1::ChatMessages& chat) {
  if (chat.messages_size() == 0) return Invalid("messages", "is empty");
  if (chat.messages_size() > kMaxChatMessages) {
    return TooLarge("messages", chat.messages_size(), "messages", kMaxChatMessages);
  }
  size_t bytes = 0;
  for (const v1::ChatMessage& m : chat.messages()) bytes += m.role().size() + m.content().size();
  if (bytes > kMaxPromptBytes) return TooLarge("messages", bytes, "bytes", kMaxPromptBytes);
  for (int i = 0; i < chat.messages_size(); ++i) {
    const std::string prefix = absl::StrCat("messages[", i, "].");
    if (absl::Status s = CheckString(prefix + "role", chat.messages(i).role(), kMaxPromptBytes,
                                     /*required=*/true);
        !s.ok()) {
      return s;
    }
    if (absl::Status s = CheckString(prefix + "content", chat.messages(i).content(),
                                     kMaxPromptBytes, /*required=*/false);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status CheckPrompt(const v1::GenerateRequest& request) {
  switch (request.prompt_case()) {
    case v1::GenerateRequest::kText:
      if (request.text().empty()) return Invalid("text (the prompt)", "is empty");
      return CheckString("text (the prompt)", request.text(), kMaxPromptBytes, true);
    case v1::GenerateRequest::kTokenIds: {
      const auto& ids = request.token_ids().ids();
      if (ids.empty()) return Invalid("token_ids (the prompt)", "is empty");
      if (ids.size() > kMaxPromptTokenIds) {
        return TooLarge("token_ids (the prompt)", ids.size(), "ids", kMaxPromptTokenIds);
      }
      for (int i = 0; i < ids.size(); ++i) {
        if (ids[i] < 0) return Invalid(absl::StrCat("token_ids[", i, "]"), "is negative");
      }
      return absl::OkStatus();
    }
    case v1::GenerateRequest::kMessages:
      return CheckMessages(request.messages());
    case v1::GenerateRequest::PROMPT_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("prompt is required: set text, token_ids or messages");
}

// The worker's ranges (sampler.h), on the defaults the worker would use.
absl::Status CheckSampling(const v1::SamplingParams& in) {
  SamplingParams sampling;
  if (in.has_temperature()) sampling.temperature = in.temperature();
  if (in.has_top_k()) sampling.top_k = in.top_k();
  if (in.has_top_p()) sampling.top_p = in.top_p();
  if (in.has_min_p()) sampling.min_p = in.min_p();
  if (in.has_repetition_penalty()) sampling.repetition_penalty = in.repetition_penalty();
  return ValidateSamplingParams(sampling);
}

absl::Status CheckStops(const v1::GenerateRequest& request) {
  if (request.stop_size() > kMaxStopStrings) {
    return TooLarge("stop", request.stop_size(), "strings", kMaxStopStrings);
  }
  for (int i = 0; i < request.stop_size(); ++i) {
    const std::string field = absl::StrCat("stop[", i, "]");
    if (request.stop(i).empty()) return Invalid(field, "is empty");
    if (absl::Status s = CheckString(field, request.stop(i), kMaxStopStringBytes, true); !s.ok()) {
      return s;
    }
  }
  if (request.stop_token_ids_size() > kMaxStopTokenIds) {
    return TooLarge("stop_token_ids", request.stop_token_ids_size(), "ids", kMaxStopTokenIds);
  }
  for (int i = 0; i < request.stop_token_ids_size(); ++i) {
    if (request.stop_token_ids(i) < 0) {
      return Invalid(absl::StrCat("stop_token_ids[", i, "]"), "is negative");
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateGenerateRequest(const v1::GenerateRequest& request) {
  if (std::string unparsed = UnparsedRequest(request); !unparsed.empty()) {
    return absl::InvalidArgumentError(unparsed);
  }
  if (absl::Status s = CheckString("model", request.model(), kMaxModelNameBytes, true); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckString("job_id", request.job_id(), kMaxJobIdBytes, false); !s.ok()) {
    return s;
  }
  if (request.max_tokens() < 0) {
    return Invalid("max_tokens", absl::StrCat("must be at least 1, got ", request.max_tokens()));
  }
  if (request.logprobs() < 0 || request.logprobs() > kMaxLogprobs) {
    return Invalid("logprobs",
                   absl::StrCat("must be in [0, ", kMaxLogprobs, "], got ", request.logprobs()));
  }
  if (absl::Status s = CheckSampling(request.sampling()); !s.ok()) return s;
  if (absl::Status s = CheckStops(request); !s.ok()) return s;
  return CheckPrompt(request);
}

worker::v1::ExecuteRequest ToExecuteRequest(const v1::GenerateRequest& request,
                                            const std::string& job_id) {
  worker::v1::ExecuteRequest out;
  out.set_job_id(job_id);
  switch (request.prompt_case()) {
    case v1::GenerateRequest::kText:
      out.set_text(request.text());
      break;
    case v1::GenerateRequest::kTokenIds:
      out.mutable_token_ids()->ParseFromString(request.token_ids().SerializeAsString());
      break;
    case v1::GenerateRequest::kMessages:
      out.mutable_messages()->ParseFromString(request.messages().SerializeAsString());
      break;
    case v1::GenerateRequest::PROMPT_NOT_SET:
      break;
  }
  if (request.has_sampling()) {
    out.mutable_sampling()->ParseFromString(request.sampling().SerializeAsString());
  }
  out.set_max_tokens(request.max_tokens());
  *out.mutable_stop() = request.stop();
  *out.mutable_stop_token_ids() = request.stop_token_ids();
  out.set_logprobs(request.logprobs());
  out.set_ignore_eos(request.ignore_eos());
  if (request.has_parse_special()) out.set_parse_special(request.parse_special());
  return out;
}

}  // namespace llorch
