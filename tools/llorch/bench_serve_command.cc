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

// The run as the flags describe it, checked.
struct BenchPlan {
  std::string worker, scheduler, openai;  // the target: exactly one is set
  std::string model;                      // with --scheduler and --openai
  std::vector<int32_t> levels;            // --concurrency
  int requests = 0;                       // per level
  int prompt_words = 0;
  RequestShape shape;
  std::string plot;
  std::vector<std::vector<LevelSummary>> compared;  // --compare's series
};

// The target to load: its name in the report and its client.
struct BenchTarget {
  std::string name;
  std::unique_ptr<BenchClient> client;
};

// Every level's summary and every request it sent.
struct BenchResults {
  std::vector<LevelSummary> summaries;
  std::vector<RequestRecord> all;
};

// --concurrency: levels from 1 to `requests`.
absl::StatusOr<std::vector<int32_t>> ReadLevels(int requests) {
  absl::StatusOr<std::vector<int32_t>> levels =
      ParseIds(absl::GetFlag(FLAGS_concurrency), "--concurrency");
  if (!levels.ok()) return levels.status();
  if (levels->empty()) return absl::InvalidArgumentError("--concurrency: no level given");
  for (int32_t n : *levels) {
    if (n < 1) {
      return absl::InvalidArgumentError(absl::StrCat("--concurrency: ", n, " is not >= 1"));
    }
    if (n > requests) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--concurrency: level ", n, " is above --requests ", requests, " (requests per level)"));
    }
  }
  return levels;
}

// --compare's CSV files: their series, in order.
absl::StatusOr<std::vector<std::vector<LevelSummary>>> ReadCompared() {
  std::vector<std::vector<LevelSummary>> compared;
  for (absl::string_view path :
       absl::StrSplit(absl::GetFlag(FLAGS_compare), ',', absl::SkipWhitespace())) {
    absl::StatusOr<std::vector<std::vector<LevelSummary>>> series = ReadCsv(std::string(path));
    if (!series.ok()) return series.status();
    compared.insert(compared.end(), series->begin(), series->end());
  }
  return compared;
}

// Flags first: every usage error before any call.
absl::StatusOr<BenchPlan> ReadPlan() {
  BenchPlan plan;
  plan.worker = absl::GetFlag(FLAGS_worker);
  plan.scheduler = absl::GetFlag(FLAGS_scheduler);
  plan.openai = absl::GetFlag(FLAGS_openai);
  if (!plan.worker.empty() + !plan.scheduler.empty() + !plan.openai.empty() != 1) {
    return absl::InvalidArgumentError("give exactly one of --worker, --scheduler and --openai");
  }
  plan.model = absl::GetFlag(FLAGS_bench_serve_model);
  if (plan.worker.empty() && plan.model.empty()) {
    return absl::InvalidArgumentError("--model is required with --scheduler and --openai");
  }
  if (!plan.worker.empty() && !plan.model.empty()) {
    return absl::InvalidArgumentError(
        "--model is for --scheduler and --openai: a worker serves one model");
  }
  plan.requests = absl::GetFlag(FLAGS_requests);
  absl::StatusOr<std::vector<int32_t>> levels = ReadLevels(plan.requests);
  if (!levels.ok()) return levels.status();
  plan.levels = *std::move(levels);
  plan.plot = absl::GetFlag(FLAGS_plot);
  if (!plan.plot.empty()) {
    if (absl::Status s = CheckGnuplot(); !s.ok()) return s;
  }
  absl::StatusOr<std::vector<std::vector<LevelSummary>>> compared = ReadCompared();
  if (!compared.ok()) return compared.status();
  plan.compared = *std::move(compared);
  plan.shape.max_tokens = absl::GetFlag(FLAGS_bench_serve_max_tokens);
  plan.shape.timeout_seconds = absl::GetFlag(FLAGS_bench_serve_timeout);
  plan.prompt_words = absl::GetFlag(FLAGS_bench_serve_prompt_tokens);
  return plan;
}

// The client of the one target given (an OpenAI one keeps a connection for
// each request in flight at the highest level).
absl::StatusOr<BenchTarget> ConnectTarget(const BenchPlan& plan) {
  const int max_level = *std::max_element(plan.levels.begin(), plan.levels.end());
  BenchTarget target;
  absl::StatusOr<std::unique_ptr<BenchClient>> client;
  if (!plan.worker.empty()) {
    target.name = absl::StrCat("llorch-worker ", plan.worker);
    client = MakeWorkerClient(plan.worker);
  } else if (!plan.scheduler.empty()) {
    target.name = absl::StrCat("llorch-scheduler ", plan.scheduler);
    client = MakeSchedulerClient(plan.scheduler, plan.model);
  } else {
    target.name = absl::StrCat("OpenAI API ", plan.openai);
    client = MakeOpenAiClient(plan.openai, plan.model, max_level);
  }
  if (!client.ok()) return client.status();
  target.client = *std::move(client);
  return target;
}

// --warmup requests one by one, not counted; `prompt_index` moves past them.
absl::Status WarmUp(const BenchTarget& target, const BenchPlan& plan, int* prompt_index) {
  for (int i = 0; i < absl::GetFlag(FLAGS_warmup); ++i) {
    RequestRecord r =
        target.client->Send(0, BenchPrompt((*prompt_index)++, plan.prompt_words), plan.shape);
    if (!r.ok) {
      return absl::UnavailableError(absl::StrCat(target.name, ": warm-up request failed: ", r.error,
                                                 r.message.empty() ? "" : ": ", r.message));
    }
  }
  return absl::OkStatus();
}

// Each level in turn, each with its own prompts from `prompt_index` on.
BenchResults RunLevels(BenchClient& client, const std::string& label, const BenchPlan& plan,
                       int prompt_index) {
  BenchResults results;
  for (int concurrency : plan.levels) {
    results.summaries.push_back(RunLevel(client, label, concurrency, plan.requests, prompt_index,
                                         plan.shape, plan.prompt_words, &results.all));
    prompt_index += plan.requests;
  }
  return results;
}

// The tables on stdout: the levels, the errors' first messages, and the
// ratios against each --compare series.
void PrintReport(const BenchPlan& plan, const std::string& label, const std::string& target,
                 const BenchResults& results) {
  std::cout << "bench-serve: " << label << (label == target ? "" : absl::StrCat(" (", target, ")"))
            << (plan.model.empty() ? "" : absl::StrCat(", model ", plan.model)) << "; prompts of "
            << plan.prompt_words << " words, " << plan.shape.max_tokens
            << " tokens generated per request (greedy, EOS ignored), " << plan.requests
            << " requests per level\n\n"
            << LevelTable(results.summaries);
  if (std::string notes = ErrorNotes(results.all); !notes.empty()) {
    std::cout << "\nerrors:\n" << notes;
  }
  for (const std::vector<LevelSummary>& other : plan.compared) {
    if (other.empty()) continue;
    std::cout << "\n" << label << " / " << other[0].label << ":\n\n"
              << CompareTable(results.summaries, other);
  }
  std::cout << std::flush;
}

// --csv and --plot (with the --compare series).
absl::Status WriteFiles(const BenchPlan& plan, const std::vector<LevelSummary>& summaries) {
  if (const std::string csv = absl::GetFlag(FLAGS_csv); !csv.empty()) {
    if (absl::Status s = WriteCsv(csv, summaries); !s.ok()) return s;
  }
  if (!plan.plot.empty()) {
    std::vector<std::vector<LevelSummary>> series = {summaries};
    series.insert(series.end(), plan.compared.begin(), plan.compared.end());
    const std::string title = absl::StrFormat(
        "llorch bench-serve: %d-word prompts, %d tokens per request, %d requests per level",
        plan.prompt_words, plan.shape.max_tokens, plan.requests);
    if (absl::Status s = Plot(plan.plot, title, series); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status BenchServe() {
  absl::StatusOr<BenchPlan> plan = ReadPlan();
  if (!plan.ok()) return plan.status();
  absl::StatusOr<BenchTarget> target = ConnectTarget(*plan);
  if (!target.ok()) return target.status();
  const std::string label =
      absl::GetFlag(FLAGS_label).empty() ? target->name : absl::GetFlag(FLAGS_label);

  int prompt_index = absl::GetFlag(FLAGS_first_prompt);
  if (absl::Status s = WarmUp(*target, *plan, &prompt_index); !s.ok()) return s;
  const BenchResults results = RunLevels(*target->client, label, *plan, prompt_index);

  PrintReport(*plan, label, target->name, results);
  if (absl::Status s = WriteFiles(*plan, results.summaries); !s.ok()) return s;
  if (std::all_of(results.all.begin(), results.all.end(),
                  [](const RequestRecord& r) { return !r.ok; })) {
    return absl::UnavailableError(absl::StrCat(target->name, ": every request failed"));
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
