#ifndef LLORCH_COMMON_METRICS_FAMILY_H_
#define LLORCH_COMMON_METRICS_FAMILY_H_

#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/metrics/check_names.h"
#include "common/metrics/histogram.h"
#include "common/metrics/metric_family.h"

namespace llorch::metrics {

// All metrics of one name and type, one per label combination. Created by a
// Registry through BuildCounter()/BuildGauge()/BuildHistogram().
//
// Add() takes a mutex; keep the returned reference and update it on the hot
// path, where only the metric's atomics are touched.
template <typename T>
class Family : public Collectable {
 public:
  Family(std::string name, std::string help, Labels constant_labels)
      : name_(std::move(name)),
        help_(std::move(help)),
        constant_labels_(std::move(constant_labels)) {}

  // Returns the metric for `labels`, creating it from `args` (for a
  // Histogram: its BucketBoundaries) the first time. Later calls with the
  // same labels return the same instance and ignore `args`, as in
  // prometheus-cpp. The reference stays valid as long as the family (i.e.
  // the Registry). Fails on an invalid label name, a label that repeats a
  // constant label, or (histograms) invalid bucket boundaries.
  template <typename... Args>
  absl::StatusOr<T*> TryAdd(const Labels& labels, Args&&... args) {
    absl::Status status = CheckLabelNames(labels, T::metric_type);
    for (const auto& [label_name, value] : labels) {
      if (status.ok() && constant_labels_.count(label_name) != 0) {
        status = absl::InvalidArgumentError(
            absl::StrCat("label \"", label_name,
                         "\" is already a constant label of the family"));
      }
    }
    if constexpr (std::is_same_v<T, Histogram>) {
      if (status.ok()) status = Histogram::CheckBucketBoundaries(args...);
    }
    if (!status.ok()) {
      return absl::Status(status.code(),
                          absl::StrCat("metric ", name_, ": ", status.message()));
    }
    std::lock_guard<std::mutex> lock(mutex_);
    std::unique_ptr<T>& metric = metrics_[labels];
    if (metric == nullptr) {
      metric = std::make_unique<T>(std::forward<Args>(args)...);
    }
    return metric.get();
  }

  // TryAdd() for labels and arguments that are program constants: aborts
  // with the error message instead of returning it (prometheus-cpp throws).
  template <typename... Args>
  T& Add(const Labels& labels, Args&&... args) {
    absl::StatusOr<T*> metric = TryAdd(labels, std::forward<Args>(args)...);
    detail::DieIfError(metric.status(), "Family::Add");
    return **metric;
  }

  bool Has(const Labels& labels) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return metrics_.count(labels) != 0;
  }

  // Drops `metric` (e.g. a finished model's series); references to it dangle.
  void Remove(T* metric) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = metrics_.begin(); it != metrics_.end(); ++it) {
      if (it->second.get() == metric) {
        metrics_.erase(it);
        return;
      }
    }
  }

  const std::string& GetName() const { return name_; }
  const std::string& GetHelp() const { return help_; }
  const Labels& GetConstantLabels() const { return constant_labels_; }

  std::vector<MetricFamily> Collect() const override {
    MetricFamily family;
    family.name = name_;
    family.help = help_;
    family.type = T::metric_type;
    std::lock_guard<std::mutex> lock(mutex_);
    family.metric.reserve(metrics_.size());
    for (const auto& [labels, metric] : metrics_) {
      ClientMetric collected = metric->Collect();
      Labels all_labels = constant_labels_;
      all_labels.insert(labels.begin(), labels.end());
      for (const auto& [label_name, value] : all_labels) {
        collected.label.push_back({label_name, value});
      }
      family.metric.push_back(std::move(collected));
    }
    return {std::move(family)};
  }

 private:
  const std::string name_;
  const std::string help_;
  const Labels constant_labels_;
  mutable std::mutex mutex_;
  std::map<Labels, std::unique_ptr<T>> metrics_;  // Ordered: stable output.
};

}  // namespace llorch::metrics

#endif  // LLORCH_COMMON_METRICS_FAMILY_H_
