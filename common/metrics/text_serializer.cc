#include "common/metrics/text_serializer.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"

namespace llorch::metrics {
namespace {

std::string Escape(absl::string_view text, bool escape_quote) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && escape_quote) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
  return out;
}

absl::string_view TypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

// Appends one sample line: name{labels[,le="bound"]} value.
void AppendSample(std::string& out, absl::string_view name,
                  const std::vector<ClientMetric::Label>& labels,
                  const std::string* le, absl::string_view value) {
  absl::StrAppend(&out, name);
  if (!labels.empty() || le != nullptr) {
    out += '{';
    const char* separator = "";
    for (const ClientMetric::Label& label : labels) {
      absl::StrAppend(&out, separator, label.name, "=\"",
                      EscapeLabelValue(label.value), "\"");
      separator = ",";
    }
    if (le != nullptr) absl::StrAppend(&out, separator, "le=\"", *le, "\"");
    out += '}';
  }
  absl::StrAppend(&out, " ", value, "\n");
}

}  // namespace

std::string FormatDouble(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  // Integral values up to 2^53 are exact in a double: print all digits so
  // counters read naturally (Go and to_chars would write 1e+06).
  constexpr double kMaxExactInteger = 9007199254740992.0;  // 2^53
  if (std::fabs(value) <= kMaxExactInteger && std::trunc(value) == value) {
    return absl::StrCat(static_cast<std::int64_t>(value));
  }
  // to_chars without a precision gives the shortest digits that round-trip,
  // in the "C" locale. Pick the notation as Go's strconv 'g' does for small
  // numbers (0.0001 fixed, 1e-05 scientific), so that histogram "le" labels
  // match those of Go clients; large non-integers stay fixed up to 1e21.
  char buffer[400];  // Fixed notation of DBL_MAX needs 309 digits.
  char* end = std::to_chars(buffer, buffer + sizeof(buffer), value,
                            std::chars_format::scientific)
                  .ptr;
  const char* exponent_sign = std::find(buffer, end, 'e') + 1;
  int exponent = 0;
  std::from_chars(*exponent_sign == '+' ? exponent_sign + 1 : exponent_sign,
                  end, exponent);
  if (exponent < -4 || exponent >= 21) return std::string(buffer, end);
  end = std::to_chars(buffer, buffer + sizeof(buffer), value,
                      std::chars_format::fixed)
            .ptr;
  return std::string(buffer, end);
}

std::string EscapeHelp(absl::string_view help) {
  return Escape(help, /*escape_quote=*/false);
}

std::string EscapeLabelValue(absl::string_view value) {
  return Escape(value, /*escape_quote=*/true);
}

std::string TextSerializer::Serialize(
    const std::vector<MetricFamily>& families) const {
  std::string out;
  for (const MetricFamily& family : families) {
    if (family.metric.empty()) continue;
    if (!family.help.empty()) {
      absl::StrAppend(&out, "# HELP ", family.name, " ",
                      EscapeHelp(family.help), "\n");
    }
    absl::StrAppend(&out, "# TYPE ", family.name, " ", TypeName(family.type),
                    "\n");
    for (const ClientMetric& metric : family.metric) {
      switch (family.type) {
        case MetricType::kCounter:
          AppendSample(out, family.name, metric.label, nullptr,
                       FormatDouble(metric.counter.value));
          break;
        case MetricType::kGauge:
          AppendSample(out, family.name, metric.label, nullptr,
                       FormatDouble(metric.gauge.value));
          break;
        case MetricType::kHistogram: {
          const std::string bucket_name = family.name + "_bucket";
          for (const ClientMetric::Bucket& bucket : metric.histogram.bucket) {
            const std::string le = FormatDouble(bucket.upper_bound);
            AppendSample(out, bucket_name, metric.label, &le,
                         absl::StrCat(bucket.cumulative_count));
          }
          AppendSample(out, family.name + "_sum", metric.label, nullptr,
                       FormatDouble(metric.histogram.sample_sum));
          AppendSample(out, family.name + "_count", metric.label, nullptr,
                       absl::StrCat(metric.histogram.sample_count));
          break;
        }
      }
    }
  }
  return out;
}

}  // namespace llorch::metrics
