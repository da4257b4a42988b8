#include "common/metrics/check_names.h"

#include <cstdio>
#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace llorch::metrics {
namespace {

// Locale-independent on purpose: names are ASCII by specification.
bool IsAsciiLetter(char c) {
  return ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z');
}
bool IsAsciiDigit(char c) { return '0' <= c && c <= '9'; }

absl::Status CheckName(absl::string_view kind, absl::string_view name,
                       bool allow_colon) {
  auto valid_char = [allow_colon](char c, bool first) {
    return IsAsciiLetter(c) || c == '_' || (allow_colon && c == ':') ||
           (!first && IsAsciiDigit(c));
  };
  if (name.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(kind, " name is empty"));
  }
  if (absl::StartsWith(name, "__")) {
    return absl::InvalidArgumentError(absl::StrCat(
        kind, " name \"", name, "\" starts with \"__\" (reserved)"));
  }
  for (size_t i = 0; i < name.size(); ++i) {
    if (!valid_char(name[i], i == 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          kind, " name \"", name, "\" has an invalid character at offset ", i,
          allow_colon ? " (allowed: [a-zA-Z_:][a-zA-Z0-9_:]*)"
                      : " (allowed: [a-zA-Z_][a-zA-Z0-9_]*)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckMetricName(absl::string_view name) {
  return CheckName("metric", name, /*allow_colon=*/true);
}

absl::Status CheckLabelName(absl::string_view name, MetricType type) {
  if (type == MetricType::kHistogram && name == "le") {
    return absl::InvalidArgumentError(
        "label name \"le\" is reserved for histogram buckets");
  }
  return CheckName("label", name, /*allow_colon=*/false);
}

absl::Status CheckLabelNames(const Labels& labels, MetricType type) {
  for (const auto& [name, value] : labels) {
    absl::Status status = CheckLabelName(name, type);
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

namespace detail {
void DieIfError(const absl::Status& status, absl::string_view context) {
  if (status.ok()) return;
  std::fprintf(stderr, "llorch::metrics: %.*s: %s\n",
               static_cast<int>(context.size()), context.data(),
               status.ToString().c_str());
  std::abort();
}
}  // namespace detail

}  // namespace llorch::metrics
