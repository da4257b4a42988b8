// Prometheus text exposition format 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/).
#ifndef LLORCH_COMMON_METRICS_TEXT_SERIALIZER_H_
#define LLORCH_COMMON_METRICS_TEXT_SERIALIZER_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "common/metrics/metric_family.h"

namespace llorch::metrics {

// The Content-Type a scrape response must carry for this format.
inline constexpr char kTextContentType[] =
    "text/plain; version=0.0.4; charset=utf-8";

class TextSerializer {
 public:
  // Families with no metric are left out (a HELP/TYPE pair alone says
  // nothing). Families are written in the given order, so two families with
  // the same name (from two registries) would produce invalid output.
  std::string Serialize(const std::vector<MetricFamily>& families) const;
};

// Shortest text that parses back to exactly `value`. Integral values up to
// 2^53 print as plain integers (1000000, not 1e+06); other values in fixed
// notation when 1e-4 <= |value| < 1e21 and in scientific notation (1e-05,
// 1.5e+300) otherwise, which matches Go's strconv 'g' for bucket bounds
// like 0.0001. +Inf, -Inf and NaN as Prometheus spells them.
// Locale-independent.
std::string FormatDouble(double value);

// HELP text: backslash -> \\, newline -> \n.
std::string EscapeHelp(absl::string_view help);

// Label value: backslash -> \\, double quote -> \", newline -> \n.
std::string EscapeLabelValue(absl::string_view value);

}  // namespace llorch::metrics

#endif  // LLORCH_COMMON_METRICS_TEXT_SERIALIZER_H_
