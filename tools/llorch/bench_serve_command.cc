// llorch bench-serve: a closed-loop load generator for a running server. At
// each concurrency level C it keeps C streaming requests in flight until
// --requests requests have finished, each a prompt of about --prompt-tokens
// tokens and exactly --max-tokens generated tokens (greedy, EOS ignored),
// and reports per level TTFT and inter-token latency (p50/p95, on the
// client's clock), output tokens/s, requests/s and errors by code; a
// Markdown table on stdout, a progress bar on stderr, optionally a CSV and a
// gnuplot PNG. The same load drives a llorch-worker (gRPC), a
// llorch-scheduler (gRPC) or any OpenAI-compatible server (streamed
// /v1/completions: llorch-scheduler --http_listen, llama.cpp's llama-server,
// ...), so one tool measures llorch and its peers alike.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "tools/llorch/bench_serve_client.h"
#include "tools/llorch/bench_serve_report.h"
#include "tools/llorch/common.h"

ABSL_FLAG(std::string, openai, "",
          "base URL of an OpenAI-compatible server (http://HOST:PORT or http://HOST:PORT/v1): "
          "streamed /v1/completions");
// Not `model`, `max_tokens`, `prompt_tokens`, `timeout`: other subcommands'
// flags of other meanings or defaults.
ABSL_FLAG(std::string, bench_serve_model, "",
          "the model's name on the server (required with --scheduler and --openai)");
ABSL_FLAG(std::string, concurrency, "1,2,4,8,16", "the concurrency levels: requests in flight");
ABSL_FLAG(int32_t, requests, 16, "requests per concurrency level (at least the level)");
ABSL_FLAG(int32_t, bench_serve_prompt_tokens, 128,
          "prompt length: this many common words, about one token each (the servers' counts "
          "are reported)");
ABSL_FLAG(int32_t, bench_serve_max_tokens, 64,
          "tokens generated per request, exactly (greedy, EOS ignored)");
ABSL_FLAG(int32_t, warmup, 1, "requests sent one by one before the first level, not counted");
ABSL_FLAG(int32_t, first_prompt, 0,
          "index of the first request's prompt (each index is its own fixed word sequence): "
          "runs against one server take different ranges, or a prefix cache answers the "
          "second run's prompts from the first's");
ABSL_FLAG(double, bench_serve_timeout, 600, "seconds until one request is abandoned");
ABSL_FLAG(std::string, label, "",
          "this run's name in the tables, the CSV and the plot (default: the target)");
ABSL_FLAG(std::string, csv, "", "write one row per level to this CSV file");
ABSL_FLAG(std::string, plot, "",
          "draw throughput and latency against concurrency into this PNG (needs gnuplot)");
ABSL_FLAG(std::string, compare, "",
          "CSV files of earlier runs (comma-separated): a ratio table against each, and their "
          "curves in --plot");

namespace llorch {
namespace tool {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kUsage[] =
    "llorch bench-serve (--worker HOST:PORT | --scheduler HOST:PORT --model NAME |\n"
    "                          --openai URL --model NAME)\n"
    "           [--concurrency 1,2,4,8,16] [--requests N] [--prompt-tokens P] [--max-tokens T]\n"
    "           [--csv FILE] [--plot FILE.png] [--label NAME] [--compare A.csv,B.csv] [flags]";

double Since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Requests done of one level on stderr: a bar redrawn in place on a
// terminal (and every 250 ms, for the clock), else a plain line at each
// quarter.
class Progress {
 public:
  Progress(int concurrency, int total)
      : concurrency_(concurrency),
        total_(total),
        tty_(isatty(STDERR_FILENO)),
        step_(std::max(1, total / 4)),
        start_(Clock::now()) {
    if (!tty_) return;
    Draw();
    ticker_ = std::thread([this] {
      std::unique_lock<std::mutex> lock(mu_);
      while (!stopped_) {
        if (!wake_.wait_for(lock, std::chrono::milliseconds(250), [this] { return stopped_; })) {
          Draw();
        }
      }
    });
  }
  ~Progress() { Finish(); }

  void Done(bool ok) {
    std::lock_guard<std::mutex> lock(mu_);
    ++done_;
    errors_ += !ok;
    if (tty_) {
      Draw();
    } else if (done_ % step_ == 0 || done_ == total_) {
      std::cerr << "bench-serve: " << Status() << std::endl;
    }
  }

  void Finish() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopped_) return;
      stopped_ = true;
      if (tty_) {
        Draw();
        std::cerr << std::endl;
      }
    }
    wake_.notify_all();
    if (ticker_.joinable()) ticker_.join();
  }

 private:
  std::string Status() const {
    return absl::StrFormat("concurrency %d: %d/%d requests, %d error%s, %.1f s", concurrency_,
                           done_, total_, errors_, errors_ == 1 ? "" : "s", Since(start_));
  }
  void Draw() const {  // mu_ held
    constexpr int kWidth = 30;
    const int filled = total_ ? done_ * kWidth / total_ : kWidth;
    std::cerr << "\r\033[Kbench-serve [" << std::string(filled, '#')
              << std::string(kWidth - filled, '.') << "] " << Status() << std::flush;
  }

  const int concurrency_, total_;
  const bool tty_;
  const int step_;
  const Clock::time_point start_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::thread ticker_;
  bool stopped_ = false;
  int done_ = 0, errors_ = 0;
};

// `requests` requests through `client` with `concurrency` in flight; prompt
// indices from `first_prompt` on.
LevelSummary RunLevel(BenchClient& client, const std::string& label, int concurrency,
                      int requests, int first_prompt, const RequestShape& shape, int prompt_words,
                      std::vector<RequestRecord>* all) {
  std::vector<RequestRecord> records(requests);
  std::atomic<int> next{0};
  Progress progress(concurrency, requests);
  const Clock::time_point start = Clock::now();
  std::vector<std::thread> threads;
  for (int slot = 0; slot < concurrency; ++slot) {
    threads.emplace_back([&, slot] {
      for (int i; (i = next.fetch_add(1)) < requests;) {
        records[i] = client.Send(slot, BenchPrompt(first_prompt + i, prompt_words), shape);
        progress.Done(records[i].ok);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const double seconds = Since(start);
  progress.Finish();
  all->insert(all->end(), records.begin(), records.end());
  return Summarize(label, concurrency, shape.max_tokens, seconds, records);
}

// The first message of each error code, for the notes under the table.
std::string ErrorNotes(const std::vector<RequestRecord>& records) {
  std::map<std::string, std::pair<int, std::string>> first;
  for (const RequestRecord& r : records) {
    if (r.ok) continue;
    auto& [count, message] = first[r.error];
    if (count++ == 0) message = r.message;
  }
  std::string out;
  for (const auto& [code, entry] : first) {
    absl::StrAppend(&out, "- ", code, " (", entry.first, "x)",
                    entry.second.empty() ? "" : absl::StrCat(": ", entry.second), "\n");
  }
  return out;
}

absl::Status BenchServe() {
  // Flags first: every usage error before any call.
  const std::string worker = absl::GetFlag(FLAGS_worker);
  const std::string scheduler = absl::GetFlag(FLAGS_scheduler);
  const std::string openai = absl::GetFlag(FLAGS_openai);
  if (!worker.empty() + !scheduler.empty() + !openai.empty() != 1) {
    return absl::InvalidArgumentError("give exactly one of --worker, --scheduler and --openai");
  }
  const std::string model = absl::GetFlag(FLAGS_bench_serve_model);
  if (worker.empty() && model.empty()) {
    return absl::InvalidArgumentError("--model is required with --scheduler and --openai");
  }
  if (!worker.empty() && !model.empty()) {
    return absl::InvalidArgumentError("--model is for --scheduler and --openai: a worker serves one model");
  }
  absl::StatusOr<std::vector<int32_t>> levels =
      ParseIds(absl::GetFlag(FLAGS_concurrency), "--concurrency");
  if (!levels.ok()) return levels.status();
  if (levels->empty()) return absl::InvalidArgumentError("--concurrency: no level given");
  const int requests = absl::GetFlag(FLAGS_requests);
  for (int32_t n : *levels) {
    if (n < 1) return absl::InvalidArgumentError(absl::StrCat("--concurrency: ", n, " is not >= 1"));
    if (n > requests) {
      return absl::InvalidArgumentError(absl::StrCat("--concurrency: level ", n, " is above --requests ",
                                                     requests, " (requests per level)"));
    }
  }
  const std::string plot = absl::GetFlag(FLAGS_plot);
  if (!plot.empty()) {
    if (absl::Status s = CheckGnuplot(); !s.ok()) return s;
  }
  std::vector<std::vector<LevelSummary>> compared;
  for (absl::string_view path :
       absl::StrSplit(absl::GetFlag(FLAGS_compare), ',', absl::SkipWhitespace())) {
    absl::StatusOr<std::vector<std::vector<LevelSummary>>> series = ReadCsv(std::string(path));
    if (!series.ok()) return series.status();
    compared.insert(compared.end(), series->begin(), series->end());
  }
  RequestShape shape;
  shape.max_tokens = absl::GetFlag(FLAGS_bench_serve_max_tokens);
  shape.timeout_seconds = absl::GetFlag(FLAGS_bench_serve_timeout);
  const int prompt_words = absl::GetFlag(FLAGS_bench_serve_prompt_tokens);
  const int max_level = *std::max_element(levels->begin(), levels->end());

  std::string target;
  absl::StatusOr<std::unique_ptr<BenchClient>> client;
  if (!worker.empty()) {
    target = absl::StrCat("llorch-worker ", worker);
    client = MakeWorkerClient(worker);
  } else if (!scheduler.empty()) {
    target = absl::StrCat("llorch-scheduler ", scheduler);
    client = MakeSchedulerClient(scheduler, model);
  } else {
    target = absl::StrCat("OpenAI API ", openai);
    client = MakeOpenAiClient(openai, model, max_level);
  }
  if (!client.ok()) return client.status();
  const std::string label = absl::GetFlag(FLAGS_label).empty() ? target : absl::GetFlag(FLAGS_label);

  int prompt_index = absl::GetFlag(FLAGS_first_prompt);
  for (int i = 0; i < absl::GetFlag(FLAGS_warmup); ++i) {
    RequestRecord r = (*client)->Send(0, BenchPrompt(prompt_index++, prompt_words), shape);
    if (!r.ok) {
      return absl::UnavailableError(absl::StrCat(target, ": warm-up request failed: ", r.error,
                                                 r.message.empty() ? "" : ": ", r.message));
    }
  }

  std::vector<LevelSummary> summaries;
  std::vector<RequestRecord> all;
  for (int concurrency : *levels) {
    summaries.push_back(RunLevel(**client, label, concurrency, requests, prompt_index, shape,
                                 prompt_words, &all));
    prompt_index += requests;
  }

  std::cout << "bench-serve: " << label << (label == target ? "" : absl::StrCat(" (", target, ")"))
            << (model.empty() ? "" : absl::StrCat(", model ", model)) << "; prompts of "
            << prompt_words << " words, " << shape.max_tokens
            << " tokens generated per request (greedy, EOS ignored), " << requests
            << " requests per level\n\n"
            << LevelTable(summaries);
  if (std::string notes = ErrorNotes(all); !notes.empty()) std::cout << "\nerrors:\n" << notes;
  for (const std::vector<LevelSummary>& other : compared) {
    if (other.empty()) continue;
    std::cout << "\n" << label << " / " << other[0].label << ":\n\n"
              << CompareTable(summaries, other);
  }
  std::cout << std::flush;

  if (const std::string csv = absl::GetFlag(FLAGS_csv); !csv.empty()) {
    if (absl::Status s = WriteCsv(csv, summaries); !s.ok()) return s;
  }
  if (!plot.empty()) {
    std::vector<std::vector<LevelSummary>> series = {summaries};
    series.insert(series.end(), compared.begin(), compared.end());
    const std::string title = absl::StrFormat(
        "llorch bench-serve: %d-word prompts, %d tokens per request, %d requests per level",
        prompt_words, shape.max_tokens, requests);
    if (absl::Status s = Plot(plot, title, series); !s.ok()) return s;
  }
  if (std::all_of(all.begin(), all.end(), [](const RequestRecord& r) { return !r.ok; })) {
    return absl::UnavailableError(absl::StrCat(target, ": every request failed"));
  }
  return absl::OkStatus();
}

}  // namespace

cli::Subcommand BenchServeCommand() {
  return MakeSubcommand(
      "bench-serve",
      "TTFT, inter-token latency, tok/s and errors of a running server per concurrency level",
      kUsage,
      {{WorkerFlag(), SchedulerFlag(), cli::FlagSpec("openai").Value("URL"),
        cli::FlagSpec("model").Reads("bench_serve_model").Value("NAME")},
       ConnectionFlags(),
       {cli::FlagSpec("concurrency").Value("N,N,..."), cli::FlagSpec("requests").AtLeast(1),
        cli::FlagSpec("prompt_tokens").Reads("bench_serve_prompt_tokens").AtLeast(1),
        cli::FlagSpec("max_tokens").Reads("bench_serve_max_tokens").AtLeast(1),
        cli::FlagSpec("warmup").AtLeast(0), cli::FlagSpec("first_prompt").AtLeast(0),
        cli::FlagSpec("timeout").Reads("bench_serve_timeout").Value("SECONDS").Above(0).AtMost(1e9),
        cli::FlagSpec("label").Value("NAME"), cli::FlagSpec("csv").Value("FILE"),
        cli::FlagSpec("plot").Value("FILE.png"), cli::FlagSpec("compare").Value("FILE,...")}},
      &BenchServe);
}

}  // namespace tool
}  // namespace llorch
