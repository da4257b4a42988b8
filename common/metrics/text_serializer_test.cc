#include "common/metrics/text_serializer.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>

#include "absl/strings/str_split.h"
#include "common/metrics/registry.h"
#include "gtest/gtest.h"

namespace llorch::metrics {
namespace {

TEST(FormatDoubleTest, SpecialValuesAsPrometheusSpellsThem) {
  EXPECT_EQ(FormatDouble(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatDouble(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatDouble(std::nan("")), "NaN");
}

// Integral values print as the integer itself, with no exponent or ".0":
// the reference is the standard library's integer formatting.
TEST(FormatDoubleTest, IntegersHaveNoExponentNoise) {
  std::mt19937_64 rng(1);
  std::vector<std::int64_t> integers = {0, 1, -1, 1000000, 123456789012,
                                        (std::int64_t{1} << 53),
                                        -(std::int64_t{1} << 53)};
  for (int i = 0; i < 1000; ++i) {
    integers.push_back(static_cast<std::int64_t>(rng() >> 11) - (1LL << 52));
  }
  for (std::int64_t integer : integers) {
    EXPECT_EQ(FormatDouble(static_cast<double>(integer)),
              std::to_string(integer));
  }
}

// Every finite double must parse back (strtod, as Prometheus' Go parser
// does) to the same bits, and be no longer than printf's %.17g.
TEST(FormatDoubleTest, RoundTripsExactlyAndIsShort) {
  std::mt19937_64 rng(2);
  std::vector<double> values = {0.1, 1.0 / 3.0, 1e-300, 5e-324, 1.5e300,
                                std::numeric_limits<double>::max(),
                                -2.5, 9007199254740993.0 * 2};
  for (int i = 0; i < 100000; ++i) {
    const std::uint64_t bits = rng();
    double value;
    std::memcpy(&value, &bits, sizeof(value));
    if (std::isfinite(value)) values.push_back(value);
  }
  std::uniform_real_distribution<double> human(-1e6, 1e6);
  for (int i = 0; i < 10000; ++i) values.push_back(human(rng));
  for (double value : values) {
    const std::string text = FormatDouble(value);
    EXPECT_EQ(std::strtod(text.c_str(), nullptr), value) << text;
    char longest[64];
    std::snprintf(longest, sizeof(longest), "%.17g", value);
    EXPECT_LE(text.size(), std::strlen(longest)) << text;
  }
}

// The notation switch points of Go's strconv.FormatFloat(v, 'g', -1, 64),
// which Go clients use for "le" labels.
TEST(FormatDoubleTest, NotationSwitchesAtGoThresholdsForSmallValues) {
  for (double fixed : {0.0001, 0.00025, 0.001, 0.1, 0.5, -0.0001}) {
    EXPECT_EQ(FormatDouble(fixed).find('e'), std::string::npos) << fixed;
  }
  for (double scientific : {0.00001, 0.000099, 1e-300, -2.5e-7}) {
    EXPECT_NE(FormatDouble(scientific).find("e-"), std::string::npos)
        << scientific;
  }
}

TEST(EscapeTest, HelpEscapesBackslashAndNewlineOnly) {
  EXPECT_EQ(EscapeHelp("a\\b\nc\"d"), "a\\\\b\\nc\"d");
}

TEST(EscapeTest, LabelValueEscapesBackslashQuoteAndNewline) {
  EXPECT_EQ(EscapeLabelValue("a\\b\nc\"d{},= \xc3\xa9"),
            "a\\\\b\\nc\\\"d{},= \xc3\xa9");
}

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

TEST(TextSerializerTest, HelpTypeAndSamples) {
  Registry registry;
  BuildCounter()
      .Name("c_total")
      .Help("two\nlines")
      .Register(registry)
      .Add({{"v", "q\"uote"}})
      .Increment(2);
  BuildGauge().Name("empty_family").Register(registry);
  BuildGauge().Name("g").Register(registry).Add({}).Set(0.25);
  const std::vector<std::string> lines =
      Lines(TextSerializer().Serialize(registry.Collect()));
  const std::vector<std::string> expected = {
      "# HELP c_total two\\nlines", "# TYPE c_total counter",
      "c_total{v=\"q\\\"uote\"} 2", "# TYPE g gauge", "g 0.25"};
  EXPECT_EQ(lines, expected);
}

TEST(TextSerializerTest, HistogramBucketsSumAndCount) {
  Registry registry;
  Histogram& histogram = BuildHistogram()
                             .Name("h_seconds")
                             .Help("h")
                             .Register(registry)
                             .Add({{"r", "x"}}, Histogram::BucketBoundaries{
                                                    0.5, 1, 1e6});
  histogram.Observe(0.25);
  histogram.Observe(1);
  histogram.Observe(7);
  histogram.Observe(1e9);
  const std::vector<std::string> lines =
      Lines(TextSerializer().Serialize(registry.Collect()));
  const std::vector<std::string> expected = {
      "# HELP h_seconds h",
      "# TYPE h_seconds histogram",
      "h_seconds_bucket{r=\"x\",le=\"0.5\"} 1",
      "h_seconds_bucket{r=\"x\",le=\"1\"} 2",
      "h_seconds_bucket{r=\"x\",le=\"1000000\"} 3",
      "h_seconds_bucket{r=\"x\",le=\"+Inf\"} 4",
      "h_seconds_sum{r=\"x\"} " + FormatDouble(0.25 + 1 + 7 + 1e9),
      "h_seconds_count{r=\"x\"} 4"};
  EXPECT_EQ(lines, expected);
}

}  // namespace
}  // namespace llorch::metrics
