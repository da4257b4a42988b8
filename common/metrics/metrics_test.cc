#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "common/metrics/registry.h"
#include "gtest/gtest.h"

namespace llorch::metrics {
namespace {

TEST(CounterTest, IncrementsAndIgnoresNegativeOrNaN) {
  Counter counter;
  EXPECT_EQ(counter.Value(), 0.0);
  counter.Increment();
  counter.Increment(2.5);
  counter.Increment(-1.0);
  counter.Increment(std::nan(""));
  EXPECT_EQ(counter.Value(), 3.5);
  EXPECT_EQ(counter.Collect().counter.value, 3.5);
}

TEST(GaugeTest, SetIncrementDecrement) {
  Gauge gauge;
  gauge.Set(10);
  gauge.Increment();
  gauge.Increment(4);
  gauge.Decrement();
  gauge.Decrement(20);
  EXPECT_EQ(gauge.Value(), -6.0);
  EXPECT_EQ(gauge.Collect().gauge.value, -6.0);
}

// Reference: count the observations <= each bound directly.
TEST(HistogramTest, BucketsAreCumulativeWithInclusiveUpperBounds) {
  const Histogram::BucketBoundaries bounds = {0.1, 0.5, 1, 5};
  Histogram histogram(bounds);
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> dist(-1.0, 8.0);
  // Values exactly on the boundaries check the "le" (<=) semantics.
  std::vector<double> values = {0.1, 0.5, 1, 5, -3};
  for (int i = 0; i < 1000; ++i) values.push_back(dist(rng));
  for (double value : values) histogram.Observe(value);

  const ClientMetric::Histogram collected = histogram.Collect().histogram;
  ASSERT_EQ(collected.bucket.size(), bounds.size() + 1);
  for (size_t i = 0; i < bounds.size(); ++i) {
    EXPECT_EQ(collected.bucket[i].upper_bound, bounds[i]);
    EXPECT_EQ(collected.bucket[i].cumulative_count,
              std::count_if(values.begin(), values.end(),
                            [&](double v) { return v <= bounds[i]; }))
        << "bucket le=" << bounds[i];
  }
  EXPECT_TRUE(std::isinf(collected.bucket.back().upper_bound));
  EXPECT_EQ(collected.bucket.back().cumulative_count, values.size());
  EXPECT_EQ(collected.sample_count, values.size());
  EXPECT_NEAR(collected.sample_sum,
              std::accumulate(values.begin(), values.end(), 0.0), 1e-9);
}

TEST(HistogramTest, NaNGoesToInfBucketOnlyAndTrailingInfIsImplicit) {
  Histogram histogram({1, 2, std::numeric_limits<double>::infinity()});
  histogram.Observe(std::nan(""));
  const ClientMetric::Histogram collected = histogram.Collect().histogram;
  ASSERT_EQ(collected.bucket.size(), 3u);  // 1, 2, +Inf: no duplicate +Inf.
  EXPECT_EQ(collected.bucket[0].cumulative_count, 0u);
  EXPECT_EQ(collected.bucket[1].cumulative_count, 0u);
  EXPECT_EQ(collected.bucket[2].cumulative_count, 1u);
  EXPECT_TRUE(std::isnan(collected.sample_sum));
}

TEST(HistogramTest, InvalidBoundariesAreRejected) {
  const double inf = std::numeric_limits<double>::infinity();
  for (const Histogram::BucketBoundaries& bad :
       std::vector<Histogram::BucketBoundaries>{
           {1, 1}, {2, 1}, {std::nan("")}, {-inf, 1}, {1, inf, 2}}) {
    EXPECT_EQ(Histogram::CheckBucketBoundaries(bad).code(),
              absl::StatusCode::kInvalidArgument);
  }
  EXPECT_TRUE(Histogram::CheckBucketBoundaries({}).ok());
  EXPECT_TRUE(Histogram::CheckBucketBoundaries({-1, 0, 1, inf}).ok());
  EXPECT_DEATH(Histogram({3, 2}), "strictly");
}

TEST(HistogramTest, BucketHelpers) {
  const Histogram::BucketBoundaries exponential = ExponentialBuckets(1, 2, 4);
  const Histogram::BucketBoundaries linear = LinearBuckets(0, 0.5, 3);
  EXPECT_EQ(exponential, (Histogram::BucketBoundaries{1, 2, 4, 8}));
  EXPECT_EQ(linear, (Histogram::BucketBoundaries{0, 0.5, 1}));
}

TEST(RegistryTest, InvalidMetricNamesAreRejected) {
  Registry registry;
  for (const char* bad : {"", "1abc", "a-b", "a b", "__reserved", "caf\xc3\xa9",
                          "a{b}"}) {
    absl::StatusOr<Family<Counter>*> family =
        BuildCounter().Name(bad).TryRegister(registry);
    EXPECT_EQ(family.status().code(), absl::StatusCode::kInvalidArgument)
        << "name \"" << bad << "\"";
  }
  for (const char* good : {"a", "_a", "a:b", "ns:sub_system_total9"}) {
    EXPECT_TRUE(BuildCounter().Name(good).TryRegister(registry).ok()) << good;
  }
  EXPECT_DEATH(BuildGauge().Name("bad-name").Register(registry),
               "bad-name.*invalid character");
}

TEST(RegistryTest, InvalidLabelNamesAreRejected) {
  Registry registry;
  for (const char* bad : {"", "1a", "a:b", "a-b", "__name__"}) {
    EXPECT_EQ(BuildGauge()
                  .Name("g")
                  .Labels({{bad, "v"}})
                  .TryRegister(registry)
                  .status()
                  .code(),
              absl::StatusCode::kInvalidArgument)
        << "label \"" << bad << "\"";
  }
  // "le" is fine on a gauge but reserved on a histogram.
  EXPECT_TRUE(
      BuildGauge().Name("g_le").Labels({{"le", "v"}}).TryRegister(registry).ok());
  EXPECT_FALSE(BuildHistogram()
                   .Name("h_le")
                   .Labels({{"le", "v"}})
                   .TryRegister(registry)
                   .ok());

  Family<Histogram>& histogram = BuildHistogram().Name("h").Register(registry);
  EXPECT_FALSE(histogram.TryAdd({{"le", "1"}}, Histogram::BucketBoundaries{1})
                   .ok());
  EXPECT_FALSE(histogram.TryAdd({{"ok", "1"}}, Histogram::BucketBoundaries{2, 1})
                   .ok());
  Family<Counter>& counter =
      BuildCounter().Name("c").Labels({{"role", "worker"}}).Register(registry);
  EXPECT_FALSE(counter.TryAdd({{"role", "other"}}).ok());
  EXPECT_DEATH(counter.Add({{"bad-label", "x"}}), "bad-label");
}

TEST(RegistryTest, SameNameAndTypeMergesOtherClashesFail) {
  Registry registry;
  Family<Counter>& first = BuildCounter().Name("x_total").Register(registry);
  EXPECT_EQ(&BuildCounter().Name("x_total").Register(registry), &first);
  EXPECT_EQ(BuildGauge().Name("x_total").TryRegister(registry).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(BuildCounter()
                .Name("x_total")
                .Labels({{"a", "b"}})
                .TryRegister(registry)
                .status()
                .code(),
            absl::StatusCode::kAlreadyExists);
  // A histogram's derived sample names clash too, in both directions.
  ASSERT_TRUE(BuildHistogram().Name("latency").TryRegister(registry).ok());
  EXPECT_FALSE(BuildCounter().Name("latency_count").TryRegister(registry).ok());
  ASSERT_TRUE(BuildGauge().Name("size_sum").TryRegister(registry).ok());
  EXPECT_FALSE(BuildHistogram().Name("size").TryRegister(registry).ok());
}

TEST(FamilyTest, SameLabelsGiveTheSameInstance) {
  Registry registry;
  Family<Gauge>& family = BuildGauge().Name("g").Register(registry);
  Gauge& a = family.Add({{"x", "1"}, {"y", "2"}});
  Gauge& b = family.Add({{"y", "2"}, {"x", "1"}});
  Gauge& c = family.Add({{"x", "1"}});
  EXPECT_EQ(&a, &b);
  EXPECT_NE(&a, &c);
  EXPECT_TRUE(family.Has({{"x", "1"}}));
  family.Remove(&c);
  EXPECT_FALSE(family.Has({{"x", "1"}}));

  // Arguments of a later Add() with the same labels are ignored.
  Family<Histogram>& histograms = BuildHistogram().Name("h").Register(registry);
  Histogram& h1 = histograms.Add({}, Histogram::BucketBoundaries{1});
  Histogram& h2 = histograms.Add({}, Histogram::BucketBoundaries{1, 2, 3});
  EXPECT_EQ(&h1, &h2);
  EXPECT_EQ(h1.Collect().histogram.bucket.size(), 2u);
}

TEST(FamilyTest, CollectMergesConstantLabelsInNameOrder) {
  Registry registry;
  BuildCounter()
      .Name("c_total")
      .Help("help")
      .Labels({{"m", "const"}})
      .Register(registry)
      .Add({{"z", "1"}, {"a", "2"}})
      .Increment(3);
  const std::vector<MetricFamily> families = registry.Collect();
  ASSERT_EQ(families.size(), 1u);
  EXPECT_EQ(families[0].name, "c_total");
  EXPECT_EQ(families[0].help, "help");
  EXPECT_EQ(families[0].type, MetricType::kCounter);
  ASSERT_EQ(families[0].metric.size(), 1u);
  const ClientMetric& metric = families[0].metric[0];
  ASSERT_EQ(metric.label.size(), 3u);
  EXPECT_EQ(metric.label[0].name, "a");
  EXPECT_EQ(metric.label[1].name, "m");
  EXPECT_EQ(metric.label[1].value, "const");
  EXPECT_EQ(metric.label[2].name, "z");
  EXPECT_EQ(metric.counter.value, 3.0);
}

// Many threads on the same metrics must lose no update; concurrent Add()
// and Collect() must be safe (run under TSAN to check the latter fully).
TEST(ConcurrencyTest, ExactTotalsUnderContention) {
  Registry registry;
  Family<Counter>& counters = BuildCounter().Name("c_total").Register(registry);
  Family<Gauge>& gauges = BuildGauge().Name("g").Register(registry);
  Family<Histogram>& histograms = BuildHistogram().Name("h").Register(registry);
  constexpr int kThreads = 8;
  constexpr int kIterations = 50000;
  std::vector<Counter*> seen(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Counter& counter = counters.Add({{"shared", "yes"}});
      seen[t] = &counter;
      Gauge& gauge = gauges.Add({});
      Histogram& histogram =
          histograms.Add({}, Histogram::BucketBoundaries{0.5});
      for (int i = 0; i < kIterations; ++i) {
        counter.Increment();
        gauge.Increment(2);
        gauge.Decrement();
        histogram.Observe(i % 2);  // Alternates between the two buckets.
        if (i % 10000 == 0) registry.Collect();
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (Counter* counter : seen) EXPECT_EQ(counter, seen[0]);
  const double total = static_cast<double>(kThreads) * kIterations;
  EXPECT_EQ(seen[0]->Value(), total);
  EXPECT_EQ(gauges.Add({}).Value(), total);
  const ClientMetric::Histogram collected =
      histograms.Add({}, Histogram::BucketBoundaries{0.5}).Collect().histogram;
  EXPECT_EQ(collected.sample_count, total);
  EXPECT_EQ(collected.bucket[0].cumulative_count, total / 2);
  EXPECT_EQ(collected.sample_sum, total / 2);
}

}  // namespace
}  // namespace llorch::metrics
