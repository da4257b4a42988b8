// The scheduling policy of one engine step (vLLM's scheduler, TGI's queue
// policy): which jobs' tokens go into the next forward, whom to preempt when
// KV blocks run out, and how much room admission leaves. Pure decisions over
// the jobs' states; the engine applies them, the BlockManager owns the
// blocks, the ModelRunner runs the forward.
#ifndef LLORCH_WORKER_ENGINE_STEP_PLANNER_H_
#define LLORCH_WORKER_ENGINE_STEP_PLANNER_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "worker/engine/job.h"

namespace llorch {

// One job's input to the next forward.
struct PlannedInput {
  size_t job = 0;  // index into the running jobs given to PlanStep
  absl::Span<const int32_t> tokens;
  int64_t pos = 0;
  bool decode = false;  // generated tokens (ForwardItem::decode)
};

// Every decoding job that has caught up gets its one next token, then
// prompt chunks and recomputed generated tokens (preempted jobs) share
// `prefill_budget` tokens, oldest job first. A prompt chunk that stops short
// of its prompt's end ends on a multiple of 4 positions (chunks start on
// one: at 0 or after a cached prefix of whole blocks), so a row's grouping in
// Q4_K products depends on the prompt alone, never on the budget left.
std::vector<PlannedInput> PlanStep(absl::Span<Job* const> running, int64_t prefill_budget);

// Which running job gives its KV blocks back when the pool is dry: the most
// recently admitted (vLLM's recompute policy), i.e. the last of `running`
// (in admission order) not yet preempted (`preempted[i]`).
size_t PickPreemptionVictim(const std::vector<bool>& preempted);

// Free blocks admission keeps beside running jobs so that they can grow a
// while before anyone is preempted (vLLM's watermark: 1% of the pool, at
// least one block); none for a job that would run alone.
int32_t AdmissionHeadroom(int32_t num_blocks, bool others_running);

}  // namespace llorch

#endif  // LLORCH_WORKER_ENGINE_STEP_PLANNER_H_
