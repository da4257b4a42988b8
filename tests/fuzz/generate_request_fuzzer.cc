// The scheduler's request validation (services/scheduler/generate_request.h):
// fuzz bytes parsed as a llorch.v1.GenerateRequest the way the gRPC server
// parses it, validated, and converted to the worker's ExecuteRequest.
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "llorch/v1/scheduler.pb.h"
#include "llorch/worker/v1/worker.pb.h"
#include "services/scheduler/generate_request.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/fuzz/proto_input.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  llorch::fuzz::QuietProtobuf();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace llorch;
  v1::GenerateRequest request;
  if (!fuzz::ParseRequest(data, size, &request)) return 0;
  const absl::Status status = ValidateGenerateRequest(request);
  if (!status.ok()) {
    LLORCH_FUZZ_CHECK(absl::IsInvalidArgument(status), status.ToString());
    return 0;
  }
  const worker::v1::ExecuteRequest out = ToExecuteRequest(request, "job-1");
  // What the worker gets is what the client asked for.
  LLORCH_FUZZ_CHECK(out.job_id() == "job-1", "job_id");
  // (The oneof's field numbers differ between the two protos.)
  LLORCH_FUZZ_CHECK(out.has_text() == request.has_text() &&
                        out.has_token_ids() == request.has_token_ids() &&
                        out.has_messages() == request.has_messages(),
                    "prompt case");
  LLORCH_FUZZ_CHECK(out.text() == request.text(), "text");
  LLORCH_FUZZ_CHECK(out.token_ids().ids_size() == request.token_ids().ids_size(), "token_ids");
  LLORCH_FUZZ_CHECK(out.messages().messages_size() == request.messages().messages_size(),
                    "messages");
  for (int i = 0; i < out.messages().messages_size(); ++i) {
    LLORCH_FUZZ_CHECK(out.messages().messages(i).content() ==
                          request.messages().messages(i).content(),
                      "message content");
  }
  LLORCH_FUZZ_CHECK(out.max_tokens() == request.max_tokens(), "max_tokens");
  LLORCH_FUZZ_CHECK(out.stop_size() == request.stop_size(), "stop");
  LLORCH_FUZZ_CHECK(out.logprobs() == request.logprobs(), "logprobs");
  LLORCH_FUZZ_CHECK(out.sampling().SerializeAsString() == request.sampling().SerializeAsString(),
                    "sampling");
  return 0;
}
