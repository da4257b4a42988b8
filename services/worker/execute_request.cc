#include "services/worker/execute_request.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/tokenizer/utf8.h"

namespace llorch {

namespace v1 = worker::v1;

namespace {

absl::StatusOr<std::vector<int32_t>> ChatPrompt(const v1::ChatMessages& chat,
                                                const ServedModel& served) {
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

}  // namespace

absl::StatusOr<JobRequest> ToJobRequest(const v1::ExecuteRequest& request,
                                        const ServedModel& served) {
  const Tokenizer& tokenizer = *served.tokenizer;
  JobRequest job;
  if (request.job_id().empty()) return absl::InvalidArgumentError("job_id is required");
  if (request.job_id().size() > kMaxJobIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("job_id is ", request.job_id().size(), " bytes, more than ", kMaxJobIdBytes));
  }
  job.job_id = request.job_id();

  switch (request.prompt_case()) {
    case v1::ExecuteRequest::kText:
      if (request.text().empty()) return absl::InvalidArgumentError("text (the prompt) is empty");
      if (utf8::Sanitize(request.text()) != request.text()) {
        return absl::InvalidArgumentError("text (the prompt) is not valid UTF-8");
      }
      job.prompt = tokenizer.Encode(request.text(), /*add_special=*/true,
                                    /*parse_special=*/!request.has_parse_special() ||
                                        request.parse_special());
      break;
    case v1::ExecuteRequest::kMessages: {
      absl::StatusOr<std::vector<int32_t>> ids = ChatPrompt(request.messages(), served);
      if (!ids.ok()) return ids.status();
      job.prompt = std::move(*ids);
      break;
    }
    case v1::ExecuteRequest::kTokenIds:
      if (request.token_ids().ids().empty()) {
        return absl::InvalidArgumentError("token_ids (the prompt) is empty");
      }
      job.prompt.assign(request.token_ids().ids().begin(), request.token_ids().ids().end());
      break;
    case v1::ExecuteRequest::PROMPT_NOT_SET:
      return absl::InvalidArgumentError("prompt is required: set text, token_ids or messages");
  }

  SamplingParams& sampling = job.params.sampling;
  const v1::SamplingParams& in = request.sampling();
  if (in.has_temperature()) sampling.temperature = in.temperature();
  if (in.has_top_k()) sampling.top_k = in.top_k();
  if (in.has_top_p()) sampling.top_p = in.top_p();
  if (in.has_min_p()) sampling.min_p = in.min_p();
  if (in.has_repetition_penalty()) sampling.repetition_penalty = in.repetition_penalty();
  if (in.has_seed()) sampling.seed = in.seed();

  // proto3 cannot tell 0 from unset: 0 means the default, negatives are errors.
  job.params.max_tokens = request.max_tokens() == 0 ? kDefaultMaxTokens : request.max_tokens();
  for (const std::string& stop : request.stop()) {
    if (stop.empty()) return absl::InvalidArgumentError("stop: stop strings must not be empty");
    job.params.stop_strings.push_back(stop);
  }
  job.params.stop_ids.assign(request.stop_token_ids().begin(), request.stop_token_ids().end());
  job.params.top_logprobs = request.logprobs();
  job.params.ignore_eos = request.ignore_eos();
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
