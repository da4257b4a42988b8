// llorch soak: sends --requests requests from the soak mix
// (tools/llorch/soak_workload.h: prompt kinds and lengths, sampling
// settings, cancels, dropped streams, deadlines) through a running
// llorch-scheduler, --concurrency at a time, in rounds of --checkpoint_every,
// after --warmup_requests of the mix's largest shape. After the warm-up and
// after each round, with nothing in flight and every worker's KV cache empty,
// it reads the /metrics of each process named by --watch: resident memory,
// malloc's bytes in use and open descriptors. Idle heap bytes are what a
// per-request leak grows (resident memory also moves with fragmentation and
// the KV pool's first touches, and is reported beside). The last line is the
// summary; the exit status is non-zero when a request was lost or failed, KV
// was left in use, or after the first --warmup_fraction of requests a
// process's heap grew faster than --max_heap_slope KiB per request or it
// gained more than --max_fd_growth descriptors.
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "llorch/v1/scheduler.grpc.pb.h"
#include "tools/llorch/common.h"
#include "tools/llorch/soak_workload.h"

ABSL_FLAG(std::string, soak_model, "", "the model's name on the scheduler (required)");
ABSL_FLAG(int32_t, soak_requests, 300, "requests to send");
ABSL_FLAG(int32_t, soak_concurrency, 8, "requests in flight");
ABSL_FLAG(double, duration, 0, "stop starting requests after this many seconds (0: no limit)");
ABSL_FLAG(int32_t, soak_max_tokens, 32, "largest max_tokens of a request");
ABSL_FLAG(int32_t, max_prompt_words, 300, "the longest text prompt, in words (about tokens)");
ABSL_FLAG(uint64_t, soak_seed, 1, "the mix's seed: the same seed sends the same requests");
ABSL_FLAG(llorch::cli::StringList, watch, {},
          "NAME=URL of a process's /metrics to read at each checkpoint (repeatable)");
ABSL_FLAG(int32_t, checkpoint_every, 0,
          "requests per round; memory is read when a round has ended (0: a tenth of --requests)");
ABSL_FLAG(double, max_heap_slope, 1.0,
          "KiB of heap per request it served that a watched process may gain after the warm-up "
          "(the median over rounds)");
ABSL_FLAG(int32_t, max_fd_growth, 8,
          "open descriptors a watched process may gain from the warm-up to the end");
ABSL_FLAG(double, warmup_fraction, 0.25, "share of requests before the slopes are fitted");
ABSL_FLAG(int32_t, warmup_requests, -1,
          "requests of the mix's largest shape sent before the counted ones and the first memory "
          "reading (-1: with --watch twice --concurrency, at most 16; else none)");
ABSL_FLAG(std::string, memory_csv, "", "write the checkpoints' readings here (CSV)");
ABSL_FLAG(std::string, allow_codes, "",
          "gRPC code names (comma-separated) that count as clear answers, not failures: "
          "UNAVAILABLE while a fault test kills workers, RESOURCE_EXHAUSTED in a flood");
ABSL_FLAG(double, soak_timeout, 300, "seconds after which a request counts as hung (lost)");

namespace llorch {
namespace tool {
namespace {

namespace api = ::llorch::v1;
using Clock = std::chrono::steady_clock;

constexpr char kUsage[] =
    "llorch soak --scheduler HOST:PORT --model NAME [--requests N] [--concurrency C]\n"
    "            [--duration S] [--watch NAME=http://HOST:PORT/metrics ...]";

struct Watched {
  std::string name;
  std::string url;  // http://HOST:PORT/metrics
};

absl::StatusOr<std::vector<Watched>> ParseWatch() {
  std::vector<Watched> watched;
  for (const std::string& item : absl::GetFlag(FLAGS_watch).values) {
    std::vector<std::string> parts = absl::StrSplit(item, absl::MaxSplits('=', 1));
    if (parts.size() != 2 || !absl::StartsWith(parts[1], "http://")) {
      return absl::InvalidArgumentError(
          absl::StrCat("--watch wants NAME=http://HOST:PORT/metrics, got '", item, "'"));
    }
    watched.push_back({parts[0], parts[1]});
  }
  return watched;
}

// What a checkpoint reads of one process; -1: not read.
struct Reading {
  double resident_bytes = -1;
  double heap_bytes = -1;
  double open_fds = -1;
  double threads = -1;
  double requests = 0;  // the server's own count of requests it has seen
};

// The process metrics of a /metrics page (text format, no labels on them).
absl::StatusOr<Reading> ReadMetrics(const std::string& url) {
  const size_t path_at = url.find('/', std::string("http://").size());
  httplib::Client client(url.substr(0, path_at));
  client.set_connection_timeout(5);
  client.set_read_timeout(10);
  httplib::Result result = client.Get(path_at == std::string::npos ? "/" : url.substr(path_at));
  if (!result || result->status != 200) {
    return absl::UnavailableError(absl::StrCat("cannot read ", url));
  }
  Reading reading;
  const std::pair<const char*, double*> wanted[] = {
      {"process_resident_memory_bytes ", &reading.resident_bytes},
      {"llorch_process_heap_bytes ", &reading.heap_bytes},
      {"process_open_fds ", &reading.open_fds},
      {"process_threads ", &reading.threads}};
  for (absl::string_view line : absl::StrSplit(result->body, '\n')) {
    for (const auto& [prefix, value] : wanted) {
      if (absl::ConsumePrefix(&line, prefix)) absl::SimpleAtod(line, value);
    }
    // llorch_worker_requests_total{outcome="eos"} 12, the scheduler's alike.
    if (absl::StartsWith(line, "llorch_worker_requests_total{") ||
        absl::StartsWith(line, "llorch_scheduler_requests_total{")) {
      double count = 0;
      if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &count)) reading.requests += count;
    }
  }
  if (reading.heap_bytes < 0 || reading.open_fds < 0) {
    return absl::FailedPreconditionError(absl::StrCat(url, " has no process metrics"));
  }
  return reading;
}

struct Checkpoint {
  double seconds = 0;
  int64_t requests_done = 0;
  std::vector<Reading> readings;  // per watched process
};

// Growth of `value` per request the process itself saw, after the warm-up:
// the median over consecutive checkpoints (a one-off step, such as a new
// thread's malloc cache, moves one round only; a leak moves every round).
// nullopt with fewer than 2 rounds to compare.
std::optional<double> GrowthPerRequest(const std::vector<Checkpoint>& checkpoints,
                                       size_t process, double Reading::*value,
                                       int64_t from_requests) {
  std::vector<double> rates;
  const Reading* previous = nullptr;
  for (const Checkpoint& c : checkpoints) {
    if (c.requests_done < from_requests) continue;
    const Reading& r = c.readings[process];
    if (previous != nullptr && r.requests > previous->requests) {
      rates.push_back((r.*value - previous->*value) / (r.requests - previous->requests));
    }
    previous = &r;
  }
  if (rates.size() < 2) return std::nullopt;
  std::sort(rates.begin(), rates.end());
  const size_t mid = rates.size() / 2;
  return rates.size() % 2 ? rates[mid] : (rates[mid - 1] + rates[mid]) / 2;
}

struct Tally {
  std::mutex mu;
  std::map<std::string, int64_t> expected;  // "ok", "cancelled", ...
  std::map<std::string, int64_t> failures;  // by code
  std::map<std::string, int64_t> allowed;   // failures by a code of --allow_codes
  std::map<std::string, double> slowest;    // seconds to the slowest answer of each code
  std::map<std::string, int64_t> lost;      // by reason
  std::vector<std::string> examples;        // the first few failures and losses, in words
  int64_t tokens = 0;
};

SoakOutcome Send(const Connection& connection, api::Scheduler::Stub& stub, const SoakCase& c) {
  grpc::ClientContext context;
  const double limit = absl::GetFlag(FLAGS_soak_timeout);
  connection.Prepare(&context, c.action == SoakAction::kDeadline ? c.deadline_ms / 1000.0 : limit);
  SoakOutcome outcome;
  const Clock::time_point sent = Clock::now();
  std::unique_ptr<grpc::ClientReader<api::GenerateResponse>> reader =
      stub.Generate(&context, c.request);
  bool acted = false;
  auto act = [&] {
    acted = true;
    if (c.action == SoakAction::kDisconnect) {
      context.TryCancel();
    } else if (c.action == SoakAction::kCancelRpc) {
      grpc::ClientContext cancel_context;
      connection.Prepare(&cancel_context, 10);
      api::CancelRequest cancel;
      cancel.set_job_id(c.request.job_id());
      api::CancelResponse ignored;
      stub.Cancel(&cancel_context, cancel, &ignored);  // a late cancel is fine
    }
  };
  const bool acts = c.action == SoakAction::kDisconnect || c.action == SoakAction::kCancelRpc;
  if (acts && c.act_after_tokens == 0) act();
  api::GenerateResponse event;
  while (reader->Read(&event)) {
    if (event.has_started()) outcome.started = true;
    if (event.has_finished()) outcome.finished = event.finished();
    if (event.has_token() && ++outcome.tokens >= c.act_after_tokens && acts && !acted) act();
  }
  const grpc::Status status = reader->Finish();
  outcome.code = status.error_code();
  outcome.message = status.error_message();
  outcome.seconds = std::chrono::duration<double>(Clock::now() - sent).count();
  outcome.safety_deadline_hit =
      c.action != SoakAction::kDeadline && outcome.code == grpc::StatusCode::DEADLINE_EXCEEDED;
  return outcome;
}

void Record(const SoakCase& c, const SoakOutcome& o, const std::set<std::string>& allowed,
            Tally* tally) {
  const SoakVerdict verdict = JudgeSoak(c, o);
  std::lock_guard<std::mutex> lock(tally->mu);
  tally->tokens += o.tokens;
  if (verdict.kind == SoakVerdict::Kind::kExpected) {
    ++tally->expected[verdict.label];
    return;
  }
  if (verdict.kind == SoakVerdict::Kind::kFailure) {
    double& slowest = tally->slowest[verdict.label];
    slowest = std::max(slowest, o.seconds);
    if (allowed.count(verdict.label) > 0) {
      ++tally->allowed[verdict.label];
      return;
    }
  }
  ++(verdict.kind == SoakVerdict::Kind::kLost ? tally->lost : tally->failures)[verdict.label];
  if (tally->examples.size() < 10) {
    tally->examples.push_back(absl::StrCat(c.request.job_id(), " (", SoakActionName(c.action),
                                           "): ", verdict.label, ": ", o.message));
  }
}

// "ok 12, cancelled 3"; with `slowest`, "UNAVAILABLE 3 (slowest 0.02 s)".
std::string Counts(const std::map<std::string, int64_t>& counts,
                   const std::map<std::string, double>* slowest = nullptr) {
  if (counts.empty()) return "0";
  std::vector<std::string> parts;
  for (const auto& [label, count] : counts) {
    parts.push_back(absl::StrCat(label, " ", count));
    if (slowest != nullptr && slowest->count(label) > 0) {
      absl::StrAppend(&parts.back(), absl::StrFormat(" (slowest %.2f s)", slowest->at(label)));
    }
  }
  return absl::StrJoin(parts, ", ");
}

// Sends the cases make(begin) .. make(end - 1) from `concurrency` clients
// while keep_going(), passing each outcome to `record`; returns how many were
// sent.
int64_t SendRange(const Connection& connection, api::Scheduler::Stub& stub, int concurrency,
                  int64_t begin, int64_t end, const std::function<SoakCase(int64_t)>& make,
                  const std::function<bool()>& keep_going,
                  const std::function<void(const SoakCase&, const SoakOutcome&)>& record) {
  std::atomic<int64_t> next{begin}, sent{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < concurrency; ++i) {
    clients.emplace_back([&] {
      for (int64_t index; (index = next++) < end && keep_going();) {
        const SoakCase c = make(index);
        const SoakOutcome outcome = Send(connection, stub, c);
        record(c, outcome);
        ++sent;
        // As a client would, back off before trying a server that is not there.
        if (outcome.code == grpc::StatusCode::UNAVAILABLE) {
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
        }
      }
    });
  }
  for (std::thread& t : clients) t.join();
  return sent.load();
}

// The warm-up (MakeWarmUpCase), judged as the mix's requests are (a code of
// --allow_codes is no failure) but counted apart from them. Skipped when no
// process's memory is read (no --watch).
absl::Status WarmUp(const Connection& connection, api::Scheduler::Stub& stub, const SoakMix& mix,
                    int concurrency, bool watching, const std::set<std::string>& allowed_codes) {
  int64_t count = absl::GetFlag(FLAGS_warmup_requests);
  if (count < 0) count = watching ? std::min<int64_t>(2 * int64_t{concurrency}, 16) : 0;
  if (count == 0) return absl::OkStatus();
  Tally tally;
  SendRange(
      connection, stub, concurrency, 0, count,
      [&](int64_t index) { return MakeWarmUpCase(mix, index); }, [] { return true; },
      [&](const SoakCase& c, const SoakOutcome& outcome) {
        Record(c, outcome, allowed_codes, &tally);
      });
  std::fprintf(stderr, "soak: warm-up of %lld requests: %s; allowed codes: %s\n",
               static_cast<long long>(count), Counts(tally.expected).c_str(),
               Counts(tally.allowed).c_str());
  if (!tally.failures.empty() || !tally.lost.empty()) {
    return absl::UnavailableError(absl::StrCat(
        "soak warm-up failed: failures ", Counts(tally.failures), "; lost ", Counts(tally.lost),
        tally.examples.empty() ? "" : absl::StrCat("; ", tally.examples.front())));
  }
  return absl::OkStatus();
}

// After a round: every worker that is up idle with its KV cache empty (the
// scheduler's view is refreshed by its probes). Returns the bytes still in use.
int64_t WaitKvEmpty(const Connection& connection, api::Scheduler::Stub& stub, std::string* detail) {
  const Clock::time_point deadline = Clock::now() + std::chrono::seconds(15);
  while (true) {
    grpc::ClientContext context;
    connection.Prepare(&context, 5);
    api::ListWorkersResponse response;
    const grpc::Status status = stub.ListWorkers(&context, api::ListWorkersRequest(), &response);
    int64_t used = -1;
    if (status.ok()) {
      used = 0;
      int busy = 0;
      std::vector<std::string> parts;
      for (const api::WorkerStatus& w : response.workers()) {
        if (w.state() != api::WORKER_STATE_UP) {  // its KV went with it; its figures are stale
          parts.push_back(absl::StrCat(w.address(), " not up"));
          continue;
        }
        used += w.kv_used_bytes();
        busy += w.active_jobs() + w.waiting_jobs() + w.dispatched_jobs();
        parts.push_back(absl::StrCat(w.address(), " ", w.kv_used_bytes(), " B"));
      }
      *detail = absl::StrCat(response.workers_size(), " workers (", absl::StrJoin(parts, ", "), ")");
      if (used == 0 && busy == 0) return 0;
    } else {
      *detail = absl::StrCat("ListWorkers: ", status.error_message());
    }
    if (Clock::now() > deadline) return std::max<int64_t>(used, 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

absl::Status WriteCsv(const std::string& path, const std::vector<Watched>& watched,
                      const std::vector<Checkpoint>& checkpoints) {
  std::ofstream out(path);
  out << "seconds,requests";
  for (const Watched& w : watched) {
    out << absl::StrFormat(",%s_requests,%s_rss_bytes,%s_heap_bytes,%s_fds", w.name, w.name,
                           w.name, w.name);
  }
  out << "\n";
  for (const Checkpoint& c : checkpoints) {
    out << absl::StrFormat("%.2f,%d", c.seconds, c.requests_done);
    for (const Reading& r : c.readings) {
      out << absl::StrFormat(",%.0f,%.0f,%.0f,%.0f", r.requests, r.resident_bytes, r.heap_bytes,
                             r.open_fds);
    }
    out << "\n";
  }
  return out ? absl::OkStatus() : absl::InternalError(absl::StrCat("cannot write ", path));
}

// Memory lines per process; the names whose heap or descriptors grew too much.
std::vector<std::string> ReportMemory(const std::vector<Watched>& watched,
                                      const std::vector<Checkpoint>& checkpoints, int64_t warmup,
                                      std::vector<std::string>* slopes) {
  const double max_heap_slope = absl::GetFlag(FLAGS_max_heap_slope);
  const int max_fd_growth = absl::GetFlag(FLAGS_max_fd_growth);
  std::vector<std::string> growing;
  const Checkpoint* base = nullptr;  // the first checkpoint after the warm-up
  for (const Checkpoint& c : checkpoints) {
    if (c.requests_done >= warmup) {
      base = &c;
      break;
    }
  }
  for (size_t p = 0; p < watched.size(); ++p) {
    const std::optional<double> heap = GrowthPerRequest(checkpoints, p, &Reading::heap_bytes, warmup);
    const std::optional<double> rss =
        GrowthPerRequest(checkpoints, p, &Reading::resident_bytes, warmup);
    const Reading& first = checkpoints.front().readings[p];
    const Reading& last = checkpoints.back().readings[p];
    const double fd_growth = base ? last.open_fds - base->readings[p].open_fds : 0;
    auto kib = [](std::optional<double> bytes) {
      return bytes ? absl::StrFormat("%.2f", *bytes / 1024) : std::string("n/a");
    };
    std::printf("%s: resident %.1f -> %.1f MiB (slope %s KiB/request), heap %.1f -> %.1f MiB "
                "(slope %s KiB/request), requests %.0f, open fds %.0f -> %.0f, threads %.0f -> %.0f\n",
                watched[p].name.c_str(), first.resident_bytes / (1 << 20),
                last.resident_bytes / (1 << 20), kib(rss).c_str(), first.heap_bytes / (1 << 20),
                last.heap_bytes / (1 << 20), kib(heap).c_str(), last.requests, first.open_fds, last.open_fds,
                first.threads, last.threads);
    slopes->push_back(absl::StrCat(watched[p].name, " ", kib(heap)));
    if ((heap && *heap / 1024 > max_heap_slope) || fd_growth > max_fd_growth) {
      growing.push_back(watched[p].name);
    }
  }
  return growing;
}

struct RunResult {
  int64_t done = 0;
  double elapsed = 0;
  int64_t kv_left = 0;
  std::string kv_detail;
  std::vector<Checkpoint> checkpoints;
};

// Prints the run and returns its verdict.
absl::Status Report(const Tally& tally, const RunResult& run, const std::vector<Watched>& watched) {
  const int64_t warmup = static_cast<int64_t>(run.done * absl::GetFlag(FLAGS_warmup_fraction));
  std::printf("requests: %lld ended in %.1f s (%.2f req/s, %lld tokens)\n",
              static_cast<long long>(run.done), run.elapsed, run.done / run.elapsed,
              static_cast<long long>(tally.tokens));
  std::printf("as expected: %s\n", Counts(tally.expected).c_str());
  std::printf("failures by code: %s\n", Counts(tally.failures, &tally.slowest).c_str());
  std::printf("allowed codes (--allow_codes): %s\n", Counts(tally.allowed, &tally.slowest).c_str());
  std::printf("lost: %s\n", Counts(tally.lost).c_str());
  for (const std::string& example : tally.examples) std::printf("  %s\n", example.c_str());
  std::printf("KV in use after each round: %lld B at most; at the end %s\n",
              static_cast<long long>(run.kv_left), run.kv_detail.c_str());
  std::vector<std::string> slopes;
  const std::vector<std::string> growing =
      watched.empty() ? std::vector<std::string>()
                      : ReportMemory(watched, run.checkpoints, warmup, &slopes);
  int64_t lost = 0, failed = 0, allowed = 0;
  for (const auto& [label, count] : tally.allowed) allowed += count;
  for (const auto& [label, count] : tally.lost) lost += count;
  for (const auto& [label, count] : tally.failures) failed += count;
  const bool pass = lost == 0 && failed == 0 && run.kv_left == 0 && growing.empty();
  std::printf("soak %s: %lld requests, %.2f req/s, allowed %lld, failures %lld, lost %lld, "
              "KV left %lld B, "
              "heap growth KiB per request served, after %lld [%s] (bound %.1f)\n",
              pass ? "PASS" : "FAIL", static_cast<long long>(run.done), run.done / run.elapsed,
              static_cast<long long>(allowed), static_cast<long long>(failed), static_cast<long long>(lost),
              static_cast<long long>(run.kv_left), static_cast<long long>(warmup),
              absl::StrJoin(slopes, ", ").c_str(), absl::GetFlag(FLAGS_max_heap_slope));
  std::fflush(stdout);
  if (pass) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(
      "soak failed:", lost ? " requests lost;" : "", failed ? " requests failed;" : "",
      run.kv_left ? " KV left in use;" : "",
      growing.empty() ? "" : absl::StrCat(" memory grows in ", absl::StrJoin(growing, ", "))));
}

absl::Status Soak() {
  absl::StatusOr<Connection> connection = ConnectScheduler();
  if (!connection.ok()) return connection.status();
  const std::string model = absl::GetFlag(FLAGS_soak_model);
  if (model.empty()) return absl::InvalidArgumentError("--model is required");
  absl::StatusOr<std::vector<Watched>> watched = ParseWatch();
  if (!watched.ok()) return watched.status();
  const int64_t total = absl::GetFlag(FLAGS_soak_requests);
  const int concurrency = absl::GetFlag(FLAGS_soak_concurrency);
  const double duration = absl::GetFlag(FLAGS_duration);
  SoakMix mix;
  mix.model = model;
  mix.seed = absl::GetFlag(FLAGS_soak_seed);
  mix.max_tokens = absl::GetFlag(FLAGS_soak_max_tokens);
  mix.max_prompt_words = absl::GetFlag(FLAGS_max_prompt_words);
  int64_t round = absl::GetFlag(FLAGS_checkpoint_every);
  if (round <= 0) round = std::max<int64_t>(1, total / 10);
  std::unique_ptr<api::Scheduler::Stub> stub = api::Scheduler::NewStub(connection->channel);
  std::set<std::string> allowed_codes;
  for (absl::string_view code :
       absl::StrSplit(absl::GetFlag(FLAGS_allow_codes), ',', absl::SkipEmpty())) {
    allowed_codes.insert(std::string(code));
  }

  const Clock::time_point start = Clock::now();
  auto seconds = [&start] { return std::chrono::duration<double>(Clock::now() - start).count(); };
  Tally tally;
  RunResult run;
  // A checkpoint: nothing in flight, KV empty, then every process's metrics.
  auto checkpoint = [&]() -> absl::Status {
    run.kv_left = std::max(run.kv_left, WaitKvEmpty(*connection, *stub, &run.kv_detail));
    Checkpoint c{seconds(), run.done, {}};
    for (const Watched& w : *watched) {
      absl::StatusOr<Reading> reading = ReadMetrics(w.url);
      if (!reading.ok()) return reading.status();
      c.readings.push_back(*reading);
    }
    run.checkpoints.push_back(std::move(c));
    return absl::OkStatus();
  };
  if (absl::Status s = WarmUp(*connection, *stub, mix, concurrency, !watched->empty(),
                             allowed_codes);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = checkpoint(); !s.ok()) return s;
  while (run.done < total && (duration <= 0 || seconds() < duration)) {
    const int64_t end = std::min(total, run.done + round);
    run.done += SendRange(
        *connection, *stub, concurrency, run.done, end,
        [&](int64_t index) { return MakeSoakCase(mix, index); },
        [&] { return duration <= 0 || seconds() < duration; },
        [&](const SoakCase& c, const SoakOutcome& outcome) {
          Record(c, outcome, allowed_codes, &tally);
        });
    if (absl::Status s = checkpoint(); !s.ok()) return s;
    std::fprintf(stderr, "soak: %lld/%lld requests, %.1f req/s\n",
                 static_cast<long long>(run.done), static_cast<long long>(total),
                 run.done / seconds());
  }
  run.elapsed = seconds();
  if (const std::string csv = absl::GetFlag(FLAGS_memory_csv); !csv.empty()) {
    if (absl::Status s = WriteCsv(csv, *watched, run.checkpoints); !s.ok()) return s;
  }
  return Report(tally, run, *watched);
}

}  // namespace

cli::Subcommand SoakCommand() {
  return MakeSubcommand(
      "soak", "a long mixed load with cancels and drops through a scheduler; lost requests, "
      "KV left in use and memory growth fail it",
      kUsage,
      {{SchedulerFlag(), cli::FlagSpec("model").Reads("soak_model").Value("NAME")},
       ConnectionFlags(),
       {cli::FlagSpec("requests").Reads("soak_requests").AtLeast(1),
        cli::FlagSpec("concurrency").Reads("soak_concurrency").AtLeast(1).AtMost(1024),
        cli::FlagSpec("duration").Value("SECONDS").AtLeast(0),
        cli::FlagSpec("max_tokens").Reads("soak_max_tokens").AtLeast(1),
        cli::FlagSpec("max_prompt_words").AtLeast(1),
        cli::FlagSpec("seed").Reads("soak_seed"),
        cli::FlagSpec("checkpoint_every").AtLeast(0),
        cli::FlagSpec("watch").Value("NAME=URL"),
        cli::FlagSpec("max_heap_slope").Value("KIB").AtLeast(0),
        cli::FlagSpec("max_fd_growth").AtLeast(0),
        cli::FlagSpec("warmup_requests").AtLeast(-1),
        cli::FlagSpec("warmup_fraction").AtLeast(0).AtMost(0.9),
        cli::FlagSpec("memory_csv").Value("FILE"),
        cli::FlagSpec("allow_codes").Value("CODE,..."),
        cli::FlagSpec("timeout").Reads("soak_timeout").Value("SECONDS").Above(0)}},
      &Soak);
}

}  // namespace tool
}  // namespace llorch
