#include "services/scheduler/scheduler_metrics.h"

#include "absl/strings/str_cat.h"

namespace llorch {
namespace {

using metrics::BuildCounter;
using metrics::BuildGauge;
using metrics::BuildHistogram;
using scheduler::WorkerState;
using scheduler::WorkerStateName;

// Seconds, from 1 ms to ~33 s.
metrics::Histogram::BucketBoundaries LatencyBuckets() {
  return metrics::ExponentialBuckets(0.001, 2, 16);
}

}  // namespace

SchedulerMetrics::SchedulerMetrics(metrics::Registry& registry, const std::string& version,
                                   std::function<void(const std::string&)> log)
    : time_to_first_token(BuildHistogram()
                              .Name("llorch_scheduler_time_to_first_token_seconds")
                              .Help("From receiving a Generate call to relaying its first token.")
                              .Register(registry)
                              .Add({}, LatencyBuckets())),
      request_duration(BuildHistogram()
                           .Name("llorch_scheduler_request_duration_seconds")
                           .Help("From receiving a Generate call to its end (end to end).")
                           .Register(registry)
                           .Add({}, LatencyBuckets())),
      relayed_tokens(BuildCounter()
                         .Name("llorch_scheduler_relayed_tokens_total")
                         .Help("Tokens relayed from workers to clients.")
                         .Register(registry)
                         .Add({})),
      log_(std::move(log)),
      requests_(BuildCounter()
                    .Name("llorch_scheduler_requests_total")
                    .Help("Generate calls by model and outcome: finish reason, or the error code.")
                    .Register(registry)),
      queue_depth_(BuildGauge()
                       .Name("llorch_scheduler_queue_depth")
                       .Help("Jobs waiting in the scheduler for a worker, by model.")
                       .Register(registry)),
      queue_wait_(BuildHistogram()
                      .Name("llorch_scheduler_queue_wait_seconds")
                      .Help("Time jobs waited in the scheduler's queue before dispatch.")
                      .Register(registry)
                      .Add({}, LatencyBuckets())),
      workers_(BuildGauge()
                   .Name("llorch_scheduler_workers")
                   .Help("Known workers by state (unknown: not probed yet).")
                   .Register(registry)),
      dispatches_(BuildCounter()
                      .Name("llorch_scheduler_dispatches_total")
                      .Help("Jobs sent to each worker (retries included).")
                      .Register(registry)),
      retries_(BuildCounter()
                   .Name("llorch_scheduler_retries_total")
                   .Help("Jobs moved to another worker after theirs failed before the first token.")
                   .Register(registry)
                   .Add({})),
      prefix_placements_(BuildCounter()
                             .Name("llorch_scheduler_prefix_placements_total")
                             .Help("Jobs placed on a worker other than the least loaded one "
                                   "because it held more of the prompt (--placement "
                                   "cache_aware).")
                             .Register(registry)
                             .Add({})),
      expected_cached_tokens_(BuildCounter()
                                  .Name("llorch_scheduler_expected_cached_tokens_total")
                                  .Help("Prompt tokens the chosen workers said they held in "
                                        "their prefix caches when the jobs were placed.")
                                  .Register(registry)
                                  .Add({})),
      prefix_probe_seconds_(BuildHistogram()
                                .Name("llorch_scheduler_prefix_probe_seconds")
                                .Help("From a job's arrival to the last MatchPrefix answer of "
                                      "the workers asked about it.")
                                .Register(registry)
                                .Add({}, LatencyBuckets())),
      prefix_probe_failures_(BuildCounter()
                                 .Name("llorch_scheduler_prefix_probe_failures_total")
                                 .Help("MatchPrefix calls that failed or timed out "
                                       "(--prefix_probe_timeout); the job was placed as if "
                                       "that worker held nothing.")
                                 .Register(registry)
                                 .Add({})),
      serving_(BuildGauge()
                   .Name("llorch_scheduler_serving")
                   .Help("1 while the scheduler accepts Generate calls.")
                   .Register(registry)
                   .Add({})) {
  BuildGauge()
      .Name("llorch_scheduler_build_info")
      .Help("Always 1; the label gives the version.")
      .Register(registry)
      .Add({{"version", version}})
      .Set(1);
  for (WorkerState state : {WorkerState::kUnknown, WorkerState::kUp, WorkerState::kDown}) {
    workers_.Add({{"state", WorkerStateName(state)}});
  }
}

void SchedulerMetrics::CountRequest(const std::string& model, const std::string& outcome) {
  requests_.Add({{"model", model}, {"outcome", outcome}}).Increment();
}

void SchedulerMetrics::RecountStates() {
  std::map<WorkerState, int> counts;
  for (const auto& [address, state] : states_) ++counts[state];
  for (WorkerState state : {WorkerState::kUnknown, WorkerState::kUp, WorkerState::kDown}) {
    workers_.Add({{"state", WorkerStateName(state)}}).Set(counts[state]);
  }
}

void SchedulerMetrics::OnWorkerState(const scheduler::WorkerRecord& worker, WorkerState before) {
  states_[worker.address] = worker.state;
  RecountStates();
  if (worker.state == WorkerState::kUp) {
    log_(absl::StrCat("worker ", worker.address, " up (model ", worker.model(), ")"));
  } else if (worker.state == WorkerState::kDown) {
    log_(absl::StrCat("worker ", worker.address, " down: ", worker.last_error));
  }
}

void SchedulerMetrics::OnWorkerAdded(const scheduler::WorkerRecord& worker) {
  states_[worker.address] = worker.state;
  RecountStates();
  log_(absl::StrCat("worker ", worker.address, " added (",
                    scheduler::WorkerSourceName(worker.source),
                    worker.dns_name.empty() ? "" : absl::StrCat(" ", worker.dns_name), ")"));
}

void SchedulerMetrics::OnWorkerRemoved(const std::string& address) {
  states_.erase(address);
  RecountStates();
  log_(absl::StrCat("worker ", address, " removed"));
}

void SchedulerMetrics::OnQueueDepth(const std::string& model, size_t depth) {
  queue_depth_.Add({{"model", model}}).Set(static_cast<double>(depth));
}

void SchedulerMetrics::OnDispatch(const std::string& /*model*/,
                                  const scheduler::Placement& placement, double queue_seconds) {
  dispatches_.Add({{"worker", placement.address}}).Increment();
  queue_wait_.Observe(queue_seconds);
  if (placement.by_prefix) prefix_placements_.Increment();
  expected_cached_tokens_.Increment(placement.cached_tokens);
}

void SchedulerMetrics::OnPrefixProbes(const std::string& /*model*/, double seconds, int failed) {
  prefix_probe_seconds_.Observe(seconds);
  prefix_probe_failures_.Increment(failed);
}

void SchedulerMetrics::OnRetry(const std::string& model, const std::string& address,
                               const absl::Status& why) {
  retries_.Increment();
  log_(absl::StrCat("retrying a job of ", model, " elsewhere: ", address, " failed: ",
                    why.message()));
}

}  // namespace llorch
