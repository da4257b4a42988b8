// The OpenAI API's request parsing (services/openai/openai_request.h): an
// untrusted HTTP body as both endpoints take it, then the scheduler's
// validation of the GenerateRequest it becomes, the error body a client
// would get, and response bodies that echo the request's strings.
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "llorch/v1/scheduler.pb.h"
#include "services/openai/openai_request.h"
#include "services/scheduler/generate_request.h"
#include "tests/fuzz/fuzz_support.h"

namespace llorch::fuzz {
namespace {

void CheckErrorBody(const absl::Status& status, const openai::OpenAiRequest* request) {
  const openai::ApiError error = openai::ToApiError(status, request);
  LLORCH_FUZZ_CHECK(error.http_status == 400, error.message);
  (void)openai::Dump(openai::ErrorBody(error));
}

// A stream of the answer's events, with the request's own strings as token
// texts (they may hold anything, invalid UTF-8 included).
void ExerciseResponses(const openai::OpenAiRequest& request) {
  for (bool streaming : {false, true}) {
    openai::ResponseBuilder builder(request, openai::ResponseBuilder::ResponseId(
                                                 request.endpoint, request.generate.model()),
                                    1700000000);
    if (streaming) {
      if (auto first = builder.FirstChunk()) (void)openai::SseEvent(*first);
    }
    v1::Token token;
    token.set_id(7);
    token.set_logprob(-0.5f);
    for (int i = 0; i < request.top_logprobs && i < 3; ++i) {
      v1::TopLogprob* alt = token.add_top_logprobs();
      alt->set_id(7 + i);
      alt->set_logprob(-1.0f * i);
    }
    for (const std::string& text : {request.generate.model(), std::string(),
                                    request.generate.text()}) {
      token.set_text(text);
      if (streaming) {
        if (auto chunk = builder.TokenChunk(token)) (void)openai::SseEvent(*chunk);
      } else {
        builder.Add(token);
      }
    }
    v1::Finished finished;
    finished.set_reason(v1::FINISH_REASON_LENGTH);
    finished.set_prompt_tokens(3);
    finished.set_completion_tokens(3);
    if (streaming) {
      (void)openai::SseEvent(builder.FinalChunk(finished));
      if (request.include_usage) (void)openai::SseEvent(builder.UsageChunk(finished));
    } else {
      (void)openai::Dump(builder.Response(finished));
    }
  }
}

}  // namespace
}  // namespace llorch::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace llorch;
  const absl::string_view body(reinterpret_cast<const char*>(data), size);
  for (openai::Endpoint endpoint :
       {openai::Endpoint::kChatCompletions, openai::Endpoint::kCompletions}) {
    absl::StatusOr<openai::OpenAiRequest> request = openai::ParseRequest(endpoint, body);
    if (!request.ok()) {
      LLORCH_FUZZ_CHECK(absl::IsInvalidArgument(request.status()), request.status().ToString());
      fuzz::CheckErrorBody(request.status(), nullptr);
      continue;
    }
    LLORCH_FUZZ_CHECK(request->endpoint == endpoint, "endpoint");
    LLORCH_FUZZ_CHECK(request->generate.job_id().empty(), "job_id is the scheduler's");
    // The scheduler's checks, and the error the client then gets.
    const absl::Status valid = ValidateGenerateRequest(request->generate);
    if (!valid.ok()) {
      LLORCH_FUZZ_CHECK(absl::IsInvalidArgument(valid), valid.ToString());
      fuzz::CheckErrorBody(valid, &*request);
      continue;
    }
    fuzz::ExerciseResponses(*request);
  }
  return 0;
}
