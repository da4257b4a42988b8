#include "common/metrics/histogram.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/metrics/check_names.h"
#include "common/metrics/gauge.h"

namespace llorch::metrics {

absl::Status Histogram::CheckBucketBoundaries(
    const BucketBoundaries& boundaries) {
  for (size_t i = 0; i < boundaries.size(); ++i) {
    const double bound = boundaries[i];
    if (std::isnan(bound) || bound == -std::numeric_limits<double>::infinity()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "histogram bucket boundary ", i, " is ", bound));
    }
    if (std::isinf(bound) && i + 1 != boundaries.size()) {
      return absl::InvalidArgumentError(
          "histogram bucket boundary +Inf is allowed only as the last one");
    }
    if (i > 0 && !(boundaries[i - 1] < bound)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "histogram bucket boundaries must increase strictly, but boundary ",
          i, " (", bound, ") follows ", boundaries[i - 1]));
    }
  }
  return absl::OkStatus();
}

Histogram::Histogram(const BucketBoundaries& boundaries)
    : boundaries_(boundaries) {
  detail::DieIfError(CheckBucketBoundaries(boundaries_), "Histogram");
  if (!boundaries_.empty() && std::isinf(boundaries_.back())) {
    boundaries_.pop_back();
  }
  bucket_counts_ =
      std::make_unique<std::atomic<std::uint64_t>[]>(boundaries_.size() + 1);
  for (size_t i = 0; i <= boundaries_.size(); ++i) bucket_counts_[i] = 0;
}

void Histogram::Observe(double value) {
  // First boundary >= value; NaN compares false everywhere, so route it to
  // +Inf explicitly rather than let lower_bound pick bucket 0.
  const size_t bucket =
      std::isnan(value)
          ? boundaries_.size()
          : static_cast<size_t>(
                std::lower_bound(boundaries_.begin(), boundaries_.end(),
                                 value) -
                boundaries_.begin());
  bucket_counts_[bucket].fetch_add(1, std::memory_order_relaxed);
  detail::AtomicAdd(sum_, value);
}

ClientMetric Histogram::Collect() const {
  ClientMetric metric;
  std::uint64_t cumulative = 0;
  metric.histogram.bucket.reserve(boundaries_.size() + 1);
  for (size_t i = 0; i <= boundaries_.size(); ++i) {
    cumulative += bucket_counts_[i].load(std::memory_order_relaxed);
    ClientMetric::Bucket bucket;
    bucket.cumulative_count = cumulative;
    bucket.upper_bound = i < boundaries_.size()
                             ? boundaries_[i]
                             : std::numeric_limits<double>::infinity();
    metric.histogram.bucket.push_back(bucket);
  }
  metric.histogram.sample_count = cumulative;
  metric.histogram.sample_sum = sum_.load(std::memory_order_relaxed);
  return metric;
}

Histogram::BucketBoundaries ExponentialBuckets(double start, double factor,
                                               int count) {
  Histogram::BucketBoundaries boundaries;
  double bound = start;
  for (int i = 0; i < count; ++i, bound *= factor) boundaries.push_back(bound);
  return boundaries;
}

Histogram::BucketBoundaries LinearBuckets(double start, double width,
                                          int count) {
  Histogram::BucketBoundaries boundaries;
  for (int i = 0; i < count; ++i) boundaries.push_back(start + i * width);
  return boundaries;
}

}  // namespace llorch::metrics
