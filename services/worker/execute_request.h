// ExecuteRequest (wire) -> a job for the engine. Checks what the wire allows
// but the engine cannot see (the prompt's form, the sizes below); the engine
// checks ranges. Every error is InvalidArgument naming the field. Absent
// fields take the shared defaults (worker/sampling/generation_defaults.h).
#ifndef LLORCH_SERVICES_WORKER_EXECUTE_REQUEST_H_
#define LLORCH_SERVICES_WORKER_EXECUTE_REQUEST_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "llorch/worker/v1/worker.pb.h"
#include "services/worker/request_limits.h"
#include "worker/engine/job.h"
#include "worker/engine/served_model.h"
#include "worker/tokenizer/tokenizer.h"

namespace llorch {

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
