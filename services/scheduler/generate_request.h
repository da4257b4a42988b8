// GenerateRequest (public wire) checks and its conversion to the worker's
// ExecuteRequest. Checked here, before anything is queued: what needs no
// model (sizes, ranges, UTF-8, the prompt's form). The worker checks what
// does (token ids against the vocabulary, the context length, the chat
// template). Every error is INVALID_ARGUMENT naming the field.
#ifndef LLORCH_SERVICES_SCHEDULER_GENERATE_REQUEST_H_
#define LLORCH_SERVICES_SCHEDULER_GENERATE_REQUEST_H_

#include <string>

#include "absl/status/status.h"
#include "llorch/v1/scheduler.pb.h"
#include "llorch/worker/v1/worker.pb.h"

namespace llorch {

inline constexpr size_t kMaxModelNameBytes = 256;
inline constexpr int kMaxPromptTokenIds = 1 << 20;

absl::Status ValidateGenerateRequest(const v1::GenerateRequest& request);

// The worker's request for the job `job_id`. The messages both APIs share
// have equal fields (a test holds them so), so they are copied as bytes.
worker::v1::ExecuteRequest ToExecuteRequest(const v1::GenerateRequest& request,
                                            const std::string& job_id);

}  // namespace llorch

#endif  // LLORCH_SERVICES_SCHEDULER_GENERATE_REQUEST_H_
