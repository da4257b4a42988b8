// llorch-stub-worker: a BENCHMARK TOOL, not a product. It speaks
// llorch.worker.v1.Worker like llorch-worker but owns no model: Execute
// answers Started, then max_tokens Token events written as fast as the
// caller reads them (one write in flight, the next from OnWriteDone; or
// paced, see Directives), then Finished{LENGTH}. It exists to measure what
// sits in front of a worker (the scheduler's relay,
// tools/bench-scheduler.sh) without the cost of a model hiding it. Its
// tokens mean nothing; its Info is made up (the model name is --model_name,
// the context 1<<20 tokens, no KV cache).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <grpcpp/alarm.h>
#include <grpcpp/grpcpp.h>

#include "absl/container/flat_hash_map.h"
#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "common/cli/flags.h"
#include "llorch/worker/v1/worker.grpc.pb.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:0", "gRPC address host:port (port 0 picks one)");
ABSL_FLAG(std::string, model_name, "stub", "the model name Info reports");
ABSL_FLAG(int, max_batch, 64, "the max_batch Info reports (the scheduler's slots per worker)");
ABSL_FLAG(std::string, worker_id, "", "the worker_id Info reports (default: stub-PID)");

namespace llorch {
namespace {

namespace wv1 = worker::v1;
using Clock = std::chrono::steady_clock;

constexpr int32_t kDefaultMaxTokens = 128;  // as the worker's
constexpr int64_t kContextLength = int64_t{1} << 20;

void Log(const std::string& line) { std::cerr << "stub-worker: " << line << std::endl; }

// Live jobs by id: Cancel reaches them, a second live job with one id is
// refused, and Info counts them.
class JobTable {
 public:
  // False when `id` is live already.
  bool Add(const std::string& id, std::shared_ptr<std::atomic<bool>> cancel) {
    std::lock_guard<std::mutex> lock(mu_);
    return jobs_.emplace(id, std::move(cancel)).second;
  }
  void Remove(const std::string& id) {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.erase(id);
  }
  void Cancel(const std::string& id) {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = jobs_.find(id); it != jobs_.end()) it->second->store(true);
  }
  int32_t Size() {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int32_t>(jobs_.size());
  }

 private:
  std::mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<std::atomic<bool>>> jobs_;
};

// Directives a benchmark client may put in the prompt text (a real worker
// would just tokenise them): "stub: interval_us=N stamp". interval_us paces
// the tokens N µs apart (from the first one, without drift); stamp puts the
// sender's steady clock in nanoseconds in each token's text (CLOCK_MONOTONIC,
// comparable between processes of one machine) so that the client can
// measure each token's transit time.
struct Directives {
  int64_t interval_us = 0;
  bool stamp = false;
};

Directives ParseDirectives(absl::string_view text) {
  Directives d;
  if (!absl::ConsumePrefix(&text, "stub:")) return d;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (word == "stamp") {
      d.stamp = true;
    } else if (absl::ConsumePrefix(&word, "interval_us=")) {
      int64_t n = 0;
      if (absl::SimpleAtoi(word, &n) && n > 0) d.interval_us = n;
    }
  }
  return d;
}

int64_t SteadyNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

// One Execute stream. Owns itself until OnDone. Exactly one operation is
// outstanding from the constructor until Finish: a write, or (paced) the
// alarm before the next one. So OnWriteDone and the alarm (never
// concurrent with each other) decide everything; OnCancel only sets a
// flag, and the write in flight then completes (not ok) or the alarm
// fires, and that ends the call.
class ExecuteStream final : public grpc::ServerWriteReactor<wv1::ExecuteEvent> {
 public:
  ExecuteStream(JobTable* jobs, const wv1::ExecuteRequest& request)
      : jobs_(jobs),
        job_id_(request.job_id()),
        max_tokens_(request.max_tokens() > 0 ? request.max_tokens() : kDefaultMaxTokens),
        directives_(ParseDirectives(request.text())),
        start_(Clock::now()),
        cancel_(std::make_shared<std::atomic<bool>>(false)) {
    if (job_id_.empty()) {
      Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "job_id is required"));
      return;
    }
    if (request.max_tokens() < 0) {
      Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "max_tokens must be at least 1"));
      return;
    }
    if (!jobs_->Add(job_id_, cancel_)) {
      Finish(grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                          absl::StrCat("job ", job_id_, " is running")));
      return;
    }
    registered_ = true;
    wv1::Started* started = event_.mutable_started();
    started->set_job_id(job_id_);
    started->set_prompt_tokens(1);
    StartWrite(&event_);
  }

  void OnWriteDone(bool ok) override {
    if (!ok || cancelled_.load()) {
      // The client is gone (cancelled, deadline, connection): nothing more
      // can reach it.
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled"));
      return;
    }
    if (sent_ == 0) first_token_ = Clock::now();
    if (sent_ >= max_tokens_ || cancel_->load()) {
      WriteFinished();
      return;
    }
    if (directives_.interval_us > 0) {
      const Clock::time_point due =
          first_token_ + std::chrono::microseconds(directives_.interval_us * sent_);
      if (due > Clock::now()) {
        // A fresh alarm each time: the previous one may still be returning
        // from its callback (it keeps itself alive until then).
        alarm_ = std::make_unique<grpc::Alarm>();
        alarm_->Set(std::chrono::system_clock::now() +
                        std::chrono::duration_cast<std::chrono::system_clock::duration>(
                            due - Clock::now()),
                    [this](bool) {
                      if (cancelled_.load()) {
                        Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled"));
                      } else if (cancel_->load()) {
                        WriteFinished();
                      } else {
                        WriteToken();
                      }
                    });
        return;
      }
    }
    WriteToken();
  }

  void OnCancel() override { cancelled_.store(true); }

  void OnDone() override {
    if (registered_) jobs_->Remove(job_id_);
    delete this;
  }

 private:
  void WriteToken() {
    wv1::Token* token = event_.mutable_token();  // reused: only index, id (and text) change
    if (sent_ == 0) {
      token->set_text("tok ");
      token->set_logprob(-1.0f);
    }
    token->set_index(sent_);
    token->set_id(sent_ % 1000);
    if (directives_.stamp) token->set_text(absl::StrCat(SteadyNanos()));
    ++sent_;
    StartWrite(&event_);
  }

  // All tokens written, or the Cancel RPC asked to stop.
  void WriteFinished() {
    const Clock::time_point now = Clock::now();
    wv1::ExecuteEvent finished_event;
    wv1::Finished* finished = finished_event.mutable_finished();
    finished->set_reason(sent_ < max_tokens_ ? wv1::FINISH_REASON_CANCELLED
                                             : wv1::FINISH_REASON_LENGTH);
    finished->set_prompt_tokens(1);
    finished->set_completion_tokens(sent_);
    if (sent_ > 0) {
      finished->set_ttft_seconds(std::chrono::duration<double>(first_token_ - start_).count());
      const double decode_seconds = std::chrono::duration<double>(now - first_token_).count();
      if (decode_seconds > 0) finished->set_decode_tokens_per_second(sent_ / decode_seconds);
    }
    event_ = std::move(finished_event);
    StartWriteAndFinish(&event_, grpc::WriteOptions(), grpc::Status::OK);  // no OnWriteDone
  }

  JobTable* const jobs_;
  const std::string job_id_;
  const int32_t max_tokens_;
  const Directives directives_;
  const Clock::time_point start_;
  const std::shared_ptr<std::atomic<bool>> cancel_;  // by the Cancel RPC
  std::atomic<bool> cancelled_{false};               // the call itself
  bool registered_ = false;
  int32_t sent_ = 0;
  Clock::time_point first_token_;
  std::unique_ptr<grpc::Alarm> alarm_;
  wv1::ExecuteEvent event_;  // being written
};

class StubWorkerService final : public wv1::Worker::CallbackService {
 public:
  StubWorkerService(std::string model, int32_t max_batch, std::string worker_id)
      : model_(std::move(model)), max_batch_(max_batch), worker_id_(std::move(worker_id)) {}

  grpc::ServerWriteReactor<wv1::ExecuteEvent>* Execute(
      grpc::CallbackServerContext* /*context*/, const wv1::ExecuteRequest* request) override {
    return new ExecuteStream(&jobs_, *request);
  }

  grpc::ServerUnaryReactor* Cancel(grpc::CallbackServerContext* context,
                                   const wv1::CancelRequest* request,
                                   wv1::CancelResponse* /*response*/) override {
    jobs_.Cancel(request->job_id());
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* Info(grpc::CallbackServerContext* context,
                                 const wv1::InfoRequest* /*request*/,
                                 wv1::InfoResponse* response) override {
    response->set_worker_id(worker_id_);
    response->set_model(model_);
    response->set_model_path("(stub)");
    response->set_architecture("stub");
    response->set_dtype("none");
    response->set_device("cpu");
    response->set_context_length(kContextLength);
    response->set_active_jobs(jobs_.Size());
    response->set_max_batch(max_batch_);
    response->set_draining(false);
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  const std::string model_;
  const int32_t max_batch_;
  const std::string worker_id_;
  JobTable jobs_;
};

int Run() {
  std::string worker_id = absl::GetFlag(FLAGS_worker_id);
  if (worker_id.empty()) worker_id = absl::StrCat("stub-", getpid());
  StubWorkerService service(absl::GetFlag(FLAGS_model_name), absl::GetFlag(FLAGS_max_batch),
                            worker_id);
  grpc::ServerBuilder builder;
  int port = 0;
  const std::string listen = absl::GetFlag(FLAGS_listen);
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    Log(absl::StrCat("cannot listen on ", listen));
    return 2;
  }
  Log(absl::StrCat("grpc listening on port ", port, " (model ", absl::GetFlag(FLAGS_model_name),
                   ", max_batch ", absl::GetFlag(FLAGS_max_batch), "; a benchmark stub)"));
  // Until SIGTERM/SIGINT: then stop at once (running streams are cut).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  Log(absl::StrCat("signal ", signal_number, ": exiting"));
  server->Shutdown(std::chrono::system_clock::now());
  return 0;
}

cli::CommandSpec CommandLine() {
  cli::CommandSpec command;
  command.program = "llorch-stub-worker";
  command.summary =
      "A benchmark tool, not a product: serves llorch.worker.v1.Worker without a model. Execute "
      "streams Started, max_tokens meaningless tokens as fast as the caller reads, then "
      "Finished{LENGTH}; Cancel and cancelled calls end jobs; Info reports --model_name and "
      "--max_batch. For measuring the scheduler's relay (tools/bench-scheduler.sh).";
  command.usage = "llorch-stub-worker [--listen HOST:PORT] [--model_name NAME] [flags]";
  command.spelling = cli::Spelling::kUnderscores;
  command.flags = cli::FlagsOf(
      "tools/bench/stub_worker.cc",
      {cli::FlagSpec("listen").Value("HOST:PORT"), cli::FlagSpec("model_name").Value("NAME"),
       cli::FlagSpec("max_batch").AtLeast(1), cli::FlagSpec("worker_id").Value("ID")});
  return command;
}

}  // namespace
}  // namespace llorch

int main(int argc, char** argv) {
  // Signals go to sigwait in Run, not to gRPC's threads.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (int code = llorch::cli::ParseFlagsForMain(llorch::CommandLine(), args); code >= 0) {
    return code;
  }
  return llorch::Run();
}
