#include "worker/engine/step_planner.h"

#include <algorithm>

namespace llorch {

std::vector<PlannedInput> PlanStep(absl::Span<Job* const> running, int64_t prefill_budget) {
  std::vector<PlannedInput> plan;
  for (size_t i = 0; i < running.size(); ++i) {
    const Job& job = *running[i];
    if (!job.decoding() || job.replaying()) continue;
    plan.push_back({i, job.NextInput(1), job.next_pos(), /*decode=*/true});
  }
  for (size_t i = 0; i < running.size() && prefill_budget > 0; ++i) {
    const Job& job = *running[i];
    if (job.decoding() && !job.replaying()) continue;
    absl::Span<const int32_t> chunk = job.NextInput(prefill_budget);
    if (!job.decoding() &&
        job.next_pos() + static_cast<int64_t>(chunk.size()) < job.prompt_tokens()) {
      chunk = chunk.first(chunk.size() - chunk.size() % 4);
      if (chunk.empty()) break;
    }
    prefill_budget -= static_cast<int64_t>(chunk.size());
    plan.push_back({i, chunk, job.next_pos(), /*decode=*/job.decoding()});
  }
  return plan;
}

size_t PickPreemptionVictim(const std::vector<bool>& preempted) {
  size_t victim = preempted.size() - 1;
  while (victim > 0 && preempted[victim]) --victim;
  return victim;
}

int32_t AdmissionHeadroom(int32_t num_blocks, bool others_running) {
  return others_running ? std::max(1, num_blocks / 100) : 0;
}

}  // namespace llorch
