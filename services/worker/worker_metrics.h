// The worker's Prometheus metrics (docs/metrics.md lists them). Built once
// per process on a registry the Exposer serves; updated from gRPC threads
// (per request) and from the engine thread (per step).
#ifndef LLORCH_SERVICES_WORKER_WORKER_METRICS_H_
#define LLORCH_SERVICES_WORKER_WORKER_METRICS_H_

#include <memory>
#include <string>

#include "common/metrics/registry.h"
#include "worker/engine/engine.h"

namespace llorch {

struct WorkerBuildInfo {
  std::string version;
  std::string model;
  std::string architecture;
  std::string dtype;
  std::string device;
};

class WorkerMetrics {
 public:
  WorkerMetrics(metrics::Registry& registry, const WorkerBuildInfo& info);

  // outcome: "eos", "length", "stop", "cancelled", "deadline_exceeded" or a
  // lower-case gRPC code name for rejected requests ("invalid_argument", ...).
  void CountRequest(const std::string& outcome);
  void SetModelLoadSeconds(double seconds) { model_load_seconds_.Set(seconds); }
  void SetServing(bool serving) { serving_.Set(serving ? 1 : 0); }
  void OnEngineStep(int32_t batch_size, const EngineStats& stats);

  metrics::Counter& prompt_tokens;
  metrics::Counter& generated_tokens;
  metrics::Histogram& time_to_first_token;
  metrics::Histogram& inter_token_latency;
  metrics::Histogram& request_duration;

 private:
  metrics::Family<metrics::Counter>& requests_;
  metrics::Gauge& active_jobs_;
  metrics::Gauge& waiting_jobs_;
  metrics::Gauge& kv_used_bytes_;
  metrics::Gauge& kv_capacity_bytes_;
  metrics::Family<metrics::Gauge>& kv_blocks_;
  metrics::Counter& preemptions_;
  metrics::Counter& prefix_queried_tokens_;
  metrics::Counter& prefix_hit_tokens_;
  EngineStats last_stats_;  // engine thread: the totals already counted
  metrics::Histogram& batch_size_;
  metrics::Gauge& model_load_seconds_;
  metrics::Gauge& serving_;
};

}  // namespace llorch

#endif  // LLORCH_SERVICES_WORKER_WORKER_METRICS_H_
