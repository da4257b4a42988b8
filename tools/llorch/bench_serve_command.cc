// llorch bench-serve: aggregate generated tokens per second of a running
// llorch-worker with N streams in flight, each stream issuing requests back
// to back, against one stream in the same run. A Markdown table on stdout.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "tools/llorch/common.h"

ABSL_FLAG(std::string, streams, "1,2,4,8,16", "the numbers of concurrent streams to measure");
// `gen_tokens` is bench's flag too, with another default.
ABSL_FLAG(int32_t, bench_serve_gen_tokens, 64, "tokens generated per request");
ABSL_FLAG(int32_t, requests, 2, "requests per stream");

namespace llorch {
namespace tool {
namespace {

constexpr char kUsage[] = "llorch bench-serve --worker HOST:PORT [flags]";

const std::vector<std::string>& Prompts() {
  static const std::vector<std::string> prompts = {
      "Write a short story about a lighthouse keeper.", "Explain how a bicycle works.",
      "List some facts about the moon.", "Describe a busy market in the morning."};
  return prompts;
}

// What `n` concurrent streams achieved.
struct Round {
  double seconds = 0;
  int64_t tokens = 0;
  int failures = 0;
  double ttft_ms_sum = 0;
  int ttft_count = 0;
};

// One stream: `requests` greedy requests back to back.
void Stream(worker::v1::Worker::Stub* stub, int t, std::mutex* mu, Round* round) {
  const int32_t requests = absl::GetFlag(FLAGS_requests);
  for (int r = 0; r < requests; ++r) {
    GenerationParams params;
    params.sampling.temperature = 0;
    params.max_tokens = absl::GetFlag(FLAGS_bench_serve_gen_tokens);
    params.ignore_eos = true;
    worker::v1::ExecuteRequest request =
        ToExecuteRequest(absl::StrCat(NewJobId(), "-", t, "-", r), params);
    request.set_text(Prompts()[(t + r) % Prompts().size()]);
    grpc::ClientContext context;
    ExecuteResult result = ExecuteToEnd(*stub, request, &context);
    std::lock_guard<std::mutex> lock(*mu);
    if (!result.status.ok() || !result.finished) {
      round->failures++;
      continue;
    }
    round->tokens += result.finished->completion_tokens();
    round->ttft_ms_sum += result.finished->ttft_seconds() * 1000;
    round->ttft_count++;
  }
}

Round MeasureRound(worker::v1::Worker::Stub* stub, int n) {
  Round round;
  std::mutex mu;
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < n; ++t) threads.emplace_back(Stream, stub, t, &mu, &round);
  for (std::thread& t : threads) t.join();
  round.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return round;
}

absl::Status PrintInfo(worker::v1::Worker::Stub* stub, const std::string& address) {
  grpc::ClientContext context;
  worker::v1::InfoResponse info;
  grpc::Status status = stub->Info(&context, worker::v1::InfoRequest(), &info);
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat(address, ": ", status.error_message()));
  }
  std::cout << "model " << info.model() << " (" << info.dtype() << ") on " << info.device()
            << ", max batch " << info.max_batch() << ", "
            << absl::GetFlag(FLAGS_bench_serve_gen_tokens) << " generated tokens per request, "
            << absl::GetFlag(FLAGS_requests) << " requests per stream\n\n";
  return absl::OkStatus();
}

absl::Status BenchServe() {
  const std::string address = absl::GetFlag(FLAGS_worker);
  if (address.empty()) return absl::InvalidArgumentError("--worker is required");
  absl::StatusOr<std::vector<int32_t>> streams =
      ParseIds(absl::GetFlag(FLAGS_streams), "--streams");
  if (!streams.ok()) return streams.status();
  for (int32_t n : *streams) {
    if (n < 1) return absl::InvalidArgumentError(absl::StrCat("--streams: ", n, " is not >= 1"));
  }
  std::unique_ptr<worker::v1::Worker::Stub> stub = WorkerStub(address);
  if (absl::Status s = PrintInfo(stub.get(), address); !s.ok()) return s;
  std::cout << "| streams | aggregate tok/s | per-stream tok/s | mean TTFT ms | vs 1 stream |\n"
               "|--:|--:|--:|--:|--:|\n";
  double baseline = 0;
  for (int n : *streams) {
    const Round round = MeasureRound(stub.get(), n);
    if (round.failures > 0) {
      return absl::InternalError(absl::StrCat(round.failures, " requests failed"));
    }
    const double rate = round.tokens / round.seconds;
    if (baseline == 0) baseline = rate;
    std::printf("| %d | %.1f | %.1f | %.0f | %.2fx |\n", n, rate, rate / n,
                round.ttft_count ? round.ttft_ms_sum / round.ttft_count : 0.0, rate / baseline);
    std::fflush(stdout);
  }
  return absl::OkStatus();
}

}  // namespace

cli::Subcommand BenchServeCommand() {
  return MakeSubcommand(
      "bench-serve", "aggregate tok/s of a running llorch-worker per number of concurrent streams",
      kUsage,
      {{WorkerFlag(), cli::FlagSpec("streams").Value("N,N,..."),
        cli::FlagSpec("gen_tokens").Reads("bench_serve_gen_tokens").AtLeast(1),
        cli::FlagSpec("requests").AtLeast(1)}},
      &BenchServe);
}

}  // namespace tool
}  // namespace llorch
