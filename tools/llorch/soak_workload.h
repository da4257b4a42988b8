// What `llorch soak` sends and how it judges each answer. Request `index` of
// a run with `seed` is always the same request: a mix of prompt kinds and
// lengths, sampling settings, stop strings, log-probs, and what the client
// does to it (reads it to the end, cancels it with the Cancel RPC, drops it,
// or gives it a short deadline). The verdict says whether the request ended
// as its action allows ("ok", "cancelled", "disconnected", "deadline"), with
// another clear status (a failure, counted by code), or not at all: "lost"
// (a hang, a stream without its Finished, token counts that disagree).
#ifndef LLORCH_TOOLS_LLORCH_SOAK_WORKLOAD_H_
#define LLORCH_TOOLS_LLORCH_SOAK_WORKLOAD_H_

#include <cstdint>
#include <optional>
#include <string>

#include <grpcpp/grpcpp.h>

#include "llorch/v1/scheduler.pb.h"

namespace llorch {
namespace tool {

enum class SoakAction {
  kComplete,    // read to the end
  kCancelRpc,   // Cancel(job_id) after `act_after_tokens` tokens
  kDisconnect,  // ClientContext::TryCancel after `act_after_tokens` tokens
  kDeadline,    // a deadline of `deadline_ms`
};

struct SoakCase {
  v1::GenerateRequest request;  // job_id "soak-SEED-INDEX"
  SoakAction action = SoakAction::kComplete;
  int act_after_tokens = 0;
  int deadline_ms = 0;
};

struct SoakMix {
  std::string model;
  uint64_t seed = 1;
  int max_tokens = 32;         // the largest max_tokens
  int max_prompt_words = 300;  // the longest text prompt (models with a short context)
};

// The mix, in percent of requests: actions 70 complete, 10 cancel, 10 drop,
// 10 deadline; prompts 60 text (1, 8, 32, 128 or 300 words, at most
// max_prompt_words), 20 chat (1 to 3 turns), 20 token ids (1 to 64 ids from 3
// to 250, inside every vocabulary); max_tokens 1 to mix.max_tokens.
SoakCase MakeSoakCase(const SoakMix& mix, int64_t index);

// Warm-up request `index` (job_id "soak-SEED-warmup-INDEX"): the mix's
// largest shape, read to the end: the longest text prompt (its own words, so
// no prefix-cache hit), mix.max_tokens past any end-of-sequence, sampled with
// top-p and log-probs. Sent before the counted requests, `concurrency` at a
// time, so that what a process sizes once to the largest step it has seen
// (per-thread buffers, a prepared KV as long as the longest context) is sized
// before memory is first read, not counted as growth per request.
SoakCase MakeWarmUpCase(const SoakMix& mix, int64_t index);

// What the client saw.
struct SoakOutcome {
  grpc::StatusCode code = grpc::StatusCode::OK;
  std::string message;
  bool started = false;
  int tokens = 0;                         // Token events read
  std::optional<v1::Finished> finished;   // the Finished event, if one came
  bool safety_deadline_hit = false;       // the client's own limit for a hang
  double seconds = 0;                     // request sent -> status received
};

struct SoakVerdict {
  enum class Kind { kExpected, kFailure, kLost };
  Kind kind = Kind::kExpected;
  std::string label;  // "ok", "cancelled", ...; the code name; or why lost
};

SoakVerdict JudgeSoak(const SoakCase& soak_case, const SoakOutcome& outcome);

const char* SoakActionName(SoakAction action);

}  // namespace tool
}  // namespace llorch

#endif  // LLORCH_TOOLS_LLORCH_SOAK_WORKLOAD_H_
