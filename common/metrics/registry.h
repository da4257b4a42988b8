// Registry and builders in prometheus-cpp's shape:
//
//   auto registry = std::make_shared<llorch::metrics::Registry>();
//   auto& requests = llorch::metrics::BuildCounter()
//                        .Name("llorch_requests_total")
//                        .Help("Requests received.")
//                        .Labels({{"model", "smollm2"}})
//                        .Register(*registry);
//   llorch::metrics::Counter& ok = requests.Add({{"status", "ok"}});
//   ok.Increment();  // Hot path: one atomic operation.
#ifndef LLORCH_COMMON_METRICS_REGISTRY_H_
#define LLORCH_COMMON_METRICS_REGISTRY_H_

#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/metrics/check_names.h"
#include "common/metrics/counter.h"
#include "common/metrics/family.h"
#include "common/metrics/gauge.h"
#include "common/metrics/histogram.h"
#include "common/metrics/metric_family.h"

namespace llorch::metrics {

namespace detail {
template <typename T>
class Builder;
}  // namespace detail

// Owns metric families; families (and the metrics in them) live as long as
// the registry. Collect() snapshots them in registration order.
class Registry : public Collectable {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  std::vector<MetricFamily> Collect() const override;

 private:
  template <typename T>
  friend class detail::Builder;

  // Registering an existing name again with the same type and constant
  // labels returns the existing family (prometheus-cpp's default "Merge"
  // behaviour); any other clash, including with a histogram's derived
  // _bucket/_sum/_count names, is an error.
  template <typename T>
  absl::StatusOr<Family<T>*> Add(const std::string& name,
                                 const std::string& help,
                                 const Labels& constant_labels);

  struct Entry {
    MetricType type;
    std::unique_ptr<Collectable> family;  // A Family<T> for T of `type`.
    std::string name;
    Labels constant_labels;
  };
  mutable std::mutex mutex_;
  std::vector<Entry> families_;
};

namespace detail {

template <typename T>
class Builder {
 public:
  Builder& Name(const std::string& name) {
    name_ = name;
    return *this;
  }
  // Free text; the serializer escapes backslashes and newlines.
  Builder& Help(const std::string& help) {
    help_ = help;
    return *this;
  }
  // Constant labels carried by every metric of the family.
  Builder& Labels(const ::llorch::metrics::Labels& labels) {
    labels_ = labels;
    return *this;
  }

  // Fails with InvalidArgument on an invalid metric or label name and with
  // AlreadyExists when the name is taken by an incompatible family.
  absl::StatusOr<Family<T>*> TryRegister(Registry& registry) const {
    return registry.Add<T>(name_, help_, labels_);
  }
  // TryRegister() for names that are program constants: aborts with the
  // error message instead of returning it (prometheus-cpp throws).
  Family<T>& Register(Registry& registry) const {
    absl::StatusOr<Family<T>*> family = TryRegister(registry);
    DieIfError(family.status(), "Register");
    return **family;
  }

 private:
  ::llorch::metrics::Labels labels_;
  std::string name_;
  std::string help_;
};

}  // namespace detail

inline detail::Builder<Counter> BuildCounter() { return {}; }
inline detail::Builder<Gauge> BuildGauge() { return {}; }
inline detail::Builder<Histogram> BuildHistogram() { return {}; }

}  // namespace llorch::metrics

#endif  // LLORCH_COMMON_METRICS_REGISTRY_H_
