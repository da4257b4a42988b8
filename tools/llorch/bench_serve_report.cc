#include "tools/llorch/bench_serve_report.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace llorch {
namespace tool {
namespace {

constexpr const char* kColumns[] = {
    "label",       "concurrency", "requests",    "ok",          "errors",
    "prompt_tokens", "max_tokens", "completion_tokens", "seconds", "ttft_p50_ms",
    "ttft_p95_ms", "itl_p50_ms",  "itl_p95_ms",  "output_tok_s", "requests_s"};

std::string CsvField(const std::string& value) {
  if (value.find_first_of(",\"\n\r") == std::string::npos) return value;
  std::string out = "\"";
  for (char c : value) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

// One CSV line's fields (quotes as CsvField writes them; no newlines in fields).
std::vector<std::string> CsvFields(const std::string& line) {
  std::vector<std::string> fields(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        fields.back() += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        fields.back() += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      fields.emplace_back();
    } else if (c != '\r') {
      fields.back() += c;
    }
  }
  return fields;
}

std::string Number(double value) { return absl::StrFormat("%.1f", value); }

// A gnuplot single-quoted string.
std::string GnuplotString(const std::string& text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + "'";
}

// A latency for the plot: "?" (gnuplot's missing value) when there is none.
std::string PlotLatency(double ms) { return ms > 0 ? absl::StrFormat("%.3f", ms) : "?"; }

}  // namespace

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank = p / 100 * (values.size() - 1);
  const size_t low = static_cast<size_t>(std::floor(rank));
  const size_t high = std::min(low + 1, values.size() - 1);
  return values[low] + (values[high] - values[low]) * (rank - low);
}

LevelSummary Summarize(const std::string& label, int concurrency, int max_tokens, double seconds,
                       const std::vector<RequestRecord>& records) {
  LevelSummary s;
  s.label = label;
  s.concurrency = concurrency;
  s.requests = static_cast<int>(records.size());
  s.max_tokens = max_tokens;
  s.seconds = seconds;
  std::vector<double> ttft, gaps;
  double prompt_sum = 0;
  int prompt_count = 0;
  for (const RequestRecord& r : records) {
    if (r.ok) {
      ++s.ok;
    } else {
      ++s.errors[r.error];
    }
    s.completion_tokens += r.completion_tokens;
    if (r.prompt_tokens >= 0) {
      prompt_sum += r.prompt_tokens;
      ++prompt_count;
    }
    if (r.ttft_seconds >= 0) ttft.push_back(r.ttft_seconds * 1000);
    for (double g : r.gaps) gaps.push_back(g * 1000);
  }
  s.prompt_tokens = prompt_count ? prompt_sum / prompt_count : 0;
  s.ttft_p50_ms = Percentile(ttft, 50);
  s.ttft_p95_ms = Percentile(ttft, 95);
  s.itl_p50_ms = Percentile(gaps, 50);
  s.itl_p95_ms = Percentile(gaps, 95);
  if (seconds > 0) {
    s.output_tok_s = s.completion_tokens / seconds;
    s.requests_s = s.ok / seconds;
  }
  return s;
}

std::string ErrorCodes(const std::map<std::string, int>& errors) {
  std::vector<std::string> parts;
  for (const auto& [code, count] : errors) parts.push_back(absl::StrCat(code, ":", count));
  return absl::StrJoin(parts, " ");
}

std::string LevelTable(const std::vector<LevelSummary>& levels) {
  std::string out =
      "| concurrency | requests | errors | prompt tok | TTFT p50 ms | TTFT p95 ms | ITL p50 ms "
      "| ITL p95 ms | output tok/s | req/s |\n"
      "|--:|--:|:--|--:|--:|--:|--:|--:|--:|--:|\n";
  for (const LevelSummary& s : levels) {
    const std::string errors =
        s.failed() == 0 ? "0" : absl::StrCat(s.failed(), " (", ErrorCodes(s.errors), ")");
    absl::StrAppend(&out, "| ", s.concurrency, " | ", s.requests, " | ", errors, " | ",
                    absl::StrFormat("%.0f", s.prompt_tokens), " | ", Number(s.ttft_p50_ms), " | ",
                    Number(s.ttft_p95_ms), " | ", Number(s.itl_p50_ms), " | ",
                    Number(s.itl_p95_ms), " | ", Number(s.output_tok_s), " | ",
                    absl::StrFormat("%.2f", s.requests_s), " |\n");
  }
  return out;
}

std::string CompareTable(const std::vector<LevelSummary>& ours,
                         const std::vector<LevelSummary>& theirs) {
  if (ours.empty() || theirs.empty()) return "";
  const std::string a = ours[0].label, b = theirs[0].label;
  std::string out = absl::StrCat("| concurrency | ", a, " tok/s | ", b, " tok/s | ratio | ", a,
                                 " TTFT p50 ms | ", b, " TTFT p50 ms | ", a, " ITL p50 ms | ", b,
                                 " ITL p50 ms |\n|--:|--:|--:|--:|--:|--:|--:|--:|\n");
  for (const LevelSummary& x : ours) {
    for (const LevelSummary& y : theirs) {
      if (x.concurrency != y.concurrency) continue;
      const std::string ratio =
          y.output_tok_s > 0 ? absl::StrFormat("%.2f", x.output_tok_s / y.output_tok_s) : "-";
      absl::StrAppend(&out, "| ", x.concurrency, " | ", Number(x.output_tok_s), " | ",
                      Number(y.output_tok_s), " | ", ratio, " | ", Number(x.ttft_p50_ms), " | ",
                      Number(y.ttft_p50_ms), " | ", Number(x.itl_p50_ms), " | ",
                      Number(y.itl_p50_ms), " |\n");
      break;
    }
  }
  return out;
}

absl::Status WriteCsv(const std::string& path, const std::vector<LevelSummary>& levels) {
  std::ofstream out(path);
  if (!out) return absl::UnavailableError(absl::StrCat("--csv: cannot write ", path));
  out << absl::StrJoin(kColumns, ",") << "\n";
  for (const LevelSummary& s : levels) {
    out << CsvField(s.label) << "," << s.concurrency << "," << s.requests << "," << s.ok << ","
        << CsvField(ErrorCodes(s.errors)) << "," << absl::StrFormat("%.1f", s.prompt_tokens)
        << "," << s.max_tokens << "," << s.completion_tokens << ","
        << absl::StrFormat("%.3f", s.seconds) << ","
        << absl::StrFormat("%.3f,%.3f,%.3f,%.3f,%.2f,%.3f", s.ttft_p50_ms, s.ttft_p95_ms,
                           s.itl_p50_ms, s.itl_p95_ms, s.output_tok_s, s.requests_s)
        << "\n";
  }
  out.close();
  if (!out) return absl::UnavailableError(absl::StrCat("--csv: cannot write ", path));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::vector<LevelSummary>>> ReadCsv(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("--compare: cannot read ", path));
  std::string line;
  if (!std::getline(in, line)) return absl::InvalidArgumentError(absl::StrCat(path, ": empty"));
  std::map<std::string, size_t> column;
  const std::vector<std::string> header = CsvFields(line);
  for (size_t i = 0; i < header.size(); ++i) column[header[i]] = i;
  for (const char* name : kColumns) {
    if (!column.count(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": no column '", name, "' (not a CSV of llorch bench-serve --csv)"));
    }
  }
  std::vector<std::vector<LevelSummary>> series;
  std::map<std::string, size_t> index;  // label -> series
  for (int row = 2; std::getline(in, line); ++row) {
    if (line.empty()) continue;
    const std::vector<std::string> f = CsvFields(line);
    if (f.size() != header.size()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", row, ": ", f.size(),
                                                     " fields, the header has ", header.size()));
    }
    auto number = [&](const char* name, double* out) {
      return absl::SimpleAtod(f[column[name]], out);
    };
    LevelSummary s;
    s.label = f[column["label"]];
    double concurrency, requests, ok, max_tokens, completion;
    bool good = number("concurrency", &concurrency) && number("requests", &requests) &&
                number("ok", &ok) && number("max_tokens", &max_tokens) &&
                number("completion_tokens", &completion) &&
                number("prompt_tokens", &s.prompt_tokens) && number("seconds", &s.seconds) &&
                number("ttft_p50_ms", &s.ttft_p50_ms) && number("ttft_p95_ms", &s.ttft_p95_ms) &&
                number("itl_p50_ms", &s.itl_p50_ms) && number("itl_p95_ms", &s.itl_p95_ms) &&
                number("output_tok_s", &s.output_tok_s) && number("requests_s", &s.requests_s);
    if (!good) return absl::InvalidArgumentError(absl::StrCat(path, ":", row, ": not a number"));
    s.concurrency = static_cast<int>(concurrency);
    s.requests = static_cast<int>(requests);
    s.ok = static_cast<int>(ok);
    s.max_tokens = static_cast<int>(max_tokens);
    s.completion_tokens = static_cast<int64_t>(completion);
    for (absl::string_view part : absl::StrSplit(f[column["errors"]], ' ', absl::SkipEmpty())) {
      const size_t colon = part.rfind(':');
      int count = 0;
      if (colon == absl::string_view::npos || !absl::SimpleAtoi(part.substr(colon + 1), &count)) {
        continue;
      }
      s.errors[std::string(part.substr(0, colon))] += count;
    }
    auto [it, added] = index.emplace(s.label, series.size());
    if (added) series.emplace_back();
    series[it->second].push_back(std::move(s));
  }
  return series;
}

absl::Status CheckGnuplot() {
  const int rc = std::system("gnuplot --version >/dev/null 2>&1");
  if (rc != 0) {
    return absl::FailedPreconditionError(
        "--plot needs gnuplot: apt-get install gnuplot-nox (tools/setup.sh installs it)");
  }
  return absl::OkStatus();
}

absl::Status Plot(const std::string& png, const std::string& title,
                  const std::vector<std::vector<LevelSummary>>& series) {
  std::set<int> levels;
  for (const auto& s : series) {
    for (const LevelSummary& level : s) levels.insert(level.concurrency);
  }
  std::ostringstream gp;
  gp << "set encoding utf8\n"
        "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
        "  set terminal pngcairo size 1400,520 font 'sans,11' noenhanced\n"
        "} else {\n"
        "  set terminal png size 1400,520 noenhanced\n"
        "}\n"
     << "set output " << GnuplotString(png) << "\n"
     << "set datafile missing '?'\n";
  for (size_t i = 0; i < series.size(); ++i) {
    gp << "$s" << i << " << EOD\n";
    for (const LevelSummary& s : series[i]) {
      gp << s.concurrency << " " << absl::StrFormat("%.3f", s.output_tok_s) << " "
         << PlotLatency(s.ttft_p50_ms) << " " << PlotLatency(s.itl_p50_ms) << "\n";
    }
    gp << "EOD\n";
  }
  std::vector<std::string> tics;
  for (int level : levels) tics.push_back(absl::StrCat(level));
  gp << "set multiplot layout 1,2 title " << GnuplotString(title) << "\n"
     << "set logscale x 2\nset xtics (" << absl::StrJoin(tics, ",") << ")\n"
     << "set xrange [" << (levels.empty() ? 1 : *levels.begin()) * 0.8 << ":"
     << (levels.empty() ? 16 : *levels.rbegin()) * 1.25 << "]\n"
     << "set grid\nset key top left\nset xlabel 'concurrent requests'\n"
     << "set ylabel 'output tokens/s (all requests)'\nset yrange [0:*]\n"
     << "set title 'throughput'\nplot ";
  for (size_t i = 0; i < series.size(); ++i) {
    if (series[i].empty()) continue;
    gp << (i ? ", " : "") << "$s" << i << " using 1:2 with linespoints lw 2 pt 7 lc " << i + 1
       << " title " << GnuplotString(series[i][0].label);
  }
  gp << "\nset logscale y\nset yrange [*:*]\nset key top left\n"
     << "set ylabel 'milliseconds (p50)'\nset title 'latency: time to first token (solid), "
        "inter-token (dashed)'\nplot ";
  for (size_t i = 0; i < series.size(); ++i) {
    if (series[i].empty()) continue;
    const std::string& label = series[i][0].label;
    gp << (i ? ", " : "") << "$s" << i << " using 1:3 with linespoints lw 2 pt 7 lc " << i + 1
       << " title " << GnuplotString(label + " TTFT") << ", $s" << i
       << " using 1:4 with linespoints lw 2 dt 2 pt 6 lc " << i + 1 << " title "
       << GnuplotString(label + " inter-token");
  }
  gp << "\nunset multiplot\n";

  char script[] = "/tmp/llorch-bench-serve-XXXXXX.gp";
  const int fd = mkstemps(script, 3);
  if (fd < 0) return absl::UnavailableError("--plot: cannot create a temporary file");
  const std::string text = gp.str();
  const bool written = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  close(fd);
  const int rc = written ? std::system(absl::StrCat("gnuplot ", script).c_str()) : -1;
  unlink(script);
  if (rc != 0) {
    return absl::InternalError(absl::StrCat("--plot: gnuplot failed (exit ",
                                            WIFEXITED(rc) ? WEXITSTATUS(rc) : rc, ") for ", png));
  }
  return absl::OkStatus();
}

}  // namespace tool
}  // namespace llorch
