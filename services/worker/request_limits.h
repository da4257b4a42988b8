// Size limits of a request, shared by the worker (ExecuteRequest) and the
// scheduler (GenerateRequest), so one request cannot make a process tokenise,
// render or match without bound (documented in both protos; the prompt's
// token count is bounded by the context length in the engine). Torch-free.
#ifndef LLORCH_SERVICES_WORKER_REQUEST_LIMITS_H_
#define LLORCH_SERVICES_WORKER_REQUEST_LIMITS_H_

#include <cstddef>

namespace llorch {

inline constexpr size_t kMaxJobIdBytes = 256;
inline constexpr size_t kMaxPromptBytes = size_t{1} << 20;  // text; all of messages
inline constexpr int kMaxChatMessages = 1024;
inline constexpr int kMaxStopStrings = 16;
inline constexpr size_t kMaxStopStringBytes = 256;
inline constexpr int kMaxStopTokenIds = 64;
inline constexpr int kMaxLogprobs = 20;

}  // namespace llorch

#endif  // LLORCH_SERVICES_WORKER_REQUEST_LIMITS_H_
