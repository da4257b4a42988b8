// Plain data that a registry's Collect() produces and the text serializer
// consumes. Mirrors prometheus-cpp's client_metric.h / metric_family.h /
// collectable.h so that swapping in the real library touches only this folder.
#ifndef LLORCH_COMMON_METRICS_METRIC_FAMILY_H_
#define LLORCH_COMMON_METRICS_METRIC_FAMILY_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace llorch::metrics {

// Label name -> value. Ordered so that exposition output is deterministic.
using Labels = std::map<std::string, std::string>;

enum class MetricType { kCounter, kGauge, kHistogram };

// One sample set (one label combination) of a family, as seen at Collect().
struct ClientMetric {
  struct Label {
    std::string name;
    std::string value;
  };
  std::vector<Label> label;  // Constant labels merged with the metric's own.

  struct Counter {
    double value = 0.0;
  } counter;

  struct Gauge {
    double value = 0.0;
  } gauge;

  struct Bucket {
    std::uint64_t cumulative_count = 0;
    double upper_bound = 0.0;  // The last bucket is +Inf.
  };
  struct Histogram {
    std::uint64_t sample_count = 0;
    double sample_sum = 0.0;
    std::vector<Bucket> bucket;
  } histogram;
};

struct MetricFamily {
  std::string name;
  std::string help;
  MetricType type = MetricType::kGauge;
  std::vector<ClientMetric> metric;
};

// Anything an Exposer can scrape (a Registry, or a custom collector).
class Collectable {
 public:
  virtual ~Collectable() = default;
  virtual std::vector<MetricFamily> Collect() const = 0;
};

}  // namespace llorch::metrics

#endif  // LLORCH_COMMON_METRICS_METRIC_FAMILY_H_
