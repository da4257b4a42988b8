// llorch-relay-bench: a BENCHMARK TOOL. Streams S concurrent calls, each
// thread running its share of R requests back to back with gRPC's sync API,
// either straight to a worker (llorch.worker.v1.Worker/Execute, a fresh
// job id per request) or through the scheduler (llorch.v1.Scheduler/
// Generate), and prints one JSON line:
//
//   api, streams, requests, tokens_per_request, tokens_total, seconds
//     wall time of the measured phase (all streams), after one warm-up
//     request per stream;
//   tokens_per_s        tokens_total / seconds (all streams together);
//   us_per_token        seconds * streams / tokens_total, in µs: the mean time
//                       one stream waits per token (with one stream, simply
//                       the time per token);
//   gap_us_p50/p99/mean gaps between consecutive Token events of one request,
//                       as the client reads them;
//   first_token_ms_mean from starting a call to reading its first token;
//   request_ms_mean     whole calls;
//   transit_us_p50/p99/mean (--stamp, stub only) from the stub writing a
//                       token to this client reading it;
//   errors              calls that ended with a status other than OK, or
//                       with fewer tokens than asked; first_error says why.
//
// Meant for tools/bench-scheduler.sh against llorch-stub-worker, whose
// tokens cost nothing, so that what is measured is the transport and the
// relay.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/cli/flags.h"
#include "llorch/v1/scheduler.grpc.pb.h"
#include "llorch/worker/v1/worker.grpc.pb.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "the worker's or the scheduler's address");
ABSL_FLAG(std::string, api, "scheduler",
          "worker (Worker/Execute, straight to a worker) or scheduler (Scheduler/Generate)");
ABSL_FLAG(std::string, model, "stub", "GenerateRequest.model (scheduler only)");
ABSL_FLAG(int, streams, 1, "concurrent streams (one thread each)");
ABSL_FLAG(int, requests, 0, "requests in all, shared among the streams (default: one per stream)");
ABSL_FLAG(int, tokens, 1000, "max_tokens of each request");
ABSL_FLAG(int, channels, 0,
          "gRPC channels (TCP connections) the streams share round robin (0: one per stream, "
          "as separate clients would)");
ABSL_FLAG(int, interval_us, 0,
          "llorch-stub-worker only: ask it (in the prompt) to pace tokens this many µs apart");
ABSL_FLAG(bool, stamp, false,
          "llorch-stub-worker only: ask it to put its clock in each token's text, and report "
          "each token's transit time (stub to this client) as transit_us_*");
ABSL_FLAG(bool, warmup, true, "one short request per stream before measuring");
ABSL_FLAG(std::string, label, "", "copied into the JSON line as `label`");

namespace llorch {
namespace {

using Clock = std::chrono::steady_clock;

// What one stream saw.
struct StreamResult {
  int64_t tokens = 0;
  int requests = 0;
  int errors = 0;
  std::string first_error;
  std::vector<float> gaps_us;         // between consecutive tokens of a request
  std::vector<float> transit_us;      // stamped tokens: sent by the stub to read here
  std::vector<double> first_token_s;  // per request
  std::vector<double> request_s;      // per request
};

struct Settings {
  bool scheduler = true;
  std::string model;
  int tokens = 0;
  std::string prompt = "bench";
  bool stamp = false;
};

// The stub's stamps: steady clock (CLOCK_MONOTONIC, one per machine) in ns.
int64_t Nanos(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

// Reads one call's stream to its end and records it (unless `record` is
// false: the warm-up).
template <typename Event>
void Consume(grpc::ClientReader<Event>* reader, Clock::time_point start, const Settings& settings,
             bool record, StreamResult* result) {
  Event event;
  int64_t tokens = 0;
  Clock::time_point last;
  while (reader->Read(&event)) {
    if (!event.has_token()) continue;
    const Clock::time_point now = Clock::now();
    if (record && settings.stamp) {
      int64_t sent_ns = 0;
      if (absl::SimpleAtoi(event.token().text(), &sent_ns)) {
        result->transit_us.push_back(static_cast<float>(Nanos(now) - sent_ns) / 1e3f);
      }
    }
    if (record) {
      if (tokens == 0) {
        result->first_token_s.push_back(std::chrono::duration<double>(now - start).count());
      } else {
        result->gaps_us.push_back(std::chrono::duration<float, std::micro>(now - last).count());
      }
    }
    last = now;
    ++tokens;
  }
  const grpc::Status status = reader->Finish();
  if (!record) return;
  result->request_s.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  result->tokens += tokens;
  ++result->requests;
  if (!status.ok() || tokens != settings.tokens) {
    ++result->errors;
    if (result->first_error.empty()) {
      result->first_error =
          status.ok() ? absl::StrCat("got ", tokens, " tokens of ", settings.tokens)
                      : absl::StrCat("status ", status.error_code(), ": ", status.error_message());
    }
  }
}

void RunOne(v1::Scheduler::Stub& stub, const Settings& settings, const std::string& job_id,
            bool record, StreamResult* result) {
  v1::GenerateRequest request;
  request.set_model(settings.model);
  request.set_job_id(job_id);
  request.set_text(settings.prompt);
  request.set_max_tokens(settings.tokens);
  grpc::ClientContext context;
  const Clock::time_point start = Clock::now();
  Consume(stub.Generate(&context, request).get(), start, settings, record, result);
}

void RunOne(worker::v1::Worker::Stub& stub, const Settings& settings, const std::string& job_id,
            bool record, StreamResult* result) {
  worker::v1::ExecuteRequest request;
  request.set_job_id(job_id);
  request.set_text(settings.prompt);
  request.set_max_tokens(settings.tokens);
  grpc::ClientContext context;
  const Clock::time_point start = Clock::now();
  Consume(stub.Execute(&context, request).get(), start, settings, record, result);
}

// Lets every stream finish its warm-up before the clock starts.
class StartGate {
 public:
  explicit StartGate(int parties) : waiting_(parties) {}
  // Each stream once; the last one in opens the gate and gets true.
  bool ArriveAndWait() {
    std::unique_lock<std::mutex> lock(mu_);
    if (--waiting_ == 0) {
      start_ = Clock::now();
      cv_.notify_all();
      return true;
    }
    cv_.wait(lock, [this] { return waiting_ == 0; });
    return false;
  }
  Clock::time_point start() {
    std::lock_guard<std::mutex> lock(mu_);
    return start_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int waiting_;
  Clock::time_point start_;
};

template <typename Stub>
void RunStream(Stub& stub, const Settings& settings, int stream, int requests, bool warmup,
               StartGate* gate, StreamResult* result) {
  // Unique per process run and stream: job ids must not collide with live ones.
  const std::string prefix = absl::StrCat("bench-", getpid(), "-", stream, "-");
  if (warmup) {
    Settings short_settings = settings;
    short_settings.tokens = std::min(settings.tokens, 16);
    RunOne(stub, short_settings, prefix + "warmup", /*record=*/false, result);
  }
  gate->ArriveAndWait();
  for (int i = 0; i < requests; ++i) {
    RunOne(stub, settings, absl::StrCat(prefix, i), /*record=*/true, result);
  }
}

double Percentile(std::vector<float>& values, double p) {
  if (values.empty()) return 0;
  const size_t k = std::min(values.size() - 1, static_cast<size_t>(p * (values.size() - 1) + 0.5));
  std::nth_element(values.begin(), values.begin() + k, values.end());
  return values[k];
}

double Mean(const std::vector<double>& values) {
  if (values.empty()) return 0;
  double sum = 0;
  for (double v : values) sum += v;
  return sum / values.size();
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target, int index) {
  grpc::ChannelArguments args;
  // A distinct argument keeps gRPC from sharing one connection among the
  // channels (subchannels are pooled by target and arguments).
  args.SetInt("llorch.relay_bench.channel", index);
  args.SetMaxReceiveMessageSize(-1);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

int Run() {
  const std::string api = absl::GetFlag(FLAGS_api);
  if (api != "worker" && api != "scheduler") {
    std::cerr << "llorch-relay-bench: --api must be worker or scheduler, got " << api << "\n";
    return 2;
  }
  Settings settings;
  settings.scheduler = api == "scheduler";
  settings.model = absl::GetFlag(FLAGS_model);
  settings.tokens = absl::GetFlag(FLAGS_tokens);
  settings.stamp = absl::GetFlag(FLAGS_stamp);
  if (absl::GetFlag(FLAGS_interval_us) > 0 || settings.stamp) {
    settings.prompt = "stub:";
    if (absl::GetFlag(FLAGS_interval_us) > 0) {
      absl::StrAppend(&settings.prompt, " interval_us=", absl::GetFlag(FLAGS_interval_us));
    }
    if (settings.stamp) absl::StrAppend(&settings.prompt, " stamp");
  }
  const int streams = absl::GetFlag(FLAGS_streams);
  const int requests = absl::GetFlag(FLAGS_requests) > 0 ? absl::GetFlag(FLAGS_requests) : streams;
  const int channels_flag = absl::GetFlag(FLAGS_channels);
  const int channel_count = channels_flag > 0 ? std::min(channels_flag, streams) : streams;
  const std::string target = absl::GetFlag(FLAGS_target);

  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < channel_count; ++i) {
    channels.push_back(MakeChannel(target, i));
    if (!channels.back()->WaitForConnected(std::chrono::system_clock::now() +
                                           std::chrono::seconds(10))) {
      std::cerr << "llorch-relay-bench: cannot connect to " << target << "\n";
      return 1;
    }
  }
  std::vector<std::unique_ptr<v1::Scheduler::Stub>> scheduler_stubs;
  std::vector<std::unique_ptr<worker::v1::Worker::Stub>> worker_stubs;
  for (const auto& channel : channels) {
    if (settings.scheduler) {
      scheduler_stubs.push_back(v1::Scheduler::NewStub(channel));
    } else {
      worker_stubs.push_back(worker::v1::Worker::NewStub(channel));
    }
  }

  std::vector<StreamResult> results(streams);
  StartGate gate(streams);
  std::vector<std::thread> threads;
  for (int s = 0; s < streams; ++s) {
    const int share = requests / streams + (s < requests % streams ? 1 : 0);
    threads.emplace_back([&, s, share] {
      if (settings.scheduler) {
        RunStream(*scheduler_stubs[s % channel_count], settings, s, share,
                  absl::GetFlag(FLAGS_warmup), &gate, &results[s]);
      } else {
        RunStream(*worker_stubs[s % channel_count], settings, s, share,
                  absl::GetFlag(FLAGS_warmup), &gate, &results[s]);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - gate.start()).count();

  int64_t tokens_total = 0;
  int done = 0;
  int errors = 0;
  std::string first_error;
  std::vector<float> gaps;
  std::vector<float> transit;
  std::vector<double> first_token_s;
  std::vector<double> request_s;
  for (StreamResult& r : results) {
    tokens_total += r.tokens;
    done += r.requests;
    errors += r.errors;
    if (first_error.empty()) first_error = r.first_error;
    gaps.insert(gaps.end(), r.gaps_us.begin(), r.gaps_us.end());
    transit.insert(transit.end(), r.transit_us.begin(), r.transit_us.end());
    first_token_s.insert(first_token_s.end(), r.first_token_s.begin(), r.first_token_s.end());
    request_s.insert(request_s.end(), r.request_s.begin(), r.request_s.end());
  }
  double gap_sum = 0;
  for (float g : gaps) gap_sum += g;

  nlohmann::ordered_json out;
  if (!absl::GetFlag(FLAGS_label).empty()) out["label"] = absl::GetFlag(FLAGS_label);
  out["api"] = api;
  out["target"] = target;
  out["streams"] = streams;
  out["channels"] = channel_count;
  out["requests"] = done;
  out["tokens_per_request"] = settings.tokens;
  out["tokens_total"] = tokens_total;
  out["seconds"] = seconds;
  out["tokens_per_s"] = seconds > 0 ? tokens_total / seconds : 0.0;
  out["us_per_token"] = tokens_total > 0 ? seconds * 1e6 * streams / tokens_total : 0.0;
  out["gap_us_mean"] = gaps.empty() ? 0.0 : gap_sum / gaps.size();
  out["gap_us_p50"] = Percentile(gaps, 0.50);
  out["gap_us_p99"] = Percentile(gaps, 0.99);
  if (settings.stamp) {
    double transit_sum = 0;
    for (float t : transit) transit_sum += t;
    out["transit_us_mean"] = transit.empty() ? 0.0 : transit_sum / transit.size();
    out["transit_us_p50"] = Percentile(transit, 0.50);
    out["transit_us_p99"] = Percentile(transit, 0.99);
  }
  if (absl::GetFlag(FLAGS_interval_us) > 0) out["interval_us"] = absl::GetFlag(FLAGS_interval_us);
  out["first_token_ms_mean"] = Mean(first_token_s) * 1e3;
  out["request_ms_mean"] = Mean(request_s) * 1e3;
  out["errors"] = errors;
  if (!first_error.empty()) out["first_error"] = first_error;
  std::cout << out.dump() << std::endl;
  return errors == 0 ? 0 : 1;
}

cli::CommandSpec CommandLine() {
  cli::CommandSpec command;
  command.program = "llorch-relay-bench";
  command.summary =
      "A benchmark tool: S concurrent streams run R requests of T tokens against a worker "
      "(Execute) or the scheduler (Generate) with gRPC's sync API and print one JSON line: "
      "tokens/s, mean µs per token per stream (seconds * streams / tokens), inter-token gaps "
      "p50/p99, errors.";
  command.usage =
      "llorch-relay-bench --target HOST:PORT --api worker|scheduler [--model NAME]\n"
      "       [--streams S] [--requests R] [--tokens T]";
  command.spelling = cli::Spelling::kUnderscores;
  command.flags = cli::FlagsOf(
      "tools/bench/relay_bench.cc",
      {cli::FlagSpec("target").Value("HOST:PORT"), cli::FlagSpec("api").Value("worker|scheduler"),
       cli::FlagSpec("model").Value("NAME"), cli::FlagSpec("streams").AtLeast(1).AtMost(4096),
       cli::FlagSpec("requests").AtLeast(0), cli::FlagSpec("tokens").AtLeast(1),
       cli::FlagSpec("channels").AtLeast(0), cli::FlagSpec("interval_us").AtLeast(0),
       cli::FlagSpec("stamp"), cli::FlagSpec("warmup"),
       cli::FlagSpec("label").Value("TEXT")});
  return command;
}

}  // namespace
}  // namespace llorch

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (int code = llorch::cli::ParseFlagsForMain(llorch::CommandLine(), args); code >= 0) {
    return code;
  }
  return llorch::Run();
}
