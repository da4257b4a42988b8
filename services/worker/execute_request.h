// ExecuteRequest (wire) -> a job for the engine. Checks what the wire allows
// but the engine cannot see (the prompt's form, the job id's length); the
// engine checks ranges. Every error is InvalidArgument naming the field.
#ifndef LLORCH_SERVICES_WORKER_EXECUTE_REQUEST_H_
#define LLORCH_SERVICES_WORKER_EXECUTE_REQUEST_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "llorch/worker/v1/worker.pb.h"
#include "worker/engine/job.h"
#include "worker/engine/served_model.h"
#include "worker/tokenizer/tokenizer.h"

namespace llorch {

inline constexpr size_t kMaxJobIdBytes = 256;
inline constexpr int32_t kDefaultMaxTokens = 128;

struct JobRequest {
  std::string job_id;
  std::vector<int32_t> prompt;
  GenerationParams params;
};

// `served` gives the tokenizer and, for chat messages, the chat template.
absl::StatusOr<JobRequest> ToJobRequest(const worker::v1::ExecuteRequest& request,
                                        const ServedModel& served);

worker::v1::FinishReason ToProtoFinishReason(FinishReason reason);

}  // namespace llorch

#endif  // LLORCH_SERVICES_WORKER_EXECUTE_REQUEST_H_
