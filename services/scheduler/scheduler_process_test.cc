// Integration tests over real processes on loopback: one llorch-scheduler in
// front of two or three llorch-worker processes (the issue's proofs 1-6).
// Models: the tiny random-weight GGUF (served under its default name,
// tiny-f32-gqa) and SmolLM2 ($LLORCH_DEFAULT_MODEL, served as "smollm2"),
// whose ~70 tokens/s on one thread give jobs that last long enough to act on
// while they run. Workers run with --threads 1 (this may be a 2-core box).
//
// Processes are reused where a test leaves them as it found them: the
// cluster suite shares one scheduler and three workers; the failover suite
// shares two workers and restarts on their ports the ones it kills.
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <grpcpp/create_channel.h>
#include <grpcpp/support/channel_arguments.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "llorch/v1/scheduler.grpc.pb.h"
#include "llorch/worker/v1/worker.grpc.pb.h"
#include "tests/support/cli_run.h"
#include "tests/support/scheduler_process.h"
#include "tests/support/test_certs.h"
#include "tests/support/worker_process.h"

namespace llorch {
namespace {

namespace wv1 = ::llorch::worker::v1;
using ::llorch::testing::CliReasonName;
using ::llorch::testing::CliRun;
using ::llorch::testing::RunCliCommand;
using ::llorch::testing::SchedulerClientOptions;
using ::llorch::testing::SchedulerProcess;
using ::llorch::testing::WorkerProcess;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;
using HealthStatus = ::grpc::health::v1::HealthCheckResponse;

constexpr char kTiny[] = "tiny-f32-gqa";  // the file's name: the default served name
constexpr char kSmol[] = "smollm2";       // SmolLM2, --served_model_name smollm2

double MsSince(Clock::time_point since) {
  return std::chrono::duration<double, std::milli>(Clock::now() - since).count();
}

std::string ModelPath(const std::string& model) {
  if (model == kSmol) {
    const char* path = std::getenv("LLORCH_DEFAULT_MODEL");
    return path != nullptr ? path : "";
  }
  return std::string(LLORCH_TESTDATA_DIR) + "/" + model + ".gguf";
}

// The last `n` characters of a log, for failure messages.
std::string Tail(const std::string& log, size_t n = 4000) {
  return log.size() <= n ? log : "..." + log.substr(log.size() - n);
}

// ---- Processes. ----

std::unique_ptr<WorkerProcess> StartWorker(const std::string& model,
                                           std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"--threads", "1"};
  if (model == kSmol) args.insert(args.end(), {"--served_model_name", kSmol});
  args.insert(args.end(), extra.begin(), extra.end());
  absl::StatusOr<std::unique_ptr<WorkerProcess>> worker =
      WorkerProcess::Start(LLORCH_WORKER_BINARY, ModelPath(model), args);
  EXPECT_TRUE(worker.ok()) << worker.status();
  if (!worker.ok()) return nullptr;
  absl::Status serving = (*worker)->WaitServing(seconds(60));
  EXPECT_TRUE(serving.ok()) << serving;
  return serving.ok() ? std::move(*worker) : nullptr;
}

// A worker on a given port (a restart: the same address as before).
std::unique_ptr<WorkerProcess> StartWorkerOnPort(const std::string& model, int port,
                                                 std::vector<std::string> extra = {}) {
  extra.insert(extra.end(), {"--listen", absl::StrCat("127.0.0.1:", port)});
  std::unique_ptr<WorkerProcess> worker = StartWorker(model, extra);
  if (worker != nullptr) {
    EXPECT_EQ(worker->grpc_port(), port);
  }
  return worker;
}

std::unique_ptr<SchedulerProcess> StartScheduler(std::vector<std::string> args,
                                                 const SchedulerClientOptions& client = {}) {
  absl::StatusOr<std::unique_ptr<SchedulerProcess>> scheduler =
      SchedulerProcess::Start(LLORCH_SCHEDULER_BINARY, std::move(args), client);
  EXPECT_TRUE(scheduler.ok()) << scheduler.status();
  if (!scheduler.ok()) return nullptr;
  absl::Status serving = (*scheduler)->WaitServing();
  EXPECT_TRUE(serving.ok()) << serving;
  return serving.ok() ? std::move(*scheduler) : nullptr;
}

// "--workers", "127.0.0.1:A,127.0.0.1:B".
std::vector<std::string> WorkersFlag(const std::vector<WorkerProcess*>& workers) {
  std::vector<std::string> addresses;
  for (WorkerProcess* w : workers) addresses.push_back(w->address());
  return {"--workers", absl::StrJoin(addresses, ",")};
}

// The port of "host:port" ("[::1]:port" too), or -1.
int PortOf(const std::string& address) {
  const size_t colon = address.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port)) return -1;
  return port;
}

bool SameWorker(const std::string& address, const WorkerProcess& worker) {
  return PortOf(address) == worker.grpc_port();
}

// ---- The public API. ----

struct GenerateResult {
  grpc::Status status;
  std::optional<v1::Started> started;  // the first Started
  int started_events = 0;
  std::vector<v1::Token> tokens;
  std::optional<v1::Finished> finished;
  std::multimap<std::string, std::string> trailers;

  std::vector<int32_t> ids() const {
    std::vector<int32_t> out;
    for (const v1::Token& t : tokens) out.push_back(t.id());
    return out;
  }
  std::string text() const {
    std::string out;
    for (const v1::Token& t : tokens) out += t.text();
    return out;
  }
  // A trailing metadata value as a number, or -1.
  int64_t Trailer(const std::string& key) const {
    auto it = trailers.find(key);
    int64_t value = -1;
    if (it == trailers.end() || !absl::SimpleAtoi(it->second, &value)) return -1;
    return value;
  }
  std::string Describe() const {
    return absl::StrCat("status ", status.error_code(), " '", status.error_message(), "', ",
                        started_events, " started, ", tokens.size(), " tokens, finished ",
                        finished.has_value() ? finished->ShortDebugString() : "none");
  }
};

using OnEvent = std::function<void(const v1::GenerateResponse&)>;

GenerateResult GenerateToEnd(v1::Scheduler::StubInterface& stub,
                             const v1::GenerateRequest& request, grpc::ClientContext* context,
                             const OnEvent& on_event = {}) {
  GenerateResult result;
  std::unique_ptr<grpc::ClientReaderInterface<v1::GenerateResponse>> reader =
      stub.Generate(context, request);
  v1::GenerateResponse event;
  while (reader->Read(&event)) {
    if (event.has_started()) {
      if (!result.started.has_value()) result.started = event.started();
      ++result.started_events;
    } else if (event.has_token()) {
      result.tokens.push_back(event.token());
    } else if (event.has_finished()) {
      result.finished = event.finished();
    }
    if (on_event) on_event(event);
  }
  result.status = reader->Finish();
  for (const auto& [key, value] : context->GetServerTrailingMetadata()) {
    result.trailers.emplace(std::string(key.data(), key.size()),
                            std::string(value.data(), value.size()));
  }
  return result;
}

GenerateResult Generate(v1::Scheduler::StubInterface& stub, const v1::GenerateRequest& request,
                        milliseconds timeout = seconds(300)) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout);
  return GenerateToEnd(stub, request, &context);
}

v1::GenerateRequest Greedy(const std::string& model, const std::string& text, int max_tokens,
                           const std::string& job_id = "") {
  v1::GenerateRequest request;
  request.set_model(model);
  if (!job_id.empty()) request.set_job_id(job_id);
  request.set_text(text);
  request.mutable_sampling()->set_temperature(0);
  request.set_max_tokens(max_tokens);
  return request;
}

// A job that runs until cancelled (SmolLM2 takes a minute for 4000 tokens).
v1::GenerateRequest Endless(const std::string& job_id) {
  v1::GenerateRequest request =
      Greedy(kSmol, "Tell me a very long story about a dragon.", 4000, job_id);
  request.set_ignore_eos(true);
  return request;
}

// One Generate on its own thread, observable while it runs.
class BackgroundGenerate {
 public:
  BackgroundGenerate(v1::Scheduler::StubInterface& stub, v1::GenerateRequest request,
                     milliseconds timeout = seconds(300))
      : deadline_(Clock::now() + timeout) {
    context_.set_deadline(std::chrono::system_clock::now() + timeout);
    thread_ = std::thread([this, &stub, request = std::move(request)] {
      GenerateResult result =
          GenerateToEnd(stub, request, &context_, [this](const v1::GenerateResponse& event) {
            std::lock_guard<std::mutex> lock(mu_);
            if (event.has_started()) worker_ = event.started().worker();
            if (event.has_token()) ++tokens_;
          });
      std::lock_guard<std::mutex> lock(mu_);
      result_ = std::move(result);
      done_ = true;
    });
  }
  ~BackgroundGenerate() {
    if (thread_.joinable()) {
      context_.TryCancel();
      thread_.join();
    }
  }

  // Until `n` tokens arrived (false: the stream ended or the time ran out).
  bool WaitTokens(int n, milliseconds timeout = seconds(60)) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (tokens_ >= n) return true;
        if (done_) return false;
      }
      std::this_thread::sleep_for(milliseconds(2));
    }
    return false;
  }
  int tokens() {
    std::lock_guard<std::mutex> lock(mu_);
    return tokens_;
  }
  std::string worker() {  // Started.worker, once Started came
    std::lock_guard<std::mutex> lock(mu_);
    return worker_;
  }
  bool done() {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
  }
  Clock::time_point deadline() const { return deadline_; }
  grpc::ClientContext& context() { return context_; }
  const GenerateResult& Join() {
    if (thread_.joinable()) thread_.join();
    return result_;
  }

 private:
  const Clock::time_point deadline_;
  grpc::ClientContext context_;
  std::mutex mu_;
  int tokens_ = 0;
  std::string worker_;
  bool done_ = false;
  GenerateResult result_;
  std::thread thread_;
};

absl::StatusOr<v1::ListWorkersResponse> ListWorkers(v1::Scheduler::StubInterface& stub) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + seconds(5));
  v1::ListWorkersResponse response;
  grpc::Status status = stub.ListWorkers(&context, v1::ListWorkersRequest(), &response);
  if (!status.ok()) return absl::UnavailableError(status.error_message());
  return response;
}

absl::StatusOr<v1::ListModelsResponse> ListModels(v1::Scheduler::StubInterface& stub) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + seconds(5));
  v1::ListModelsResponse response;
  grpc::Status status = stub.ListModels(&context, v1::ListModelsRequest(), &response);
  if (!status.ok()) return absl::UnavailableError(status.error_message());
  return response;
}

grpc::Status Cancel(v1::Scheduler::StubInterface& stub, const std::string& job_id) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + seconds(5));
  v1::CancelRequest request;
  request.set_job_id(job_id);
  v1::CancelResponse response;
  return stub.Cancel(&context, request, &response);
}

const v1::WorkerStatus* FindWorker(const v1::ListWorkersResponse& response,
                                   const WorkerProcess& worker) {
  for (const v1::WorkerStatus& w : response.workers()) {
    if (SameWorker(w.address(), worker)) return &w;
  }
  return nullptr;
}

const v1::Model* FindModel(const v1::ListModelsResponse& response, const std::string& name) {
  for (const v1::Model& m : response.models()) {
    if (m.name() == name) return &m;
  }
  return nullptr;
}

// Polls ListWorkers every `period` until `done` holds; returns the milliseconds
// it took, or nullopt after `timeout` (`*last` gets the last answer).
std::optional<double> WaitWorkers(v1::Scheduler::StubInterface& stub,
                                  const std::function<bool(const v1::ListWorkersResponse&)>& done,
                                  milliseconds timeout, v1::ListWorkersResponse* last = nullptr,
                                  milliseconds period = milliseconds(20)) {
  const auto start = Clock::now();
  while (true) {
    absl::StatusOr<v1::ListWorkersResponse> response = ListWorkers(stub);
    if (response.ok()) {
      if (last != nullptr) *last = *response;
      if (done(*response)) return MsSince(start);
    }
    if (Clock::now() - start > timeout) return std::nullopt;
    std::this_thread::sleep_for(period);
  }
}

std::function<bool(const v1::ListWorkersResponse&)> StateIs(const WorkerProcess& worker,
                                                            v1::WorkerState state) {
  return [&worker, state](const v1::ListWorkersResponse& response) {
    const v1::WorkerStatus* w = FindWorker(response, worker);
    return w != nullptr && w->state() == state;
  };
}

// All of `workers` UP.
bool WaitAllUp(SchedulerProcess& scheduler, const std::vector<WorkerProcess*>& workers,
               milliseconds timeout = seconds(15)) {
  v1::ListWorkersResponse last;
  std::optional<double> took = WaitWorkers(
      scheduler.stub(),
      [&](const v1::ListWorkersResponse& response) {
        for (WorkerProcess* worker : workers) {
          const v1::WorkerStatus* w = FindWorker(response, *worker);
          if (w == nullptr || w->state() != v1::WORKER_STATE_UP) return false;
        }
        return true;
      },
      timeout, &last);
  EXPECT_TRUE(took.has_value()) << "workers not up: " << last.DebugString() << "\n"
                                << Tail(scheduler.Log());
  return took.has_value();
}

wv1::InfoResponse WorkerInfo(WorkerProcess& worker) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + seconds(5));
  wv1::InfoResponse info;
  grpc::Status status = worker.stub().Info(&context, wv1::InfoRequest(), &info);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return info;
}

// The rule for "propagates to the worker within 100 ms": from the client's
// act (Cancel sent, TryCancel, the client process killed, the deadline) to
// the return of the first worker Info that shows no job running or waiting
// and no KV in use, polling Info every 5 ms. Allowed: 100 ms plus the
// polling period plus the slowest Info round trip seen while polling (how
// late a poll can see what already happened).
struct IdleWait {
  std::optional<double> elapsed_ms;  // nullopt: never idle within the timeout
  double max_rtt_ms = 0;
  wv1::InfoResponse last;
  double allowed_ms() const { return 100 + 5 + max_rtt_ms; }
};

IdleWait WaitWorkerIdle(WorkerProcess& worker, Clock::time_point since,
                        milliseconds timeout = seconds(3)) {
  IdleWait wait;
  while (true) {
    const auto call = Clock::now();
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + seconds(2));
    wv1::InfoResponse info;
    const bool ok = worker.stub().Info(&context, wv1::InfoRequest(), &info).ok();
    wait.max_rtt_ms = std::max(wait.max_rtt_ms, MsSince(call));
    if (ok) {
      wait.last = info;
      if (info.active_jobs() == 0 && info.waiting_jobs() == 0 && info.kv_used_bytes() == 0) {
        wait.elapsed_ms = MsSince(since);
        return wait;
      }
    }
    if (Clock::now() - since > timeout) return wait;
    std::this_thread::sleep_until(call + milliseconds(5));
  }
}

// ---- `llorch run --format jsonl`: the reference. ----

CliRun RunCli(const std::string& model, const std::string& args) {
  return RunCliCommand(absl::StrCat(LLORCH_CLI_BINARY, " run --model '", ModelPath(model),
                                    "' --format jsonl --threads 1 ", args, " 2>/dev/null"));
}

// ---- A child process whose stdout the test reads (grpcurl as a client). ----

struct Child {
  pid_t pid = -1;
  int out = -1;  // its stdout and stderr
  std::string output;

  ~Child() {
    if (out >= 0) close(out);
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
  // Reads until `count` occurrences of `text` came, the child closed its
  // output, or the time ran out.
  bool ReadUntil(const std::string& text, int count, milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    auto seen = [&] {
      int n = 0;
      for (size_t at = output.find(text); at != std::string::npos;
           at = output.find(text, at + 1)) {
        ++n;
      }
      return n;
    };
    while (seen() < count) {
      const int left = static_cast<int>(
          std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count());
      if (left <= 0) return false;
      pollfd fd = {out, POLLIN, 0};
      if (poll(&fd, 1, left) <= 0) return false;
      char buffer[4096];
      const ssize_t n = read(out, buffer, sizeof(buffer));
      if (n <= 0) return false;
      output.append(buffer, n);
    }
    return true;
  }
};

std::unique_ptr<Child> Spawn(std::vector<std::string> args) {
  int pipe_fds[2];
  if (pipe(pipe_fds) != 0) return nullptr;
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return nullptr;
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    dup2(pipe_fds[1], STDOUT_FILENO);
    dup2(pipe_fds[1], STDERR_FILENO);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(pipe_fds[1]);
  auto child = std::make_unique<Child>();
  child->pid = pid;
  child->out = pipe_fds[0];
  return child;
}

std::string FindGrpcurl() {
  if (const char* path = std::getenv("LLORCH_GRPCURL"); path != nullptr && *path != '\0') {
    return access(path, X_OK) == 0 ? path : "";
  }
  if (const char* home = std::getenv("HOME")) {
    const std::string path = absl::StrCat(home, "/.cache/llorch/bin/grpcurl");  // tools/env.sh
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return "";
}

// =====================================================================
// The cluster: one scheduler, the tiny model on one worker, SmolLM2 on two.
// =====================================================================
class SchedulerClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tiny_ = StartWorker(kTiny).release();
    smol1_ = StartWorker(kSmol).release();
    smol2_ = StartWorker(kSmol).release();
    if (tiny_ == nullptr || smol1_ == nullptr || smol2_ == nullptr) return;
    scheduler_ = StartScheduler(WorkersFlag({tiny_, smol1_, smol2_})).release();
    if (scheduler_ == nullptr) return;
    ready_ = WaitAllUp(*scheduler_, {tiny_, smol1_, smol2_});
  }
  static void TearDownTestSuite() {
    delete scheduler_;
    delete tiny_;
    delete smol1_;
    delete smol2_;
  }
  void SetUp() override { ASSERT_TRUE(ready_) << "the cluster did not start"; }

  static v1::Scheduler::Stub& stub() { return scheduler_->stub(); }
  static WorkerProcess* WorkerAt(const std::string& address) {
    for (WorkerProcess* w : {tiny_, smol1_, smol2_}) {
      if (SameWorker(address, *w)) return w;
    }
    return nullptr;
  }

  static WorkerProcess* tiny_;
  static WorkerProcess* smol1_;
  static WorkerProcess* smol2_;
  static SchedulerProcess* scheduler_;
  static bool ready_;
};
WorkerProcess* SchedulerClusterTest::tiny_ = nullptr;
WorkerProcess* SchedulerClusterTest::smol1_ = nullptr;
WorkerProcess* SchedulerClusterTest::smol2_ = nullptr;
SchedulerProcess* SchedulerClusterTest::scheduler_ = nullptr;
bool SchedulerClusterTest::ready_ = false;

// Proof 1: through the scheduler, exactly what `llorch run` prints: the same
// token ids, texts and log-probs, for greedy and seeded sampling, and for
// the prompt as text, as token ids and as chat messages.
TEST_F(SchedulerClusterTest, GenerateEqualsLlorchRun) {
  const std::string prompt = "The three primary colours are";
  auto seeded = [](v1::GenerateRequest& r) {
    r.mutable_sampling()->set_temperature(0.9f);
    r.mutable_sampling()->set_top_k(40);
    r.mutable_sampling()->set_top_p(0.95f);
    r.mutable_sampling()->set_min_p(0.02f);
    r.mutable_sampling()->set_seed(1234);
  };
  const std::string kSeeded = "--temperature 0.9 --top-k 40 --top-p 0.95 --min-p 0.02 --seed 1234";
  auto text = [prompt](v1::GenerateRequest& r) { r.set_text(prompt); };
  const std::vector<int> ids = {504, 3458, 2565, 282, 4541, 314, 253, 1345};
  auto token_ids = [ids](v1::GenerateRequest& r) {
    for (int id : ids) r.mutable_token_ids()->add_ids(id);
  };
  auto chat = [](v1::GenerateRequest& r) {
    v1::ChatMessage* system = r.mutable_messages()->add_messages();
    system->set_role("system");
    system->set_content("You are a helpful assistant.");
    v1::ChatMessage* user = r.mutable_messages()->add_messages();
    user->set_role("user");
    user->set_content("What is the capital of France?");
  };
  const std::string text_args = absl::StrCat("--prompt '", prompt, "'");
  const std::string ids_args = absl::StrCat("--prompt-ids ", absl::StrJoin(ids, ","));
  const std::string chat_args =
      "--system 'You are a helpful assistant.' --chat 'What is the capital of France?'";
  struct Case {
    std::string model;
    std::string cli_args;
    std::function<void(v1::GenerateRequest&)> prompt;
    bool seeded;
  };
  const std::vector<Case> cases = {
      {kTiny, text_args, text, false},     {kTiny, text_args, text, true},
      {kSmol, text_args, text, false},     {kSmol, text_args, text, true},
      {kSmol, ids_args, token_ids, false}, {kSmol, ids_args, token_ids, true},
      {kSmol, chat_args, chat, false},     {kSmol, chat_args, chat, true},
  };
  int n = 0;
  for (const Case& c : cases) {
    const std::string sampling = c.seeded ? kSeeded : "--temperature 0";
    SCOPED_TRACE(absl::StrCat(c.model, ": ", c.cli_args, " ", sampling));
    CliRun cli = RunCli(c.model, absl::StrCat(c.cli_args, " ", sampling,
                                              " --max-tokens 24 --logprobs 3"));
    ASSERT_FALSE(cli.tokens.empty());
    v1::GenerateRequest request;
    request.set_model(c.model);
    request.set_job_id(absl::StrCat("same-as-cli-", n++));
    c.prompt(request);
    request.mutable_sampling()->set_temperature(0);
    if (c.seeded) seeded(request);
    request.set_max_tokens(24);
    request.set_logprobs(3);
    const GenerateResult result = Generate(stub(), request);
    ASSERT_TRUE(result.status.ok()) << result.Describe() << "\n" << Tail(scheduler_->Log());
    ASSERT_TRUE(result.started.has_value());
    ASSERT_TRUE(result.finished.has_value());
    EXPECT_EQ(result.started_events, 1);
    EXPECT_EQ(result.started->job_id(), request.job_id());
    EXPECT_EQ(result.started->model(), c.model);
    EXPECT_EQ(result.started->retries(), 0);
    WorkerProcess* worker = WorkerAt(result.started->worker());
    ASSERT_NE(worker, nullptr) << "Started.worker " << result.started->worker();
    EXPECT_EQ(worker == tiny_, c.model == kTiny) << result.started->worker();
    if (c.seeded) {
      EXPECT_EQ(result.started->seed(), 1234u);
    }
    EXPECT_EQ(result.started->prompt_tokens(), cli.finished["prompt_tokens"].get<int>());
    ASSERT_EQ(result.tokens.size(), cli.tokens.size())
        << "scheduler: " << result.text() << "\ncli tokens: " << cli.tokens.size();
    for (size_t i = 0; i < cli.tokens.size(); ++i) {
      const v1::Token& token = result.tokens[i];
      EXPECT_EQ(token.index(), static_cast<int>(i));
      EXPECT_EQ(token.id(), cli.tokens[i]["id"].get<int>()) << "token " << i;
      EXPECT_EQ(token.text(), cli.tokens[i]["text"].get<std::string>()) << "token " << i;
      EXPECT_NEAR(token.logprob(), cli.tokens[i]["logprob"].get<double>(), 1e-4) << "token " << i;
      ASSERT_EQ(token.top_logprobs_size(), 3);
      for (int k = 0; k < 3; ++k) {
        EXPECT_EQ(token.top_logprobs(k).id(), cli.tokens[i]["top_logprobs"][k][0].get<int>());
      }
    }
    EXPECT_EQ(CliReasonName(result.finished->reason()), cli.finished["reason"].get<std::string>());
    EXPECT_EQ(result.finished->prompt_tokens(), result.started->prompt_tokens());
    EXPECT_EQ(result.finished->completion_tokens(), static_cast<int>(cli.tokens.size()));
    EXPECT_GT(result.finished->ttft_seconds(), 0);
    EXPECT_GE(result.finished->queue_seconds(), 0);
    EXPECT_LE(result.finished->queue_seconds(), result.finished->ttft_seconds());
  }
}

// Proof 2: concurrent jobs spread over the model's workers, and ListWorkers
// tells the truth while they run (dispatched: the scheduler's own count, at
// once; active: the worker's, as of the last probe).
TEST_F(SchedulerClusterTest, LoadSpreadsAndListWorkersTellsTheTruth) {
  constexpr int kJobs = 4;
  std::vector<std::unique_ptr<BackgroundGenerate>> jobs;
  for (int i = 0; i < kJobs; ++i) {
    jobs.push_back(
        std::make_unique<BackgroundGenerate>(stub(), Endless(absl::StrCat("spread-", i))));
  }
  std::map<int, int> per_port;  // Started.worker's port -> jobs
  for (auto& job : jobs) {
    ASSERT_TRUE(job->WaitTokens(1)) << job->Join().Describe() << "\n" << Tail(scheduler_->Log());
    WorkerProcess* worker = WorkerAt(job->worker());
    ASSERT_TRUE(worker == smol1_ || worker == smol2_) << job->worker();
    ++per_port[worker->grpc_port()];
  }
  std::printf("%d jobs: %d on %s, %d on %s\n", kJobs, per_port[smol1_->grpc_port()],
              smol1_->address().c_str(), per_port[smol2_->grpc_port()],
              smol2_->address().c_str());
  EXPECT_EQ(per_port.size(), 2u) << "all jobs went to one worker";

  // dispatched_jobs: at once.
  absl::StatusOr<v1::ListWorkersResponse> now = ListWorkers(stub());
  ASSERT_TRUE(now.ok()) << now.status();
  for (WorkerProcess* worker : {smol1_, smol2_}) {
    const v1::WorkerStatus* w = FindWorker(*now, *worker);
    ASSERT_NE(w, nullptr) << now->DebugString();
    EXPECT_EQ(w->dispatched_jobs(), per_port[worker->grpc_port()]) << w->DebugString();
    EXPECT_EQ(w->model(), kSmol);
    EXPECT_EQ(w->state(), v1::WORKER_STATE_UP);
    EXPECT_EQ(w->source(), "flag");
    EXPECT_GE(w->seconds_since_heartbeat(), 0);
    EXPECT_LT(w->seconds_since_heartbeat(), 3);
    // The truth, from the worker itself.
    EXPECT_EQ(WorkerInfo(*worker).active_jobs(), per_port[worker->grpc_port()]);
  }
  const v1::WorkerStatus* idle = FindWorker(*now, *tiny_);
  ASSERT_NE(idle, nullptr);
  EXPECT_EQ(idle->dispatched_jobs(), 0);
  // active_jobs and kv_used_bytes: within a few probes.
  v1::ListWorkersResponse last;
  std::optional<double> probed = WaitWorkers(
      stub(),
      [&](const v1::ListWorkersResponse& response) {
        for (WorkerProcess* worker : {smol1_, smol2_}) {
          const v1::WorkerStatus* w = FindWorker(response, *worker);
          if (w == nullptr || w->active_jobs() != per_port[worker->grpc_port()] ||
              w->kv_used_bytes() <= 0 || w->kv_capacity_bytes() < w->kv_used_bytes()) {
            return false;
          }
        }
        return true;
      },
      seconds(3), &last);
  EXPECT_TRUE(probed.has_value()) << last.DebugString();

  for (int i = 0; i < kJobs; ++i) EXPECT_TRUE(Cancel(stub(), absl::StrCat("spread-", i)).ok());
  for (auto& job : jobs) {
    const GenerateResult& result = job->Join();
    EXPECT_TRUE(result.status.ok()) << result.Describe();
    ASSERT_TRUE(result.finished.has_value()) << result.Describe();
    EXPECT_EQ(result.finished->reason(), v1::FINISH_REASON_CANCELLED);
  }
  // Once they ended: nothing dispatched at once, nothing active after a probe.
  now = ListWorkers(stub());
  ASSERT_TRUE(now.ok());
  for (const v1::WorkerStatus& w : now->workers()) EXPECT_EQ(w.dispatched_jobs(), 0) << w.address();
  EXPECT_TRUE(WaitWorkers(
                  stub(),
                  [](const v1::ListWorkersResponse& response) {
                    for (const v1::WorkerStatus& w : response.workers()) {
                      if (w.active_jobs() != 0 || w.kv_used_bytes() != 0) return false;
                    }
                    return true;
                  },
                  seconds(3), &last)
                  .has_value())
      << last.DebugString();
}

// Issue 15, cache-aware placement: the same long prompt again goes to the
// worker holding it (whose Started says so), not round robin to the other;
// a scheduler with --placement least_loaded over the same workers alternates
// and finds nothing cached on the second.
TEST_F(SchedulerClusterTest, CacheAwarePlacementSendsAPromptWhereItIsCached) {
  auto run = [](SchedulerProcess& scheduler, const std::string& prompt, int n) {
    std::vector<GenerateResult> results;
    for (int i = 0; i < n; ++i) results.push_back(Generate(scheduler.stub(), Greedy(kSmol, prompt, 2)));
    return results;
  };
  const std::string tale =
      "Once upon a time, in a village between two rivers, there lived a baker who rose every "
      "morning before dawn to knead the dough, light the oven and sing to the sleeping town. ";
  const std::vector<GenerateResult> cache_aware = run(*scheduler_, "Cache-aware. " + tale, 3);
  const std::vector<GenerateResult> least_loaded = [&] {
    std::unique_ptr<SchedulerProcess> plain =
        StartScheduler({"--workers", absl::StrCat(smol1_->address(), ",", smol2_->address()),
                        "--placement", "least_loaded"});
    EXPECT_NE(plain, nullptr);
    if (plain == nullptr || !WaitAllUp(*plain, {smol1_, smol2_})) return std::vector<GenerateResult>();
    return run(*plain, "Least-loaded. " + tale, 2);
  }();
  for (const auto* results : {&cache_aware, &least_loaded}) {
    for (const GenerateResult& r : *results) {
      ASSERT_TRUE(r.status.ok() && r.started.has_value()) << r.Describe() << Tail(scheduler_->Log());
    }
  }
  ASSERT_EQ(least_loaded.size(), 2u);
  const int prompt_tokens = cache_aware[0].started->prompt_tokens();
  ASSERT_GT(prompt_tokens, 32);  // two whole blocks or more
  const int whole_blocks = (prompt_tokens - 1) / 16 * 16;  // --kv_block_size 16; last token computed
  EXPECT_EQ(cache_aware[0].started->cached_prompt_tokens(), 0);
  for (size_t i = 1; i < cache_aware.size(); ++i) {
    EXPECT_EQ(cache_aware[i].started->worker(), cache_aware[0].started->worker()) << i;
    EXPECT_EQ(cache_aware[i].started->cached_prompt_tokens(), whole_blocks) << i;
    EXPECT_EQ(cache_aware[i].ids(), cache_aware[0].ids()) << i;
  }
  EXPECT_NE(least_loaded[1].started->worker(), least_loaded[0].started->worker());
  EXPECT_EQ(least_loaded[1].started->cached_prompt_tokens(), 0);
  // Each job's two probes answered (none failed), recorded in /metrics.
  absl::StatusOr<std::string> metrics = scheduler_->Metrics();
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  auto sample = [&](const std::string& name) {
    const size_t at = metrics->find("\n" + name + " ");
    return at == std::string::npos ? -1.0 : std::stod(metrics->substr(at + name.size() + 2));
  };
  EXPECT_GE(sample("llorch_scheduler_prefix_probe_seconds_count"), 3) << *metrics;
  EXPECT_EQ(sample("llorch_scheduler_prefix_probe_failures_total"), 0) << *metrics;
  EXPECT_GE(sample("llorch_scheduler_expected_cached_tokens_total"), 2 * whole_blocks) << *metrics;
}

// Proof 2: two models, each on its own workers; ListModels lists both.
TEST_F(SchedulerClusterTest, TwoModelsRouteToTheirOwnWorkers) {
  absl::StatusOr<v1::ListModelsResponse> models = ListModels(stub());
  ASSERT_TRUE(models.ok()) << models.status();
  ASSERT_EQ(models->models_size(), 2) << models->DebugString();
  const v1::Model* tiny = FindModel(*models, kTiny);
  const v1::Model* smol = FindModel(*models, kSmol);
  ASSERT_NE(tiny, nullptr) << models->DebugString();
  ASSERT_NE(smol, nullptr) << models->DebugString();
  ASSERT_EQ(tiny->workers_size(), 1);
  EXPECT_TRUE(SameWorker(tiny->workers(0), *tiny_)) << tiny->DebugString();
  EXPECT_EQ(tiny->workers_up(), 1);
  std::set<int> smol_ports;
  for (const std::string& address : smol->workers()) smol_ports.insert(PortOf(address));
  EXPECT_EQ(smol_ports, (std::set<int>{smol1_->grpc_port(), smol2_->grpc_port()}));
  EXPECT_EQ(smol->workers_up(), 2);
  const wv1::InfoResponse tiny_info = WorkerInfo(*tiny_);
  const wv1::InfoResponse smol_info = WorkerInfo(*smol1_);
  EXPECT_EQ(tiny->architecture(), tiny_info.architecture());
  EXPECT_EQ(tiny->dtype(), tiny_info.dtype());
  EXPECT_EQ(tiny->context_length(), tiny_info.context_length());
  EXPECT_EQ(smol->architecture(), smol_info.architecture());
  EXPECT_EQ(smol->context_length(), smol_info.context_length());
  EXPECT_EQ(tiny->queued_jobs(), 0);
  EXPECT_EQ(smol->queued_jobs(), 0);

  std::set<int> smol_used;
  for (int i = 0; i < 4; ++i) {
    const GenerateResult on_tiny = Generate(stub(), Greedy(kTiny, "Hello", 4));
    ASSERT_TRUE(on_tiny.status.ok()) << on_tiny.Describe();
    ASSERT_TRUE(on_tiny.started.has_value());
    EXPECT_TRUE(SameWorker(on_tiny.started->worker(), *tiny_)) << on_tiny.started->worker();
    EXPECT_EQ(on_tiny.started->model(), kTiny);
    // No job_id given: the scheduler makes "job-" and 16 hex digits.
    const std::string& id = on_tiny.started->job_id();
    EXPECT_TRUE(id.size() == 20 && absl::StartsWith(id, "job-") &&
                id.find_first_not_of("0123456789abcdefABCDEF", 4) == std::string::npos)
        << id;
    const GenerateResult on_smol = Generate(stub(), Greedy(kSmol, "Hello", 4));
    ASSERT_TRUE(on_smol.status.ok()) << on_smol.Describe();
    ASSERT_TRUE(on_smol.started.has_value());
    smol_used.insert(PortOf(on_smol.started->worker()));
  }
  EXPECT_TRUE(std::includes(smol_ports.begin(), smol_ports.end(), smol_used.begin(),
                            smol_used.end()))
      << "a SmolLM2 job ran on a worker that does not serve it";

  const GenerateResult unknown = Generate(stub(), Greedy("no-such-model", "Hello", 4));
  EXPECT_EQ(unknown.status.error_code(), grpc::StatusCode::NOT_FOUND) << unknown.Describe();
  EXPECT_NE(unknown.status.error_message().find("no-such-model"), std::string::npos)
      << unknown.status.error_message();
  EXPECT_FALSE(unknown.started.has_value());
}

// Health and reflection answer; /metrics serves the scheduler's families.
TEST_F(SchedulerClusterTest, HealthReflectionAndMetrics) {
  auto health = grpc::health::v1::Health::NewStub(scheduler_->channel());
  for (const std::string service : {"", "llorch.v1.Scheduler"}) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + seconds(5));
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    HealthStatus response;
    grpc::Status status = health->Check(&context, request, &response);
    EXPECT_TRUE(status.ok()) << service << ": " << status.error_message();
    EXPECT_EQ(response.status(), HealthStatus::SERVING) << service;
  }
  namespace reflection = ::grpc::reflection::v1alpha;
  auto stub = reflection::ServerReflection::NewStub(scheduler_->channel());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + seconds(10));
  auto stream = stub->ServerReflectionInfo(&context);
  reflection::ServerReflectionRequest list;
  list.set_list_services("*");
  ASSERT_TRUE(stream->Write(list));
  reflection::ServerReflectionResponse response;
  ASSERT_TRUE(stream->Read(&response));
  std::set<std::string> services;
  for (const auto& service : response.list_services_response().service()) {
    services.insert(service.name());
  }
  EXPECT_TRUE(services.count("llorch.v1.Scheduler")) << absl::StrJoin(services, ",");
  EXPECT_TRUE(services.count("grpc.health.v1.Health")) << absl::StrJoin(services, ",");
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());

  absl::StatusOr<std::string> metrics = scheduler_->Metrics();
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_NE(metrics->find("llorch_scheduler_"), std::string::npos) << *metrics;
  absl::StatusOr<double> serving = scheduler_->MetricValue("llorch_scheduler_serving");
  ASSERT_TRUE(serving.ok()) << serving.status();
  EXPECT_EQ(*serving, 1);
  absl::StatusOr<double> up = scheduler_->MetricValue("llorch_scheduler_workers{state=\"up\"}");
  ASSERT_TRUE(up.ok()) << up.status() << "\n" << *metrics;
  EXPECT_EQ(*up, 3);
}

// Proof 6: malformed requests get their code and a message naming the field;
// nothing reaches a worker; a good request works afterwards.
TEST_F(SchedulerClusterTest, MalformedRequests) {
  const int vocab = static_cast<int>(WorkerInfo(*tiny_).vocab_size());
  ASSERT_GT(vocab, 0);
  const std::string bad_utf8 = std::string("ok \xc3") + "\x28" + " not";
  const grpc::StatusCode kInvalid = grpc::StatusCode::INVALID_ARGUMENT;
  auto stops = [](v1::GenerateRequest& r, int n, size_t bytes) {
    for (int i = 0; i < n; ++i) r.add_stop(std::string(bytes, 'a' + i % 26));
  };
  struct Case {
    std::string name;
    std::function<void(v1::GenerateRequest&)> mutate;
    grpc::StatusCode code;
    std::string field;  // must appear in the message
  };
  const std::vector<Case> cases = {
      {"empty model", [](auto& r) { r.clear_model(); }, kInvalid, "model"},
      {"model of 257 bytes", [](auto& r) { r.set_model(std::string(257, 'm')); }, kInvalid,
       "model"},
      {"model not UTF-8", [&](auto& r) { r.set_model(bad_utf8); }, kInvalid, "model"},
      {"job_id of 257 bytes", [](auto& r) { r.set_job_id(std::string(257, 'j')); }, kInvalid,
       "job_id"},
      {"no prompt", [](auto& r) { r.clear_prompt(); }, kInvalid, "prompt"},
      {"empty text", [](auto& r) { r.set_text(""); }, kInvalid, "text"},
      {"text of 1 MiB + 1", [](auto& r) { r.set_text(std::string((1 << 20) + 1, 'a')); },
       kInvalid, "text"},
      {"text not UTF-8", [&](auto& r) { r.set_text(bad_utf8); }, kInvalid, "text"},
      {"stop not UTF-8", [&](auto& r) { r.add_stop(bad_utf8); }, kInvalid, "stop"},
      {"role not UTF-8",
       [&](auto& r) {
         v1::ChatMessage* m = r.mutable_messages()->add_messages();
         m->set_role(bad_utf8);
         m->set_content("Hi");
       },
       kInvalid, "role"},
      {"empty messages", [](auto& r) { r.mutable_messages(); }, kInvalid, "messages"},
      {"empty token_ids", [](auto& r) { r.mutable_token_ids(); }, kInvalid, "token_ids"},
      {"negative token id",
       [](auto& r) {
         r.mutable_token_ids()->add_ids(1);
         r.mutable_token_ids()->add_ids(-1);
       },
       kInvalid, "token_ids"},
      {"token id past the vocabulary",
       [&](auto& r) {
         r.mutable_token_ids()->add_ids(1);
         r.mutable_token_ids()->add_ids(vocab);
       },
       kInvalid, "token_ids"},
      {"NaN temperature", [](auto& r) { r.mutable_sampling()->set_temperature(std::nanf("")); },
       kInvalid, "temperature"},
      {"negative temperature", [](auto& r) { r.mutable_sampling()->set_temperature(-1); },
       kInvalid, "temperature"},
      {"top_p above 1", [](auto& r) { r.mutable_sampling()->set_top_p(1.5f); }, kInvalid,
       "top_p"},
      {"negative top_k", [](auto& r) { r.mutable_sampling()->set_top_k(-3); }, kInvalid,
       "top_k"},
      {"negative max_tokens", [](auto& r) { r.set_max_tokens(-5); }, kInvalid, "max_tokens"},
      {"logprobs 21", [](auto& r) { r.set_logprobs(21); }, kInvalid, "logprobs"},
      {"17 stop strings", [&](auto& r) { stops(r, 17, 1); }, kInvalid, "stop"},
      {"stop string of 257 bytes", [&](auto& r) { stops(r, 1, 257); }, kInvalid, "stop[0]"},
      {"empty stop string", [](auto& r) { r.add_stop(""); }, kInvalid, "stop"},
      {"65 stop ids",
       [](auto& r) {
         for (int i = 0; i < 65; ++i) r.add_stop_token_ids(i);
       },
       kInvalid, "stop_token_ids"},
      {"unknown model", [](auto& r) { r.set_model("no-such-model"); },
       grpc::StatusCode::NOT_FOUND, "no-such-model"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    v1::GenerateRequest request = Greedy(kTiny, "Hello there", 4);
    c.mutate(request);
    const GenerateResult result = Generate(stub(), request, seconds(30));
    EXPECT_EQ(result.status.error_code(), c.code) << result.Describe();
    EXPECT_NE(result.status.error_message().find(c.field), std::string::npos)
        << "the message does not name " << c.field << ": " << result.status.error_message();
    EXPECT_FALSE(result.started.has_value());
    std::printf("%-30s -> %d %s\n", c.name.c_str(), result.status.error_code(),
                result.status.error_message().c_str());
  }

  // A live job's id, also for another model: ALREADY_EXISTS; the live job
  // runs on untouched.
  {
    BackgroundGenerate live(stub(), Endless("dup-live"));
    ASSERT_TRUE(live.WaitTokens(1)) << live.Join().Describe();
    const GenerateResult duplicate = Generate(stub(), Greedy(kTiny, "Other", 4, "dup-live"));
    EXPECT_EQ(duplicate.status.error_code(), grpc::StatusCode::ALREADY_EXISTS)
        << duplicate.Describe();
    EXPECT_NE(duplicate.status.error_message().find("dup-live"), std::string::npos)
        << duplicate.status.error_message();
    EXPECT_FALSE(duplicate.started.has_value());
    const int before = live.tokens();
    ASSERT_TRUE(live.WaitTokens(before + 3)) << "the live job stopped: " << live.Join().Describe();
    EXPECT_TRUE(Cancel(stub(), "dup-live").ok());
    const GenerateResult& result = live.Join();
    EXPECT_TRUE(result.status.ok()) << result.Describe();
    ASSERT_TRUE(result.finished.has_value());
    EXPECT_EQ(result.finished->reason(), v1::FINISH_REASON_CANCELLED);
  }
  // Cancel of unknown ids succeeds.
  EXPECT_TRUE(Cancel(stub(), "never-existed").ok());

  const GenerateResult good = Generate(stub(), Greedy(kTiny, "Hello there", 4));
  EXPECT_TRUE(good.status.ok()) << good.Describe();
  EXPECT_EQ(good.tokens.size(), 4u);
}

// Proof 4: a Cancel RPC, a client's cancel and a client's disconnect reach
// the worker within 100 ms (the rule: see IdleWait); the deadline bounds the
// worker's call too.
TEST_F(SchedulerClusterTest, CancelRpcReachesTheWorkerWithin100Ms) {
  BackgroundGenerate job(stub(), Endless("to-cancel"));
  ASSERT_TRUE(job.WaitTokens(3)) << job.Join().Describe();
  WorkerProcess* worker = WorkerAt(job.worker());
  ASSERT_NE(worker, nullptr) << job.worker();
  EXPECT_GT(WorkerInfo(*worker).kv_used_bytes(), 0);
  const auto act = Clock::now();
  ASSERT_TRUE(Cancel(stub(), "to-cancel").ok());
  const IdleWait idle = WaitWorkerIdle(*worker, act);
  ASSERT_TRUE(idle.elapsed_ms.has_value()) << idle.last.DebugString();
  std::printf("Cancel RPC -> worker idle in %.1f ms (allowed %.1f)\n", *idle.elapsed_ms,
              idle.allowed_ms());
  EXPECT_LE(*idle.elapsed_ms, idle.allowed_ms());
  const GenerateResult& result = job.Join();
  EXPECT_TRUE(result.status.ok()) << result.Describe();
  ASSERT_TRUE(result.finished.has_value());
  EXPECT_EQ(result.finished->reason(), v1::FINISH_REASON_CANCELLED);
  EXPECT_EQ(result.finished->completion_tokens(), static_cast<int>(result.tokens.size()));
}

TEST_F(SchedulerClusterTest, ClientCancelReachesTheWorkerWithin100Ms) {
  BackgroundGenerate job(stub(), Endless("client-cancel"));
  ASSERT_TRUE(job.WaitTokens(3)) << job.Join().Describe();
  WorkerProcess* worker = WorkerAt(job.worker());
  ASSERT_NE(worker, nullptr) << job.worker();
  const auto act = Clock::now();
  job.context().TryCancel();
  const IdleWait idle = WaitWorkerIdle(*worker, act);
  ASSERT_TRUE(idle.elapsed_ms.has_value()) << idle.last.DebugString();
  std::printf("client TryCancel -> worker idle in %.1f ms (allowed %.1f)\n", *idle.elapsed_ms,
              idle.allowed_ms());
  EXPECT_LE(*idle.elapsed_ms, idle.allowed_ms());
  EXPECT_EQ(job.Join().status.error_code(), grpc::StatusCode::CANCELLED);
  // The job id is free again at once.
  const GenerateResult again = Generate(stub(), Greedy(kSmol, "Hello", 2, "client-cancel"));
  EXPECT_TRUE(again.status.ok()) << again.Describe();
}

TEST_F(SchedulerClusterTest, ClientDisconnectReachesTheWorkerWithin100Ms) {
  const std::string grpcurl = FindGrpcurl();
  if (grpcurl.empty()) GTEST_SKIP() << "grpcurl not found (LLORCH_GRPCURL, tools/setup.sh)";
  // grpcurl as the client: killed with SIGKILL, its connection just closes.
  const std::string body =
      R"({"model": "smollm2", "job_id": "dropped", "text": "Tell me a long story.",
          "max_tokens": 4000, "ignore_eos": true, "sampling": {"temperature": 0}})";
  std::unique_ptr<Child> client = Spawn({grpcurl, "-plaintext", "-d", body, scheduler_->address(),
                                         "llorch.v1.Scheduler/Generate"});
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->ReadUntil("\"token\"", 3, seconds(60))) << client->output;
  const size_t at = client->output.find("\"worker\": \"");
  ASSERT_NE(at, std::string::npos) << client->output;
  const size_t begin = at + std::string("\"worker\": \"").size();
  const std::string address = client->output.substr(begin, client->output.find('"', begin) - begin);
  WorkerProcess* worker = WorkerAt(address);
  ASSERT_NE(worker, nullptr) << address;
  const auto act = Clock::now();
  kill(client->pid, SIGKILL);
  const IdleWait idle = WaitWorkerIdle(*worker, act);
  ASSERT_TRUE(idle.elapsed_ms.has_value()) << idle.last.DebugString();
  std::printf("client killed -> worker idle in %.1f ms (allowed %.1f)\n", *idle.elapsed_ms,
              idle.allowed_ms());
  EXPECT_LE(*idle.elapsed_ms, idle.allowed_ms());
  v1::ListWorkersResponse last;
  EXPECT_TRUE(WaitWorkers(
                  stub(),
                  [](const v1::ListWorkersResponse& response) {
                    for (const v1::WorkerStatus& w : response.workers()) {
                      if (w.dispatched_jobs() != 0) return false;
                    }
                    return true;
                  },
                  seconds(1), &last)
                  .has_value())
      << last.DebugString();
}

TEST_F(SchedulerClusterTest, DeadlineBoundsTheWorkersCall) {
  BackgroundGenerate job(stub(), Endless("too-slow"), milliseconds(2500));
  ASSERT_TRUE(job.WaitTokens(1)) << job.Join().Describe();
  WorkerProcess* worker = WorkerAt(job.worker());
  ASSERT_NE(worker, nullptr) << job.worker();
  std::this_thread::sleep_until(job.deadline() - milliseconds(50));
  ASSERT_GT(WorkerInfo(*worker).active_jobs(), 0) << "the job ended before its deadline";
  const IdleWait idle = WaitWorkerIdle(*worker, job.deadline());
  ASSERT_TRUE(idle.elapsed_ms.has_value()) << idle.last.DebugString();
  std::printf("deadline -> worker idle %.1f ms after it (allowed %.1f)\n", *idle.elapsed_ms,
              idle.allowed_ms());
  EXPECT_LE(*idle.elapsed_ms, idle.allowed_ms());
  const GenerateResult& result = job.Join();
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << result.Describe();
  EXPECT_FALSE(result.tokens.empty());
}

// =====================================================================
// Proof 4: the scheduler's queue. One SmolLM2 worker (the cluster's), one
// job on it at a time.
// =====================================================================
TEST_F(SchedulerClusterTest, QueueFullIsResourceExhausted) {
  std::unique_ptr<SchedulerProcess> scheduler = StartScheduler(
      {"--workers", smol1_->address(), "--max_queue", "1", "--max_jobs_per_worker", "1"});
  ASSERT_NE(scheduler, nullptr);
  ASSERT_TRUE(WaitAllUp(*scheduler, {smol1_}));
  BackgroundGenerate running(scheduler->stub(), Endless("q-running"));
  ASSERT_TRUE(running.WaitTokens(1)) << running.Join().Describe();
  BackgroundGenerate queued(scheduler->stub(), Endless("q-queued"));
  // The second waits in the scheduler: ListModels counts it.
  int queued_jobs = -1;
  for (int i = 0; i < 250 && queued_jobs != 1; ++i) {
    absl::StatusOr<v1::ListModelsResponse> models = ListModels(scheduler->stub());
    ASSERT_TRUE(models.ok());
    const v1::Model* m = FindModel(*models, kSmol);
    ASSERT_NE(m, nullptr);
    queued_jobs = m->queued_jobs();
    std::this_thread::sleep_for(milliseconds(20));
  }
  ASSERT_EQ(queued_jobs, 1);
  EXPECT_EQ(queued.tokens(), 0);
  const auto start = Clock::now();
  const GenerateResult refused = Generate(scheduler->stub(), Endless("q-refused"), seconds(30));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << refused.Describe();
  EXPECT_NE(refused.status.error_message().find("queue"), std::string::npos)
      << refused.status.error_message();
  EXPECT_LT(MsSince(start), 1000) << "a full queue refuses at once";
  EXPECT_FALSE(refused.started.has_value());

  // Cancel reaches a queued job too.
  EXPECT_TRUE(Cancel(scheduler->stub(), "q-queued").ok());
  const GenerateResult& cancelled_in_queue = queued.Join();
  EXPECT_TRUE(cancelled_in_queue.status.ok()) << cancelled_in_queue.Describe();
  ASSERT_TRUE(cancelled_in_queue.finished.has_value()) << cancelled_in_queue.Describe();
  EXPECT_EQ(cancelled_in_queue.finished->reason(), v1::FINISH_REASON_CANCELLED);
  EXPECT_TRUE(cancelled_in_queue.tokens.empty());
  EXPECT_TRUE(Cancel(scheduler->stub(), "q-running").ok());
  const GenerateResult& cancelled = running.Join();
  EXPECT_TRUE(cancelled.status.ok()) << cancelled.Describe();
  ASSERT_TRUE(cancelled.finished.has_value());
  EXPECT_EQ(cancelled.finished->reason(), v1::FINISH_REASON_CANCELLED);
  EXPECT_TRUE(WaitWorkerIdle(*smol1_, Clock::now()).elapsed_ms.has_value());
}

TEST_F(SchedulerClusterTest, QueueWaitIsBounded) {
  std::unique_ptr<SchedulerProcess> scheduler =
      StartScheduler({"--workers", smol1_->address(), "--max_jobs_per_worker", "1",
                      "--max_queue_wait", "500ms"});
  ASSERT_NE(scheduler, nullptr);
  ASSERT_TRUE(WaitAllUp(*scheduler, {smol1_}));
  BackgroundGenerate running(scheduler->stub(), Endless("w-running"));
  ASSERT_TRUE(running.WaitTokens(1)) << running.Join().Describe();
  const auto start = Clock::now();
  const GenerateResult waited = Generate(scheduler->stub(), Greedy(kSmol, "Hi", 4), seconds(30));
  const double elapsed = MsSince(start);
  EXPECT_EQ(waited.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << waited.Describe();
  std::printf("refused after %.0f ms in the queue: %s\n", elapsed,
              waited.status.error_message().c_str());
  EXPECT_GE(elapsed, 450);
  EXPECT_LT(elapsed, 3000);
  EXPECT_FALSE(waited.started.has_value());
  EXPECT_TRUE(Cancel(scheduler->stub(), "w-running").ok());
  EXPECT_TRUE(running.Join().status.ok()) << running.Join().Describe();
  EXPECT_TRUE(WaitWorkerIdle(*smol1_, Clock::now()).elapsed_ms.has_value());
}

// A gRPC client that stops reading is cut off: the scheduler reads at most
// --max_stream_buffer_events ahead of it, then the worker's stream waits, the
// worker's own limit cancels the job and frees its KV, and the client gets
// that status once it reads again; the scheduler's heap does not grow.
TEST_F(SchedulerClusterTest, ClientThatStopsReadingIsCutOff) {
  // SmolLM2: long enough a stream to fill every buffer on the way.
  std::unique_ptr<WorkerProcess> worker = StartWorker(kSmol, {"--max_stream_buffer_events", "8"});
  ASSERT_NE(worker, nullptr);
  std::unique_ptr<SchedulerProcess> scheduler =
      StartScheduler({"--workers", worker->address(), "--max_stream_buffer_events", "8"});
  ASSERT_NE(scheduler, nullptr);
  ASSERT_TRUE(WaitAllUp(*scheduler, {worker.get()}));
  absl::StatusOr<double> heap_before = scheduler->MetricValue("llorch_process_heap_bytes");
  ASSERT_TRUE(heap_before.ok()) << heap_before.status();

  // Flow-control windows of 8 KiB that do not grow: the scheduler's writes
  // stall after a few dozen of these ~230-byte events (20 alternatives each).
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 8192);
  auto stub = v1::Scheduler::NewStub(
      grpc::CreateCustomChannel(scheduler->address(), grpc::InsecureChannelCredentials(), args));
  v1::GenerateRequest request = Endless("unread");
  request.set_logprobs(20);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + seconds(300));
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      stub->Generate(&context, request);

  // Not reading: the job must end on its own, its KV freed.
  const auto start = Clock::now();
  bool busy_seen = false;
  wv1::InfoResponse info;
  while (MsSince(start) < 120000) {
    info = WorkerInfo(*worker);
    const bool busy = info.active_jobs() > 0 || info.kv_used_bytes() > 0;
    busy_seen = busy_seen || busy;
    if (busy_seen && !busy) break;
    std::this_thread::sleep_for(milliseconds(20));
  }
  const double cut_off_ms = MsSince(start);
  EXPECT_TRUE(busy_seen);
  EXPECT_EQ(info.active_jobs(), 0) << info.DebugString();
  EXPECT_EQ(info.kv_used_bytes(), 0) << info.DebugString();
  absl::StatusOr<double> heap_after = scheduler->MetricValue("llorch_process_heap_bytes");
  ASSERT_TRUE(heap_after.ok()) << heap_after.status();
  EXPECT_LT(*heap_after - *heap_before, 2 << 20);

  // Reading now: what was relayed before the stall, then the worker's status.
  int tokens = 0;
  v1::GenerateResponse event;
  while (reader->Read(&event)) tokens += event.has_token();
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_NE(status.error_message().find("not reading"), std::string::npos)
      << status.error_message();
  EXPECT_LT(tokens, 4000);
  std::printf("cut off after %.0f ms: %d tokens reached the client, scheduler heap %+.0f KiB\n",
              cut_off_ms, tokens, (*heap_after - *heap_before) / 1024);

  const GenerateResult after = Generate(scheduler->stub(), Greedy(kSmol, "Hello", 4));
  EXPECT_TRUE(after.status.ok()) << after.Describe();
  EXPECT_EQ(after.tokens.size(), 4u);
}

// =====================================================================
// Proof 3: workers die and come back; the scheduler restarts.
// =====================================================================
class SchedulerFailoverTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    workers_[0] = StartWorker(kSmol);
    workers_[1] = StartWorker(kSmol);
  }
  static void TearDownTestSuite() {
    workers_[0].reset();
    workers_[1].reset();
  }
  void SetUp() override {
    ASSERT_NE(workers_[0], nullptr);
    ASSERT_NE(workers_[1], nullptr);
  }
  // The index of the worker at `address`, or -1.
  static int IndexOf(const std::string& address) {
    for (int i = 0; i < 2; ++i) {
      if (SameWorker(address, *workers_[i])) return i;
    }
    return -1;
  }
  // SIGKILL, then the time until ListWorkers shows the worker DOWN.
  static std::optional<double> KillAndWaitDown(SchedulerProcess& scheduler, int index) {
    WorkerProcess& worker = *workers_[index];
    absl::StatusOr<int> killed = worker.Stop(SIGKILL, seconds(10));
    EXPECT_TRUE(killed.ok()) << killed.status();
    v1::ListWorkersResponse last;
    std::optional<double> took = WaitWorkers(
        scheduler.stub(), StateIs(worker, v1::WORKER_STATE_DOWN), seconds(5), &last);
    std::printf("killed worker %s shown DOWN after %.0f ms\n", worker.address().c_str(),
                took.value_or(-1));
    EXPECT_TRUE(took.has_value() && *took <= 2000)
        << "not DOWN within 2 s: " << last.DebugString() << Tail(scheduler.Log());
    if (const v1::WorkerStatus* w = FindWorker(last, worker)) {
      EXPECT_FALSE(w->last_error().empty()) << w->DebugString();
    }
    EXPECT_TRUE(
        scheduler.WaitForLog(absl::StrCat("llorch-scheduler: worker ", worker.address(), " down: "))
            .ok());
    return took;
  }
  // A new worker on the port of the one at `index`; once the scheduler shows
  // it UP, it has logged "worker ADDR up (model smollm2)" once more.
  static void RestartOnSamePort(int index, SchedulerProcess& scheduler) {
    const std::string up_line =
        absl::StrCat("llorch-scheduler: worker ", workers_[index]->address(), " up (model ",
                     kSmol, ")");
    const int ups_before = Count(scheduler.Log(), up_line);
    const int port = workers_[index]->grpc_port();
    workers_[index].reset();
    workers_[index] = StartWorkerOnPort(kSmol, port);
    ASSERT_NE(workers_[index], nullptr);
    v1::ListWorkersResponse last;
    std::optional<double> up = WaitWorkers(
        scheduler.stub(), StateIs(*workers_[index], v1::WORKER_STATE_UP), seconds(10), &last);
    ASSERT_TRUE(up.has_value()) << last.DebugString() << Tail(scheduler.Log());
    std::printf("restarted worker UP again after %.0f ms\n", *up);
    EXPECT_GT(Count(scheduler.Log(), up_line), ups_before) << Tail(scheduler.Log());
  }
  static int Count(const std::string& text, const std::string& part) {
    int n = 0;
    for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
    return n;
  }

  static std::unique_ptr<WorkerProcess> workers_[2];
};
std::unique_ptr<WorkerProcess> SchedulerFailoverTest::workers_[2];

// A prompt SmolLM2 takes a couple of seconds to prefill on one thread.
std::string LongPrompt() {
  std::string text;
  for (int i = 0; i < 30; ++i) text += "The quick brown fox jumps over the lazy dog. ";
  return text + "Now summarise:";
}

TEST_F(SchedulerFailoverTest, KilledBeforeTheFirstTokenRetriesOnAnotherWorker) {
  std::unique_ptr<SchedulerProcess> scheduler =
      StartScheduler(WorkersFlag({workers_[0].get(), workers_[1].get()}));
  ASSERT_NE(scheduler, nullptr);
  ASSERT_TRUE(WaitAllUp(*scheduler, {workers_[0].get(), workers_[1].get()}));

  const v1::GenerateRequest request = Greedy(kSmol, LongPrompt(), 8, "retried");
  BackgroundGenerate job(scheduler->stub(), request);
  // The worker it went to: the one with a dispatched job; killed at once,
  // while it prefills the prompt.
  v1::ListWorkersResponse dispatched;
  ASSERT_TRUE(WaitWorkers(
                  scheduler->stub(),
                  [](const v1::ListWorkersResponse& response) {
                    for (const v1::WorkerStatus& w : response.workers()) {
                      if (w.dispatched_jobs() > 0) return true;
                    }
                    return false;
                  },
                  seconds(30), &dispatched, milliseconds(2))
                  .has_value())
      << dispatched.DebugString();
  int victim = -1;
  for (const v1::WorkerStatus& w : dispatched.workers()) {
    if (w.dispatched_jobs() > 0) victim = IndexOf(w.address());
  }
  ASSERT_GE(victim, 0) << dispatched.DebugString();
  const int survivor = 1 - victim;
  KillAndWaitDown(*scheduler, victim);
  ASSERT_EQ(job.tokens(), 0) << "a token came before the kill: make the prompt longer";

  const GenerateResult& result = job.Join();
  ASSERT_TRUE(result.status.ok()) << result.Describe() << "\n" << Tail(scheduler->Log());
  ASSERT_TRUE(result.started.has_value());
  EXPECT_EQ(result.started_events, 1) << "one Started per job, from the worker that ran it";
  EXPECT_EQ(result.started->retries(), 1);
  EXPECT_TRUE(SameWorker(result.started->worker(), *workers_[survivor]))
      << result.started->worker();
  ASSERT_TRUE(result.finished.has_value());
  EXPECT_EQ(result.finished->reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(result.tokens.size(), 8u);
  // What an undisturbed run of the request gives.
  v1::GenerateRequest again = request;
  again.set_job_id("undisturbed");
  const GenerateResult reference = Generate(scheduler->stub(), again);
  ASSERT_TRUE(reference.status.ok()) << reference.Describe();
  EXPECT_EQ(reference.started->retries(), 0);
  EXPECT_EQ(result.ids(), reference.ids());

  // Back on its port, the worker is UP again and gets jobs again.
  RestartOnSamePort(victim, *scheduler);
  std::vector<std::unique_ptr<BackgroundGenerate>> jobs;
  for (int i = 0; i < 4; ++i) {
    v1::GenerateRequest r = Greedy(kSmol, "Count to ten:", 24);
    r.set_ignore_eos(true);
    jobs.push_back(std::make_unique<BackgroundGenerate>(scheduler->stub(), r));
  }
  int on_restarted = 0;
  for (auto& j : jobs) {
    const GenerateResult& r = j->Join();
    EXPECT_TRUE(r.status.ok()) << r.Describe();
    if (r.started.has_value() && SameWorker(r.started->worker(), *workers_[victim])) {
      ++on_restarted;
    }
  }
  EXPECT_GT(on_restarted, 0) << "the restarted worker got none of 4 concurrent jobs";
}

TEST_F(SchedulerFailoverTest, KilledMidStreamFailsThatJobOnly) {
  // One job per worker: the others run on the survivor or wait for it.
  std::unique_ptr<SchedulerProcess> scheduler =
      StartScheduler({"--workers", absl::StrCat(workers_[0]->address(), ",",
                                                workers_[1]->address()),
                      "--max_jobs_per_worker", "1"});
  ASSERT_NE(scheduler, nullptr);
  ASSERT_TRUE(WaitAllUp(*scheduler, {workers_[0].get(), workers_[1].get()}));

  BackgroundGenerate doomed(scheduler->stub(), Endless("doomed"));
  ASSERT_TRUE(doomed.WaitTokens(3)) << doomed.Join().Describe();
  const int victim = IndexOf(doomed.worker());
  ASSERT_GE(victim, 0) << doomed.worker();
  const int survivor = 1 - victim;
  std::vector<std::unique_ptr<BackgroundGenerate>> others;
  for (int i = 0; i < 2; ++i) {
    v1::GenerateRequest r = Greedy(kSmol, "Count to twenty:", 30, absl::StrCat("other-", i));
    r.set_ignore_eos(true);
    others.push_back(std::make_unique<BackgroundGenerate>(scheduler->stub(), r));
  }
  // One of them runs (on the survivor), the other waits for a slot.
  bool one_runs = false;
  for (int i = 0; i < 3000 && !one_runs; ++i) {
    one_runs = others[0]->tokens() > 0 || others[1]->tokens() > 0;
    std::this_thread::sleep_for(milliseconds(5));
  }
  ASSERT_TRUE(one_runs);
  KillAndWaitDown(*scheduler, victim);

  const GenerateResult& failed = doomed.Join();
  EXPECT_EQ(failed.status.error_code(), grpc::StatusCode::UNAVAILABLE) << failed.Describe();
  EXPECT_FALSE(failed.finished.has_value());
  ASSERT_TRUE(failed.started.has_value());
  EXPECT_GT(failed.Trailer("llorch-completion-tokens"), 0) << failed.Describe();
  EXPECT_EQ(failed.Trailer("llorch-completion-tokens"), static_cast<int64_t>(failed.tokens.size()))
      << "usage so far: the tokens the client got";
  EXPECT_EQ(failed.Trailer("llorch-prompt-tokens"), failed.started->prompt_tokens());
  for (auto& other : others) {
    const GenerateResult& r = other->Join();
    EXPECT_TRUE(r.status.ok()) << r.Describe() << "\n" << Tail(scheduler->Log());
    ASSERT_TRUE(r.finished.has_value());
    EXPECT_EQ(r.finished->reason(), v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(r.tokens.size(), 30u);
    ASSERT_TRUE(r.started.has_value());
    EXPECT_TRUE(SameWorker(r.started->worker(), *workers_[survivor])) << r.started->worker();
  }
  RestartOnSamePort(victim, *scheduler);
}

// A worker that hangs (SIGSTOP: its port still accepts connections) is shown
// DOWN once a probe times out (--probe_interval 500ms + --probe_timeout 1s)
// and gets no jobs; once it answers again it is UP again.
TEST_F(SchedulerFailoverTest, HungWorkerIsDownUntilItAnswersAgain) {
  std::unique_ptr<SchedulerProcess> scheduler =
      StartScheduler(WorkersFlag({workers_[0].get(), workers_[1].get()}));
  ASSERT_NE(scheduler, nullptr);
  ASSERT_TRUE(WaitAllUp(*scheduler, {workers_[0].get(), workers_[1].get()}));
  WorkerProcess& hung = *workers_[0];
  ASSERT_EQ(kill(hung.pid(), SIGSTOP), 0);
  struct Resume {
    pid_t pid;
    ~Resume() { kill(pid, SIGCONT); }
  } resume{hung.pid()};
  v1::ListWorkersResponse last;
  std::optional<double> down =
      WaitWorkers(scheduler->stub(), StateIs(hung, v1::WORKER_STATE_DOWN), seconds(5), &last);
  ASSERT_TRUE(down.has_value()) << last.DebugString() << Tail(scheduler->Log());
  std::printf("hung worker shown DOWN after %.0f ms\n", *down);
  EXPECT_LE(*down, 2500);
  for (int i = 0; i < 3; ++i) {
    const GenerateResult r = Generate(scheduler->stub(), Greedy(kSmol, "Hello", 3), seconds(30));
    EXPECT_TRUE(r.status.ok()) << r.Describe();
    if (r.started.has_value()) {
      EXPECT_TRUE(SameWorker(r.started->worker(), *workers_[1])) << r.started->worker();
    }
  }
  kill(hung.pid(), SIGCONT);
  std::optional<double> up =
      WaitWorkers(scheduler->stub(), StateIs(hung, v1::WORKER_STATE_UP), seconds(5), &last);
  EXPECT_TRUE(up.has_value()) << last.DebugString() << Tail(scheduler->Log());
}

// Workers started with --scheduler register themselves (no --workers); a
// restarted scheduler on the same port learns them again from their
// heartbeats, and serving resumes without restarting them.
TEST(SchedulerRegistrationTest, RestartedSchedulerLearnsItsWorkersAgain) {
  std::unique_ptr<SchedulerProcess> scheduler = StartScheduler({});
  ASSERT_NE(scheduler, nullptr);
  const int port = scheduler->grpc_port();
  std::unique_ptr<WorkerProcess> a = StartWorker(kTiny, {"--scheduler", scheduler->address()});
  std::unique_ptr<WorkerProcess> b = StartWorker(kTiny, {"--scheduler", scheduler->address()});
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  auto registered = [&](const v1::ListWorkersResponse& response) {
    int up = 0;
    for (WorkerProcess* worker : {a.get(), b.get()}) {
      const v1::WorkerStatus* w = FindWorker(response, *worker);
      if (w != nullptr && w->state() == v1::WORKER_STATE_UP && w->source() == "registered" &&
          w->model() == kTiny) {
        ++up;
      }
    }
    return up == 2;
  };
  v1::ListWorkersResponse last;
  std::optional<double> took = WaitWorkers(scheduler->stub(), registered, seconds(10), &last);
  ASSERT_TRUE(took.has_value()) << last.DebugString() << Tail(scheduler->Log());
  std::printf("2 workers registered and UP after %.0f ms\n", *took);
  const GenerateResult before = Generate(scheduler->stub(), Greedy(kTiny, "Hello", 6));
  ASSERT_TRUE(before.status.ok()) << before.Describe();

  absl::StatusOr<int> exit_code = scheduler->Stop(SIGTERM, seconds(30));
  ASSERT_TRUE(exit_code.ok()) << exit_code.status() << Tail(scheduler->Log());
  std::printf("scheduler exited with %d on SIGTERM\n", *exit_code);
  scheduler.reset();
  const auto restart = Clock::now();
  scheduler = StartScheduler({"--listen", absl::StrCat("127.0.0.1:", port)});
  ASSERT_NE(scheduler, nullptr);
  ASSERT_EQ(scheduler->grpc_port(), port);
  took = WaitWorkers(scheduler->stub(), registered, seconds(10), &last);
  ASSERT_TRUE(took.has_value()) << last.DebugString() << Tail(scheduler->Log());
  std::printf("after the restart, both workers UP again %.0f ms after it\n", MsSince(restart));
  const GenerateResult after = Generate(scheduler->stub(), Greedy(kTiny, "Hello", 6));
  ASSERT_TRUE(after.status.ok()) << after.Describe();
  EXPECT_EQ(after.ids(), before.ids());
  EXPECT_TRUE(a->Alive());
  EXPECT_TRUE(b->Alive());
}

// =====================================================================
// Proof 5: TLS on the public port, mutual TLS to the workers, bearer tokens.
// =====================================================================
class SchedulerSecurityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::string> dir = testing::MakeTempDir("llorch-scheduler-tls-");
    ASSERT_TRUE(dir.ok()) << dir.status();
    absl::StatusOr<testing::TestCerts> certs = testing::WriteTestCerts(*dir);
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = new testing::TestCerts(*certs);
    // The scheduler's --tls_cert is both its server identity (public port)
    // and its client identity (to the workers): a certificate for both uses.
    const std::string ext = *dir + "/both.cnf";
    std::ofstream(ext) << "[both]\nbasicConstraints = CA:FALSE\n"
                          "keyUsage = critical,digitalSignature\n"
                          "extendedKeyUsage = serverAuth,clientAuth\n"
                          "subjectAltName = IP:127.0.0.1,IP:::1,DNS:localhost\n";
    const std::string command = absl::StrCat(
        "cd '", *dir, "' && openssl req -new -config openssl.cnf -subj /CN=localhost "
        "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout both.key -out both.csr "
        ">/dev/null 2>&1 && openssl x509 -req -in both.csr -CA ca.pem -CAkey ca.key "
        "-set_serial 1009 -days 3650 -extfile both.cnf -extensions both -out both.pem "
        ">/dev/null 2>&1");
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
    both_cert_ = new std::string(*dir + "/both.pem");
    both_key_ = new std::string(*dir + "/both.key");
  }
  static void TearDownTestSuite() {
    if (certs_ != nullptr) std::filesystem::remove_all(certs_->dir);
    delete certs_;
    delete both_cert_;
    delete both_key_;
  }
  void SetUp() override { ASSERT_NE(certs_, nullptr); }

  static std::shared_ptr<grpc::Channel> Channel(const SchedulerProcess& scheduler,
                                                const SchedulerClientOptions& client) {
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
        SchedulerProcess::MakeChannel(scheduler.address(), client);
    EXPECT_TRUE(channel.ok()) << channel.status();
    return channel.ok() ? *channel : nullptr;
  }
  static grpc::Status ListModelsOn(const std::shared_ptr<grpc::Channel>& channel) {
    auto stub = v1::Scheduler::NewStub(channel);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + seconds(5));
    v1::ListModelsResponse response;
    return stub->ListModels(&context, v1::ListModelsRequest(), &response);
  }
  static GenerateResult GenerateOn(const std::shared_ptr<grpc::Channel>& channel,
                                   const std::string& model = kTiny) {
    auto stub = v1::Scheduler::NewStub(channel);
    return Generate(*stub, Greedy(model, "Hello", 4), seconds(10));
  }
  static HealthStatus::ServingStatus HealthOn(const std::shared_ptr<grpc::Channel>& channel,
                                              grpc::Status* status) {
    auto stub = grpc::health::v1::Health::NewStub(channel);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + seconds(5));
    HealthStatus response;
    *status = stub->Check(&context, grpc::health::v1::HealthCheckRequest(), &response);
    return response.status();
  }

  static testing::TestCerts* certs_;
  static std::string* both_cert_;
  static std::string* both_key_;
};
testing::TestCerts* SchedulerSecurityTest::certs_ = nullptr;
std::string* SchedulerSecurityTest::both_cert_ = nullptr;
std::string* SchedulerSecurityTest::both_key_ = nullptr;

TEST_F(SchedulerSecurityTest, TlsOnThePublicPort) {
  std::unique_ptr<WorkerProcess> worker = StartWorker(kTiny);
  ASSERT_NE(worker, nullptr);
  SchedulerClientOptions right;
  right.tls_ca = certs_->ca;
  std::unique_ptr<SchedulerProcess> scheduler = StartScheduler(
      {"--workers", worker->address(), "--tls_cert", certs_->server_cert, "--tls_key",
       certs_->server_key},
      right);
  ASSERT_NE(scheduler, nullptr);
  ASSERT_TRUE(WaitAllUp(*scheduler, {worker.get()}));
  const GenerateResult ok = GenerateOn(scheduler->channel());
  EXPECT_TRUE(ok.status.ok()) << ok.Describe();
  EXPECT_EQ(ok.tokens.size(), 4u);
  grpc::Status health;
  EXPECT_EQ(HealthOn(scheduler->channel(), &health), HealthStatus::SERVING);

  SchedulerClientOptions wrong_ca;
  wrong_ca.tls_ca = certs_->other_ca;
  for (const auto& [name, options] :
       std::vector<std::pair<std::string, SchedulerClientOptions>>{
           {"wrong CA", wrong_ca}, {"plaintext", SchedulerClientOptions()}}) {
    SCOPED_TRACE(name);
    std::shared_ptr<grpc::Channel> channel = Channel(*scheduler, options);
    ASSERT_NE(channel, nullptr);
    const grpc::Status list = ListModelsOn(channel);
    EXPECT_EQ(list.error_code(), grpc::StatusCode::UNAVAILABLE) << list.error_message();
    const GenerateResult refused = GenerateOn(channel);
    EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE) << refused.Describe();
    EXPECT_TRUE(refused.tokens.empty());
  }
}

TEST_F(SchedulerSecurityTest, MutualTlsToTheWorkers) {
  // Workers that require a client certificate from the CA.
  std::unique_ptr<WorkerProcess> worker =
      StartWorker(kTiny, {"--tls_cert", certs_->server_cert, "--tls_key", certs_->server_key,
                          "--tls_ca", certs_->ca});
  ASSERT_NE(worker, nullptr);
  SchedulerClientOptions client;
  client.tls_ca = certs_->ca;
  std::unique_ptr<SchedulerProcess> scheduler = StartScheduler(
      {"--workers", worker->address(), "--tls_cert", *both_cert_, "--tls_key", *both_key_,
       "--tls_ca", certs_->ca},
      client);
  ASSERT_NE(scheduler, nullptr);
  ASSERT_TRUE(WaitAllUp(*scheduler, {worker.get()}));
  const GenerateResult ok = GenerateOn(scheduler->channel());
  EXPECT_TRUE(ok.status.ok()) << ok.Describe() << Tail(scheduler->Log());
  EXPECT_EQ(ok.tokens.size(), 4u);

  // Schedulers that cannot show the workers a certificate from the CA, or do
  // not trust the workers' one, cannot use them: the workers show DOWN.
  struct Case {
    std::string name;
    std::vector<std::string> flags;
    SchedulerClientOptions client;
  };
  SchedulerClientOptions tls_client;
  tls_client.tls_ca = certs_->ca;
  const std::vector<Case> cases = {
      {"plaintext", {}, {}},
      {"TLS to the workers without a client certificate", {"--tls_ca", certs_->ca}, {}},
      {"a certificate from the CA but the wrong CA for the workers",
       {"--tls_cert", *both_cert_, "--tls_key", *both_key_, "--tls_ca", certs_->other_ca},
       tls_client},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    std::vector<std::string> flags = {"--workers", worker->address()};
    flags.insert(flags.end(), c.flags.begin(), c.flags.end());
    absl::StatusOr<std::unique_ptr<SchedulerProcess>> started =
        SchedulerProcess::Start(LLORCH_SCHEDULER_BINARY, flags, c.client);
    if (!started.ok()) {
      // Refusing such flags at start is as good, if it says why.
      EXPECT_TRUE(absl::StrContains(started.status().message(), "tls"))
          << started.status();
      std::printf("%s: refused at start: %s\n", c.name.c_str(),
                  std::string(started.status().message()).c_str());
      continue;
    }
    SchedulerProcess& other = **started;
    ASSERT_TRUE(other.WaitServing().ok()) << other.Log();
    v1::ListWorkersResponse last;
    std::optional<double> down =
        WaitWorkers(other.stub(), StateIs(*worker, v1::WORKER_STATE_DOWN), seconds(5), &last);
    EXPECT_TRUE(down.has_value()) << last.DebugString() << Tail(other.Log());
    if (const v1::WorkerStatus* w = FindWorker(last, *worker)) {
      EXPECT_FALSE(w->last_error().empty()) << w->DebugString();
      std::printf("%s: worker DOWN: %s\n", c.name.c_str(), w->last_error().c_str());
    }
    const GenerateResult refused = GenerateOn(other.channel());
    EXPECT_TRUE(refused.status.error_code() == grpc::StatusCode::UNAVAILABLE ||
                refused.status.error_code() == grpc::StatusCode::NOT_FOUND)
        << refused.Describe();
    EXPECT_TRUE(refused.tokens.empty());
  }
  // The first scheduler is not affected.
  const GenerateResult still = GenerateOn(scheduler->channel());
  EXPECT_TRUE(still.status.ok()) << still.Describe();
}

TEST_F(SchedulerSecurityTest, BearerTokens) {
  std::unique_ptr<WorkerProcess> worker = StartWorker(kTiny);
  ASSERT_NE(worker, nullptr);
  const std::string tokens_file = certs_->dir + "/tokens";
  std::ofstream(tokens_file) << "# clients\ntoken-alpha\n\n  token-beta  \n";
  SchedulerClientOptions alpha;
  alpha.bearer_token = "token-alpha";
  std::unique_ptr<SchedulerProcess> scheduler =
      StartScheduler({"--workers", worker->address(), "--auth_tokens_file", tokens_file}, alpha);
  ASSERT_NE(scheduler, nullptr);
  ASSERT_TRUE(WaitAllUp(*scheduler, {worker.get()}));

  for (const std::string token : {"token-alpha", "token-beta"}) {
    SCOPED_TRACE(token);
    SchedulerClientOptions options;
    options.bearer_token = token;
    std::shared_ptr<grpc::Channel> channel = Channel(*scheduler, options);
    EXPECT_TRUE(ListModelsOn(channel).ok());
    const GenerateResult ok = GenerateOn(channel);
    EXPECT_TRUE(ok.status.ok()) << ok.Describe();
    EXPECT_EQ(ok.tokens.size(), 4u);
  }
  SchedulerClientOptions wrong;
  wrong.bearer_token = "token-gamma";
  for (const auto& [name, options] :
       std::vector<std::pair<std::string, SchedulerClientOptions>>{
           {"no token", SchedulerClientOptions()}, {"wrong token", wrong}}) {
    SCOPED_TRACE(name);
    std::shared_ptr<grpc::Channel> channel = Channel(*scheduler, options);
    const grpc::Status list = ListModelsOn(channel);
    EXPECT_EQ(list.error_code(), grpc::StatusCode::UNAUTHENTICATED) << list.error_message();
    const GenerateResult refused = GenerateOn(channel);
    EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
        << refused.Describe();
    EXPECT_FALSE(refused.started.has_value());
    EXPECT_EQ(refused.status.error_message().find("token-gamma"), std::string::npos)
        << "the error quotes the token";
    auto stub = v1::Scheduler::NewStub(channel);
    EXPECT_EQ(Cancel(*stub, "x").error_code(), grpc::StatusCode::UNAUTHENTICATED);
    {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + seconds(5));
      v1::ListWorkersResponse response;
      EXPECT_EQ(stub->ListWorkers(&context, v1::ListWorkersRequest(), &response).error_code(),
                grpc::StatusCode::UNAUTHENTICATED);
    }
    // Health and reflection need no token.
    grpc::Status health;
    EXPECT_EQ(HealthOn(channel, &health), HealthStatus::SERVING) << health.error_message();
    namespace reflection = ::grpc::reflection::v1alpha;
    auto reflect = reflection::ServerReflection::NewStub(channel);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + seconds(5));
    auto stream = reflect->ServerReflectionInfo(&context);
    reflection::ServerReflectionRequest list_services;
    list_services.set_list_services("*");
    EXPECT_TRUE(stream->Write(list_services));
    reflection::ServerReflectionResponse response;
    EXPECT_TRUE(stream->Read(&response));
    EXPECT_GT(response.list_services_response().service_size(), 0) << response.DebugString();
    stream->WritesDone();
    EXPECT_TRUE(stream->Finish().ok());
  }

  // Tokens and TLS together.
  std::unique_ptr<SchedulerProcess> secure = StartScheduler(
      {"--workers", worker->address(), "--auth_tokens_file", tokens_file, "--tls_cert",
       certs_->server_cert, "--tls_key", certs_->server_key},
      SchedulerClientOptions{certs_->ca, "", "", "token-beta"});
  ASSERT_NE(secure, nullptr);
  ASSERT_TRUE(WaitAllUp(*secure, {worker.get()}));
  const GenerateResult ok = GenerateOn(secure->channel());
  EXPECT_TRUE(ok.status.ok()) << ok.Describe();
  const GenerateResult refused =
      GenerateOn(Channel(*secure, SchedulerClientOptions{certs_->ca, "", "", ""}));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << refused.Describe();
}

// With tokens and no --tls_ca a worker registers itself with a token of
// its own (--scheduler_token_file); one without a token, or with a wrong
// one, is refused and never listed, and the refusal is in its log.
TEST_F(SchedulerSecurityTest, WorkersRegisterWithABearerToken) {
  const std::string tokens_file = certs_->dir + "/registration-tokens";
  std::ofstream(tokens_file) << "client-token\nworker-token\n";
  const std::string worker_token = certs_->dir + "/worker-token";
  std::ofstream(worker_token) << "worker-token\n";
  const std::string wrong_token = certs_->dir + "/wrong-token";
  std::ofstream(wrong_token) << "not-a-token\n";
  SchedulerClientOptions client;
  client.bearer_token = "client-token";
  std::unique_ptr<SchedulerProcess> scheduler =
      StartScheduler({"--auth_tokens_file", tokens_file}, client);
  ASSERT_NE(scheduler, nullptr);
  std::unique_ptr<WorkerProcess> with_token = StartWorker(
      kTiny, {"--scheduler", scheduler->address(), "--scheduler_token_file", worker_token});
  std::unique_ptr<WorkerProcess> without = StartWorker(kTiny, {"--scheduler", scheduler->address()});
  std::unique_ptr<WorkerProcess> wrong = StartWorker(
      kTiny, {"--scheduler", scheduler->address(), "--scheduler_token_file", wrong_token});
  ASSERT_NE(with_token, nullptr);
  ASSERT_NE(without, nullptr);
  ASSERT_NE(wrong, nullptr);
  v1::ListWorkersResponse last;
  std::optional<double> took = WaitWorkers(
      scheduler->stub(),
      [&](const v1::ListWorkersResponse& response) {
        const v1::WorkerStatus* w = FindWorker(response, *with_token);
        return w != nullptr && w->state() == v1::WORKER_STATE_UP && w->source() == "registered";
      },
      seconds(10), &last);
  ASSERT_TRUE(took.has_value()) << last.DebugString() << Tail(with_token->Log());
  const GenerateResult ok = Generate(scheduler->stub(), Greedy(kTiny, "Hello", 4));
  EXPECT_TRUE(ok.status.ok()) << ok.Describe();
  for (WorkerProcess* refused : {without.get(), wrong.get()}) {
    const auto deadline = Clock::now() + seconds(10);
    while (!absl::StrContains(refused->Log(), "cannot register") && Clock::now() < deadline) {
      std::this_thread::sleep_for(milliseconds(20));
    }
    EXPECT_TRUE(absl::StrContains(refused->Log(), "cannot register")) << Tail(refused->Log());
    EXPECT_TRUE(absl::StrContains(refused->Log(), "bearer token")) << Tail(refused->Log());
    EXPECT_EQ(refused->Log().find("not-a-token"), std::string::npos) << "a log quotes the token";
  }
  absl::StatusOr<v1::ListWorkersResponse> listed = ListWorkers(scheduler->stub());
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->workers_size(), 1) << listed->DebugString();
  EXPECT_EQ(FindWorker(*listed, *without), nullptr);
  EXPECT_EQ(FindWorker(*listed, *wrong), nullptr);
}

}  // namespace
}  // namespace llorch
