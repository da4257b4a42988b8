// The scheduler's Prometheus metrics (docs/metrics.md lists them) and its
// log of worker state changes: a CoreObserver on the core thread, plus
// per-request updates from the Generate calls.
#ifndef LLORCH_SERVICES_SCHEDULER_SCHEDULER_METRICS_H_
#define LLORCH_SERVICES_SCHEDULER_SCHEDULER_METRICS_H_

#include <functional>
#include <map>
#include <mutex>
#include <string>

#include "common/metrics/registry.h"
#include "scheduler/scheduler_core.h"

namespace llorch {

class SchedulerMetrics final : public scheduler::CoreObserver {
 public:
  // `log` gets one line per worker event (added, up, down, removed).
  SchedulerMetrics(metrics::Registry& registry, const std::string& version,
                   std::function<void(const std::string&)> log);

  // outcome: "eos", "length", "stop", "cancelled" or a lower-case gRPC code
  // name. `model` is "" for requests naming no served model (clients choose
  // names: labels stay bounded).
  void CountRequest(const std::string& model, const std::string& outcome);
  void SetServing(bool serving) { serving_.Set(serving ? 1 : 0); }

  metrics::Histogram& time_to_first_token;
  metrics::Histogram& request_duration;
  metrics::Counter& relayed_tokens;

  // CoreObserver.
  void OnWorkerState(const scheduler::WorkerRecord& worker,
                     scheduler::WorkerState before) override;
  void OnWorkerAdded(const scheduler::WorkerRecord& worker) override;
  void OnWorkerRemoved(const std::string& address) override;
  void OnQueueDepth(const std::string& model, size_t depth) override;
  void OnDispatch(const std::string& model, const scheduler::Placement& placement,
                  double queue_seconds) override;
  void OnPrefixProbes(const std::string& model, double seconds, int failed) override;
  void OnRetry(const std::string& model, const std::string& address,
               const absl::Status& why) override;

 private:
  void RecountStates();

  std::function<void(const std::string&)> log_;
  metrics::Family<metrics::Counter>& requests_;
  metrics::Family<metrics::Gauge>& queue_depth_;
  metrics::Histogram& queue_wait_;
  metrics::Family<metrics::Gauge>& workers_;
  metrics::Family<metrics::Counter>& dispatches_;
  metrics::Counter& retries_;
  metrics::Counter& prefix_placements_;
  metrics::Counter& expected_cached_tokens_;
  metrics::Histogram& prefix_probe_seconds_;
  metrics::Counter& prefix_probe_failures_;
  metrics::Gauge& serving_;
  // Core thread only: the state of every worker, for the workers gauge.
  std::map<std::string, scheduler::WorkerState> states_;
};

}  // namespace llorch

#endif  // LLORCH_SERVICES_SCHEDULER_SCHEDULER_METRICS_H_
