#ifndef LLORCH_COMMON_METRICS_GAUGE_H_
#define LLORCH_COMMON_METRICS_GAUGE_H_

#include <atomic>

#include "common/metrics/metric_family.h"

namespace llorch::metrics {

namespace detail {
// std::atomic<double>::fetch_add is C++20; a CAS loop is the C++17 way and
// stays lock-free on x86-64.
inline void AtomicAdd(std::atomic<double>& target, double delta) {
  double current = target.load(std::memory_order_relaxed);
  while (!target.compare_exchange_weak(current, current + delta,
                                       std::memory_order_relaxed)) {
  }
}
}  // namespace detail

// A value that can go up and down (queue depth, KV-cache blocks in use).
// Lock-free and safe to use from any thread.
class Gauge {
 public:
  static constexpr MetricType metric_type = MetricType::kGauge;

  Gauge() = default;
  explicit Gauge(double value) : value_(value) {}

  void Increment(double delta = 1.0) { detail::AtomicAdd(value_, delta); }
  void Decrement(double delta = 1.0) { detail::AtomicAdd(value_, -delta); }
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

  ClientMetric Collect() const {
    ClientMetric metric;
    metric.gauge.value = Value();
    return metric;
  }

 private:
  std::atomic<double> value_{0.0};
};

}  // namespace llorch::metrics

#endif  // LLORCH_COMMON_METRICS_GAUGE_H_
