#ifndef LLORCH_COMMON_METRICS_COUNTER_H_
#define LLORCH_COMMON_METRICS_COUNTER_H_

#include <atomic>

#include "common/metrics/gauge.h"
#include "common/metrics/metric_family.h"

namespace llorch::metrics {

// A monotonically increasing total (requests served, tokens generated).
// Lock-free and safe to use from any thread.
class Counter {
 public:
  static constexpr MetricType metric_type = MetricType::kCounter;

  void Increment() { Increment(1.0); }
  // Negative or NaN deltas are ignored, as prometheus-cpp does: a counter
  // that went down would read as a process restart to rate().
  void Increment(double delta) {
    if (!(delta >= 0.0)) return;
    detail::AtomicAdd(value_, delta);
  }
  double Value() const { return value_.load(std::memory_order_relaxed); }

  ClientMetric Collect() const {
    ClientMetric metric;
    metric.counter.value = Value();
    return metric;
  }

 private:
  std::atomic<double> value_{0.0};
};

}  // namespace llorch::metrics

#endif  // LLORCH_COMMON_METRICS_COUNTER_H_
