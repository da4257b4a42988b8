#include "common/metrics/registry.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace llorch::metrics {
namespace {

// The sample names a family puts into the exposition; two families clash
// when these intersect (e.g. histogram "x" and counter "x_count").
std::vector<std::string> ExposedNames(const std::string& name,
                                      MetricType type) {
  if (type != MetricType::kHistogram) return {name};
  return {name, name + "_bucket", name + "_sum", name + "_count"};
}

}  // namespace

template <typename T>
absl::StatusOr<Family<T>*> Registry::Add(const std::string& name,
                                         const std::string& help,
                                         const Labels& constant_labels) {
  absl::Status status = CheckMetricName(name);
  if (status.ok()) status = CheckLabelNames(constant_labels, T::metric_type);
  if (!status.ok()) {
    return absl::Status(status.code(),
                        absl::StrCat("metric ", name, ": ", status.message()));
  }
  const std::vector<std::string> new_names = ExposedNames(name, T::metric_type);
  std::lock_guard<std::mutex> lock(mutex_);
  for (Entry& entry : families_) {
    if (entry.name == name && entry.type == T::metric_type &&
        entry.constant_labels == constant_labels) {
      return static_cast<Family<T>*>(entry.family.get());
    }
    for (const std::string& taken : ExposedNames(entry.name, entry.type)) {
      if (std::find(new_names.begin(), new_names.end(), taken) !=
          new_names.end()) {
        return absl::AlreadyExistsError(absl::StrCat(
            "metric ", name, ": clashes with the registered family ",
            entry.name, " (name, type or constant labels differ)"));
      }
    }
  }
  auto family = std::make_unique<Family<T>>(name, help, constant_labels);
  Family<T>* result = family.get();
  families_.push_back(
      Entry{T::metric_type, std::move(family), name, constant_labels});
  return result;
}

template absl::StatusOr<Family<Counter>*> Registry::Add<Counter>(
    const std::string&, const std::string&, const Labels&);
template absl::StatusOr<Family<Gauge>*> Registry::Add<Gauge>(
    const std::string&, const std::string&, const Labels&);
template absl::StatusOr<Family<Histogram>*> Registry::Add<Histogram>(
    const std::string&, const std::string&, const Labels&);

std::vector<MetricFamily> Registry::Collect() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<MetricFamily> result;
  for (const Entry& entry : families_) {
    for (MetricFamily& family : entry.family->Collect()) {
      result.push_back(std::move(family));
    }
  }
  return result;
}

}  // namespace llorch::metrics
