// The report side of `llorch bench-serve`: per-level figures from the
// requests' records, the Markdown tables, the CSV (written, and read back
// for --compare) and the gnuplot PNG.
#ifndef LLORCH_TOOLS_LLORCH_BENCH_SERVE_REPORT_H_
#define LLORCH_TOOLS_LLORCH_BENCH_SERVE_REPORT_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tools/llorch/bench_serve_client.h"

namespace llorch {
namespace tool {

// One concurrency level of one server (one CSV row).
struct LevelSummary {
  std::string label;
  int concurrency = 0;
  int requests = 0;
  int ok = 0;
  std::map<std::string, int> errors;  // code -> count
  double prompt_tokens = 0;           // mean over the requests that reported it; 0: none
  int max_tokens = 0;
  int64_t completion_tokens = 0;      // all requests, failed ones' tokens included
  double seconds = 0;                 // first request sent -> last one over
  double ttft_p50_ms = 0, ttft_p95_ms = 0;
  double itl_p50_ms = 0, itl_p95_ms = 0;  // gaps between token events, all requests
  double output_tok_s = 0;                // completion_tokens / seconds
  double requests_s = 0;                  // ok requests / seconds

  int failed() const { return requests - ok; }
};

LevelSummary Summarize(const std::string& label, int concurrency, int max_tokens, double seconds,
                       const std::vector<RequestRecord>& records);

// Linear interpolation between the closest ranks (numpy's default); 0 when
// `values` is empty.
double Percentile(std::vector<double> values, double p);

// "UNAVAILABLE:2 SHORT:1"; "" when none.
std::string ErrorCodes(const std::map<std::string, int>& errors);

// One Markdown table, one row per level.
std::string LevelTable(const std::vector<LevelSummary>& levels);
// `ours` against `theirs`, level by level where both have the level: tok/s
// and its ratio (> 1: ours is faster), TTFT p50 and ITL p50 of both.
std::string CompareTable(const std::vector<LevelSummary>& ours,
                         const std::vector<LevelSummary>& theirs);

absl::Status WriteCsv(const std::string& path, const std::vector<LevelSummary>& levels);
// Rows of a CSV that WriteCsv wrote, grouped by label in file order.
absl::StatusOr<std::vector<std::vector<LevelSummary>>> ReadCsv(const std::string& path);

// A PNG of output tok/s (left) and TTFT p50 / inter-token p50 (right, log
// scale) against concurrency, one curve per series, drawn by gnuplot.
absl::Status Plot(const std::string& png, const std::string& title,
                  const std::vector<std::vector<LevelSummary>>& series);
// OK when `gnuplot` runs; else an error that says how to install it.
absl::Status CheckGnuplot();

}  // namespace tool
}  // namespace llorch

#endif  // LLORCH_TOOLS_LLORCH_BENCH_SERVE_REPORT_H_
