// Name validation from the Prometheus data model
// (https://prometheus.io/docs/concepts/data_model/), done at registration so
// that a bad name fails loudly in the program that made it, not at scrape.
#ifndef LLORCH_COMMON_METRICS_CHECK_NAMES_H_
#define LLORCH_COMMON_METRICS_CHECK_NAMES_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "common/metrics/metric_family.h"

namespace llorch::metrics {

// [a-zA-Z_:][a-zA-Z0-9_:]*, and not starting with "__" (reserved).
absl::Status CheckMetricName(absl::string_view name);

// [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__", and not "le" on a
// histogram (the serializer adds "le" to its buckets).
absl::Status CheckLabelName(absl::string_view name, MetricType type);

// CheckLabelName over every key of `labels`.
absl::Status CheckLabelNames(const Labels& labels, MetricType type);

namespace detail {
// For APIs shaped like prometheus-cpp's that return references and cannot
// return a status (it throws there; this code base does not use exceptions):
// prints `status` with `context` to stderr and aborts unless it is OK.
void DieIfError(const absl::Status& status, absl::string_view context);
}  // namespace detail

}  // namespace llorch::metrics

#endif  // LLORCH_COMMON_METRICS_CHECK_NAMES_H_
