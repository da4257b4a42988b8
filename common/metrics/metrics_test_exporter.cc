// Test helper for the checks that use real Prometheus tools.
//
//   metrics_test_exporter
//       Writes the text exposition of a registry holding every metric kind,
//       odd values and label values that need escaping to stdout (piped
//       into `promtool check metrics`).
//   metrics_test_exporter --serve --count=N --observe=V1,V2,...
//                         [--label_value=TEXT]
//       Increments llorch_test_events_total N times from 4 threads, observes
//       each V in llorch_test_latency_seconds, sets
//       llorch_test_label_echo{value="TEXT"} 1, then serves /metrics on
//       127.0.0.1 (a free port), prints "port=<port>" and serves until stdin
//       is closed.
#include <cmath>
#include <cstdio>
#include <iostream>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/metrics/exposer.h"
#include "common/metrics/registry.h"
#include "common/metrics/text_serializer.h"

namespace llorch::metrics {
namespace {

const Histogram::BucketBoundaries kLatencyBuckets = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

int PrintSample() {
  Registry registry;
  auto& requests = BuildCounter()
                       .Name("llorch_test_requests_total")
                       .Help("Requests, with a help text that has a \\ and a\n"
                             "second line.")
                       .Labels({{"instance_role", "worker"}})
                       .Register(registry);
  requests.Add({{"status", "ok"}}).Increment(41);
  requests.Add({{"status", "ok"}}).Increment();
  requests.Add({{"status", "quote\" backslash\\ newline\n end"}})
      .Increment(0.5);
  requests.Add({{"status", "unicode é 漢字 {},= #"}}).Increment(1e6);
  requests.Add({{"status", ""}}).Increment(1e-300);

  auto& values = BuildGauge()
                     .Name("llorch_test_value")
                     .Help("Values that need special formatting.")
                     .Register(registry);
  values.Add({{"case", "nan"}}).Set(std::nan(""));
  values.Add({{"case", "plus_inf"}})
      .Set(std::numeric_limits<double>::infinity());
  values.Add({{"case", "minus_inf"}})
      .Set(-std::numeric_limits<double>::infinity());
  values.Add({{"case", "negative"}}).Set(-2.5);
  values.Add({{"case", "third"}}).Set(1.0 / 3.0);
  values.Add({{"case", "big"}}).Set(1.5e300);
  values.Add({{"case", "max_exact_integer"}}).Set(9007199254740992.0);

  auto& latency = BuildHistogram()
                      .Name("llorch_test_latency_seconds")
                      .Help("Latency.")
                      .Register(registry);
  Histogram& latency_ok = latency.Add({{"route", "/v1/completions"}},
                                      kLatencyBuckets);
  for (int i = 0; i < 100; ++i) latency_ok.Observe(0.001 * i * i);
  latency.Add({{"route", "empty"}}, kLatencyBuckets);
  latency.Add({{"route", "exponential"}}, ExponentialBuckets(1e-4, 10, 6))
      .Observe(0.5);

  std::cout << TextSerializer().Serialize(registry.Collect());
  return 0;
}

int Serve(int count, const std::vector<double>& observations,
          const std::string& label_value) {
  auto registry = std::make_shared<Registry>();
  Counter& events = BuildCounter()
                        .Name("llorch_test_events_total")
                        .Help("Events counted by the test exporter.")
                        .Register(*registry)
                        .Add({});
  Histogram& latency = BuildHistogram()
                           .Name("llorch_test_latency_seconds")
                           .Help("Values observed by the test exporter.")
                           .Register(*registry)
                           .Add({}, kLatencyBuckets);
  BuildGauge()
      .Name("llorch_test_label_echo")
      .Help("Carries a label value that needs escaping.")
      .Register(*registry)
      .Add({{"value", label_value}})
      .Set(1);

  // Several threads, so that the total read back through Prometheus also
  // checks that concurrent increments are not lost.
  constexpr int kThreads = 4;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&events, t, count] {
      for (int i = t; i < count; i += kThreads) events.Increment();
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (double value : observations) latency.Observe(value);

  auto exposer = Exposer::Create("127.0.0.1:0");
  if (!exposer.ok()) {
    std::cerr << exposer.status() << "\n";
    return 1;
  }
  (*exposer)->RegisterCollectable(registry);
  std::cout << "port=" << (*exposer)->GetListeningPorts().front() << std::endl;
  // Serve until the test closes our stdin (or kills us).
  std::string ignored;
  while (std::getline(std::cin, ignored)) {
  }
  return 0;
}

int Main(int argc, char** argv) {
  bool serve = false;
  int count = 0;
  std::vector<double> observations;
  std::string label_value;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    bool ok = true;
    if (arg == "--serve") {
      serve = true;
    } else if (absl::StartsWith(arg, "--count=")) {
      ok = absl::SimpleAtoi(arg.substr(8), &count) && count >= 0;
    } else if (absl::StartsWith(arg, "--observe=")) {
      for (absl::string_view text :
           absl::StrSplit(arg.substr(10), ',', absl::SkipEmpty())) {
        double value;
        ok = ok && absl::SimpleAtod(text, &value);
        observations.push_back(value);
      }
    } else if (absl::StartsWith(arg, "--label_value=")) {
      label_value = arg.substr(14);
    } else {
      ok = false;
    }
    if (!ok) {
      std::cerr << "metrics_test_exporter: bad argument " << arg << "\n";
      return 2;
    }
  }
  return serve ? Serve(count, observations, label_value) : PrintSample();
}

}  // namespace
}  // namespace llorch::metrics

int main(int argc, char** argv) { return llorch::metrics::Main(argc, argv); }
