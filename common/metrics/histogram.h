#ifndef LLORCH_COMMON_METRICS_HISTOGRAM_H_
#define LLORCH_COMMON_METRICS_HISTOGRAM_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "common/metrics/metric_family.h"

namespace llorch::metrics {

// Counts observations into buckets (latencies, batch sizes). Observe() is
// lock-free: one atomic increment on the bucket the value falls in plus one
// atomic add on the sum; cumulative counts are built at Collect() time.
class Histogram {
 public:
  using BucketBoundaries = std::vector<double>;
  static constexpr MetricType metric_type = MetricType::kHistogram;

  // `boundaries` are the upper bounds ("le") of the buckets; the +Inf bucket
  // is implicit (a trailing +Inf is accepted and dropped). Aborts with a
  // message unless CheckBucketBoundaries(boundaries) is OK: boundaries are
  // program constants, like prometheus-cpp (which throws) treats them.
  explicit Histogram(const BucketBoundaries& boundaries);

  // Strictly increasing, no NaN, no -Inf, and +Inf only as the last one.
  static absl::Status CheckBucketBoundaries(const BucketBoundaries& boundaries);

  // A value equal to a boundary counts in that boundary's bucket (le is <=).
  // NaN counts in the +Inf bucket only (and makes the sum NaN).
  void Observe(double value);

  // Consistent within itself: _count equals the +Inf bucket. The sum is read
  // separately, so under concurrent Observe() it may lag or lead the counts
  // by the observations in flight (the same trade-off as prometheus-cpp).
  ClientMetric Collect() const;

 private:
  BucketBoundaries boundaries_;  // Finite, strictly increasing.
  // Non-cumulative count per bucket; index boundaries_.size() is +Inf.
  std::unique_ptr<std::atomic<std::uint64_t>[]> bucket_counts_;
  std::atomic<double> sum_{0.0};
};

// `count` boundaries start, start*factor, start*factor^2, ... (start > 0,
// factor > 1), the usual shape for latencies.
Histogram::BucketBoundaries ExponentialBuckets(double start, double factor,
                                               int count);
// `count` boundaries start, start+width, ... (width > 0).
Histogram::BucketBoundaries LinearBuckets(double start, double width,
                                          int count);

}  // namespace llorch::metrics

#endif  // LLORCH_COMMON_METRICS_HISTOGRAM_H_
