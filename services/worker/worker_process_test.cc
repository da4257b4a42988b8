// Integration tests over the real llorch-worker process on loopback
// (issue 4's proofs 1-6; issue 10's defaults, limits and robustness).
// Models: a tiny random-weight GGUF and SmolLM2.
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/descriptor.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "services/worker/worker_client.h"
#include "tests/support/cli_run.h"
#include "tests/support/worker_process.h"

namespace llorch {
namespace {

namespace v1 = worker::v1;
using ::llorch::testing::CliReasonName;
using ::llorch::testing::CliRun;
using ::llorch::testing::RunCliCommand;
using ::llorch::testing::WorkerProcess;
using HealthStatus = ::grpc::health::v1::HealthCheckResponse;

std::string ModelPath(const std::string& name) {
  if (name == "smollm2") {
    const char* path = std::getenv("LLORCH_DEFAULT_MODEL");
    return path != nullptr ? path : "";
  }
  return std::string(LLORCH_TESTDATA_DIR) + "/" + name + ".gguf";
}

std::unique_ptr<WorkerProcess> StartWorker(const std::string& model,
                                           std::vector<std::string> args = {}) {
  absl::StatusOr<std::unique_ptr<WorkerProcess>> worker =
      WorkerProcess::Start(LLORCH_WORKER_BINARY, ModelPath(model), std::move(args));
  EXPECT_TRUE(worker.ok()) << worker.status();
  if (!worker.ok()) return nullptr;
  absl::Status serving = (*worker)->WaitServing();
  EXPECT_TRUE(serving.ok()) << serving;
  return serving.ok() ? std::move(*worker) : nullptr;
}

ExecuteResult Execute(WorkerProcess& worker, const v1::ExecuteRequest& request,
                  std::chrono::milliseconds timeout = std::chrono::seconds(300)) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout);
  return ExecuteToEnd(worker.stub(), request, &context);
}

v1::ExecuteRequest Greedy(const std::string& job_id, const std::string& text, int max_tokens) {
  v1::ExecuteRequest request;
  request.set_job_id(job_id);
  request.set_text(text);
  request.mutable_sampling()->set_temperature(0);
  request.set_max_tokens(max_tokens);
  return request;
}

// `llorch run --format jsonl` on the same model and parameters.
CliRun RunCli(const std::string& model, const std::string& args) {
  return RunCliCommand(absl::StrCat(LLORCH_CLI_BINARY, " run --model '", ModelPath(model),
                                    "' --format jsonl ", args, " 2>/dev/null"));
}

// Proof 1: the stream carries exactly what `llorch run` prints.
class StreamEqualsCliTest : public ::testing::TestWithParam<std::string> {};

TEST_P(StreamEqualsCliTest, GreedyAndSeededSampling) {
  std::unique_ptr<WorkerProcess> worker = StartWorker(GetParam());
  ASSERT_NE(worker, nullptr);
  const std::string prompt = "The three primary colours are";
  struct Case {
    std::string cli_args;
    std::function<void(v1::ExecuteRequest&)> set;
  };
  const std::vector<Case> cases = {
      {"--temperature 0 --max-tokens 24 --logprobs 3",
       [](v1::ExecuteRequest& r) { r.mutable_sampling()->set_temperature(0); }},
      {"--temperature 0.9 --top-k 40 --top-p 0.95 --min-p 0.02 --seed 1234 --max-tokens 24 "
       "--logprobs 3",
       [](v1::ExecuteRequest& r) {
         r.mutable_sampling()->set_temperature(0.9f);
         r.mutable_sampling()->set_top_k(40);
         r.mutable_sampling()->set_top_p(0.95f);
         r.mutable_sampling()->set_min_p(0.02f);
         r.mutable_sampling()->set_seed(1234);
       }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.cli_args);
    CliRun cli = RunCli(GetParam(), absl::StrCat("--prompt '", prompt, "' ", c.cli_args));
    ASSERT_FALSE(cli.tokens.empty());
    v1::ExecuteRequest request;
    request.set_job_id("same-as-cli");
    request.set_text(prompt);
    request.set_max_tokens(24);
    request.set_logprobs(3);
    c.set(request);
    ExecuteResult result = Execute(*worker, request);
    ASSERT_TRUE(result.status.ok()) << result.status.error_message();
    ASSERT_TRUE(result.started.has_value());
    ASSERT_TRUE(result.finished.has_value());
    EXPECT_EQ(result.started->job_id(), "same-as-cli");
    EXPECT_EQ(result.started->prompt_tokens(), cli.finished["prompt_tokens"].get<int>());
    ASSERT_EQ(result.tokens.size(), cli.tokens.size());
    for (size_t i = 0; i < cli.tokens.size(); ++i) {
      const v1::Token& token = result.tokens[i];
      EXPECT_EQ(token.index(), static_cast<int>(i));
      EXPECT_EQ(token.id(), cli.tokens[i]["id"].get<int>()) << "token " << i;
      EXPECT_EQ(token.text(), cli.tokens[i]["text"].get<std::string>()) << "token " << i;
      EXPECT_NEAR(token.logprob(), cli.tokens[i]["logprob"].get<double>(), 1e-4);
      ASSERT_EQ(token.top_logprobs_size(), 3);
      EXPECT_EQ(token.top_logprobs(0).id(), cli.tokens[i]["top_logprobs"][0][0].get<int>());
    }
    EXPECT_EQ(CliReasonName(result.finished->reason()), cli.finished["reason"].get<std::string>());
    EXPECT_EQ(result.finished->completion_tokens(), static_cast<int>(cli.tokens.size()));
    EXPECT_GT(result.finished->ttft_seconds(), 0);
  }
  absl::StatusOr<int> exit_code = worker->Stop(SIGTERM, std::chrono::seconds(30));
  ASSERT_TRUE(exit_code.ok());
  EXPECT_EQ(*exit_code, 0);
}

INSTANTIATE_TEST_SUITE_P(Models, StreamEqualsCliTest,
                         ::testing::Values("tiny-f32-gqa", "tiny-q4_1", "smollm2"));

// The value of the sample line starting with `series` ("name{labels}"), or -1.
double SampleValue(const std::string& metrics, const std::string& series) {
  const std::string prefix = series + " ";
  size_t at = metrics.find("\n" + prefix);
  if (at == std::string::npos) return -1;
  return std::strtod(metrics.c_str() + at + 1 + prefix.size(), nullptr);
}

// Proof 2: concurrent jobs of different prompt lengths produce what each
// produces alone. A divergence is reported, not failed, only where the lone
// run had a genuine near-tie (top-2 log-prob margin < 1e-3) at that token.
std::vector<std::string> Prompts(int n) {
  const std::vector<std::string> base = {
      "Hi",
      "The capital of France is",
      "Write a haiku about the sea.",
      "List three uses of a paperclip: 1.",
      "Once upon a time, in a small village by the mountains, there lived",
      "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
      "Translate to French: The weather is lovely today and we are going to the beach.",
      "Q: What is 17 + 25?\nA:",
  };
  std::vector<std::string> prompts;
  for (int i = 0; i < n; ++i) {
    prompts.push_back(i < static_cast<int>(base.size())
                          ? base[i]
                          : absl::StrCat(base[i % base.size()], " ", base[(i * 3) % base.size()]));
  }
  return prompts;
}

class ConcurrencyTest : public ::testing::TestWithParam<std::tuple<std::string, int>> {};

TEST_P(ConcurrencyTest, ConcurrentJobsEqualAlone) {
  const auto& [model, num_jobs] = GetParam();
  std::unique_ptr<WorkerProcess> worker = StartWorker(model, {"--max_batch", "16"});
  ASSERT_NE(worker, nullptr);
  const std::vector<std::string> prompts = Prompts(num_jobs);
  auto request_for = [&](int i) {
    v1::ExecuteRequest request = Greedy(absl::StrCat("job-", i), prompts[i], 20 + i % 5);
    request.set_logprobs(2);
    request.set_ignore_eos(true);
    // Half of them sample with a fixed seed each, on quantised models only:
    // their CPU kernels are batch-invariant bit for bit, while F32 weights
    // go through mv for one row and GEMM for several, whose last-bit
    // differences can move a sampled draw across a CDF boundary (greedy
    // tokens only flip at near-ties, which are reported below).
    if (i % 2 == 1 && model != "tiny-f32-gqa") {
      request.mutable_sampling()->set_temperature(0.8f);
      request.mutable_sampling()->set_top_k(50);
      request.mutable_sampling()->set_seed(1000 + i);
    }
    return request;
  };
  std::vector<ExecuteResult> alone(num_jobs), together(num_jobs);
  for (int i = 0; i < num_jobs; ++i) alone[i] = Execute(*worker, request_for(i));
  std::vector<std::thread> threads;
  for (int i = 0; i < num_jobs; ++i) {
    threads.emplace_back([&, i] { together[i] = Execute(*worker, request_for(i)); });
  }
  for (std::thread& t : threads) t.join();

  int near_ties = 0, identical = 0;
  for (int i = 0; i < num_jobs; ++i) {
    ASSERT_TRUE(alone[i].status.ok()) << alone[i].status.error_message();
    ASSERT_TRUE(together[i].status.ok()) << together[i].status.error_message();
    const std::vector<int32_t> a = alone[i].ids(), b = together[i].ids();
    size_t first_diff = 0;
    while (first_diff < a.size() && first_diff < b.size() && a[first_diff] == b[first_diff]) {
      ++first_diff;
    }
    if (first_diff == a.size() && a.size() == b.size()) {
      ++identical;
      continue;
    }
    ASSERT_LT(first_diff, a.size());
    const v1::Token& lone = alone[i].tokens[first_diff];
    const float margin = lone.top_logprobs(0).logprob() - lone.top_logprobs(1).logprob();
    if (margin < 1e-3f) {
      ++near_ties;
      std::printf("job %d: near-tie at token %zu (lone margin %.2e): reported, not failed\n", i,
                  first_diff, margin);
    } else {
      ADD_FAILURE() << "job " << i << " diverges at token " << first_diff << " (lone margin "
                    << margin << ")\n alone:    " << absl::StrJoin(a, ",")
                    << "\n together: " << absl::StrJoin(b, ",");
    }
  }
  std::printf("%d jobs on %s: %d identical, %d near-ties\n", num_jobs, model.c_str(),
              identical, near_ties);
  // They really ran together: some engine steps batched more than 4 jobs.
  absl::StatusOr<std::string> metrics = worker->Metrics();
  ASSERT_TRUE(metrics.ok());
  const double steps = SampleValue(*metrics, "llorch_worker_batch_size_count");
  const double small_steps = SampleValue(*metrics, "llorch_worker_batch_size_bucket{le=\"4\"}");
  EXPECT_LT(small_steps, steps) << *metrics;
}

INSTANTIATE_TEST_SUITE_P(
    Jobs, ConcurrencyTest,
    ::testing::Values(std::make_tuple(std::string("tiny-f32-gqa"), 8),
                      std::make_tuple(std::string("tiny-f32-gqa"), 16),
                      std::make_tuple(std::string("tiny-q4_1"), 16),
                      std::make_tuple(std::string("smollm2"), 8),
                      std::make_tuple(std::string("smollm2"), 16)),
    [](const auto& info) {
      std::string name = std::get<0>(info.param);
      for (char& c : name) if (!isalnum(static_cast<unsigned char>(c))) c = '_';
      return absl::StrCat(name, "_", std::get<1>(info.param));
    });

// Proof 3: cancel, client disconnect and deadline each free the job's KV.
class KvReleaseTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { worker_ = StartWorker("smollm2").release(); }
  static void TearDownTestSuite() { delete worker_; }

  static v1::ExecuteRequest LongJob(const std::string& job_id) {
    v1::ExecuteRequest request = Greedy(job_id, "Tell me a very long story about a dragon.", 4000);
    request.set_ignore_eos(true);
    return request;
  }

  // Polls until the KV-used gauge and Info both read 0.
  static void ExpectKvReturnsToZero() {
    double gauge = -1;
    int64_t info_used = -1;
    for (int i = 0; i < 200; ++i) {
      absl::StatusOr<double> value = worker_->MetricValue("llorch_worker_kv_cache_used_bytes");
      ASSERT_TRUE(value.ok()) << value.status();
      gauge = *value;
      grpc::ClientContext context;
      v1::InfoResponse info;
      ASSERT_TRUE(worker_->stub().Info(&context, v1::InfoRequest(), &info).ok());
      info_used = info.kv_used_bytes();
      if (gauge == 0 && info_used == 0 && info.active_jobs() == 0) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    FAIL() << "KV used stays at " << gauge << " (gauge), " << info_used << " (Info)";
  }

  // KV is in use while a job streams.
  static void ExpectKvInUse() {
    absl::StatusOr<double> value = worker_->MetricValue("llorch_worker_kv_cache_used_bytes");
    ASSERT_TRUE(value.ok());
    EXPECT_GT(*value, 0);
  }

  static WorkerProcess* worker_;
};
WorkerProcess* KvReleaseTest::worker_ = nullptr;

TEST_F(KvReleaseTest, CancelRpc) {
  ASSERT_NE(worker_, nullptr);
  grpc::ClientContext context;
  std::atomic<bool> cancelled{false};
  ExecuteResult result = ExecuteToEnd(worker_->stub(), LongJob("to-cancel"), &context,
                                      [&](const v1::ExecuteEvent& event) {
    if (event.has_token() && event.token().index() == 2 && !cancelled.exchange(true)) {
      ExpectKvInUse();
      grpc::ClientContext cancel_context;
      v1::CancelRequest cancel;
      cancel.set_job_id("to-cancel");
      v1::CancelResponse response;
      EXPECT_TRUE(worker_->stub().Cancel(&cancel_context, cancel, &response).ok());
    }
  });
  EXPECT_TRUE(result.status.ok()) << result.status.error_message();
  ASSERT_TRUE(result.finished.has_value());
  EXPECT_EQ(result.finished->reason(), v1::FINISH_REASON_CANCELLED);
  EXPECT_LT(result.tokens.size(), 100u);
  ExpectKvReturnsToZero();
  // Idempotent: cancelling again, or an unknown id, succeeds.
  for (const char* job_id : {"to-cancel", "never-existed"}) {
    grpc::ClientContext cancel_context;
    v1::CancelRequest cancel;
    cancel.set_job_id(job_id);
    v1::CancelResponse response;
    EXPECT_TRUE(worker_->stub().Cancel(&cancel_context, cancel, &response).ok());
  }
}

TEST_F(KvReleaseTest, ClientDisconnect) {
  ASSERT_NE(worker_, nullptr);
  grpc::ClientContext context;
  ExecuteResult result = ExecuteToEnd(worker_->stub(), LongJob("to-drop"), &context,
                                      [&](const v1::ExecuteEvent& event) {
    if (event.has_token() && event.token().index() == 2) {
      ExpectKvInUse();
      context.TryCancel();
    }
  });
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::CANCELLED);
  ExpectKvReturnsToZero();
}

TEST_F(KvReleaseTest, Deadline) {
  ASSERT_NE(worker_, nullptr);
  ExecuteResult result = Execute(*worker_, LongJob("too-slow"), std::chrono::milliseconds(1500));
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_FALSE(result.tokens.empty());
  ExpectKvReturnsToZero();
  // The job id is free again, and the worker serves on.
  ExecuteResult again = Execute(*worker_, Greedy("too-slow", "Hello", 4));
  EXPECT_TRUE(again.status.ok()) << again.status.error_message();
  EXPECT_EQ(again.tokens.size(), 4u);
}

// Proof 4: malformed requests get the right code and a message naming the field.
TEST(MalformedRequestTest, CodesAndMessages) {
  std::unique_ptr<WorkerProcess> worker = StartWorker("tiny-f32-gqa");
  ASSERT_NE(worker, nullptr);
  grpc::ClientContext info_context;
  v1::InfoResponse info;
  ASSERT_TRUE(worker->stub().Info(&info_context, v1::InfoRequest(), &info).ok());
  const int vocab = static_cast<int>(info.vocab_size());
  const int context_length = static_cast<int>(info.context_length());

  struct Case {
    std::string name;
    std::function<void(v1::ExecuteRequest&)> mutate;
    grpc::StatusCode code;
    std::string field;  // must appear in the message
  };
  auto ids = [](v1::ExecuteRequest& r, std::vector<int> values) {
    r.mutable_token_ids()->clear_ids();
    for (int v : values) r.mutable_token_ids()->add_ids(v);
  };
  const grpc::StatusCode kInvalid = grpc::StatusCode::INVALID_ARGUMENT;
  const std::vector<Case> cases = {
      {"no job id", [](auto& r) { r.clear_job_id(); }, kInvalid, "job_id"},
      {"long job id", [](auto& r) { r.set_job_id(std::string(300, 'j')); }, kInvalid, "job_id"},
      {"no prompt", [](auto& r) { r.clear_prompt(); }, kInvalid, "prompt"},
      {"empty text", [](auto& r) { r.set_text(""); }, kInvalid, "text"},
      {"empty token_ids", [](auto& r) { r.mutable_token_ids(); }, kInvalid, "token_ids"},
      {"negative id", [&](auto& r) { ids(r, {1, -1}); }, kInvalid, "token_ids"},
      {"id past vocab", [&](auto& r) { ids(r, {1, vocab}); }, kInvalid, "token_ids"},
      {"prompt over context", [&](auto& r) { ids(r, std::vector<int>(context_length, 5)); },
       kInvalid, "context"},
      {"negative temperature", [](auto& r) { r.mutable_sampling()->set_temperature(-1); },
       kInvalid, "temperature"},
      {"NaN temperature", [](auto& r) { r.mutable_sampling()->set_temperature(NAN); }, kInvalid,
       "temperature"},
      {"negative top_k", [](auto& r) { r.mutable_sampling()->set_top_k(-3); }, kInvalid, "top_k"},
      {"top_p zero", [](auto& r) { r.mutable_sampling()->set_top_p(0); }, kInvalid, "top_p"},
      {"top_p above 1", [](auto& r) { r.mutable_sampling()->set_top_p(1.5f); }, kInvalid, "top_p"},
      {"min_p above 1", [](auto& r) { r.mutable_sampling()->set_min_p(2); }, kInvalid, "min_p"},
      {"repetition_penalty zero",
       [](auto& r) { r.mutable_sampling()->set_repetition_penalty(0); }, kInvalid,
       "repetition_penalty"},
      {"negative max_tokens", [](auto& r) { r.set_max_tokens(-5); }, kInvalid, "max_tokens"},
      {"logprobs above 20", [](auto& r) { r.set_logprobs(21); }, kInvalid, "logprobs"},
      {"negative logprobs", [](auto& r) { r.set_logprobs(-1); }, kInvalid, "logprobs"},
      {"empty stop string", [](auto& r) { r.add_stop(""); }, kInvalid, "stop"},
      {"stop id past vocab", [&](auto& r) { r.add_stop_token_ids(vocab + 7); }, kInvalid,
       "stop_token_ids"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    v1::ExecuteRequest request = Greedy("bad", "Hello there", 4);
    c.mutate(request);
    ExecuteResult result = Execute(*worker, request);
    EXPECT_EQ(result.status.error_code(), c.code) << result.status.error_message();
    EXPECT_NE(result.status.error_message().find(c.field), std::string::npos)
        << result.status.error_message();
    EXPECT_FALSE(result.started.has_value());
    std::printf("%-24s -> %d %s\n", c.name.c_str(), result.status.error_code(),
                result.status.error_message().c_str());
  }

  // A live duplicate id, while a good job with that id runs.
  {
    grpc::ClientContext context;
    v1::ExecuteRequest live = Greedy("dup", "Hello", 250);
    live.set_ignore_eos(true);
    ExecuteResult duplicate;
    ExecuteResult first = ExecuteToEnd(worker->stub(), live, &context,
                                       [&](const v1::ExecuteEvent& event) {
      if (event.has_started()) duplicate = Execute(*worker, Greedy("dup", "Other", 4));
    });
    EXPECT_TRUE(first.status.ok());
    EXPECT_EQ(first.tokens.size(), 250u);  // untouched by the rejected duplicate
    EXPECT_EQ(duplicate.status.error_code(), grpc::StatusCode::ALREADY_EXISTS);
    EXPECT_NE(duplicate.status.error_message().find("dup"), std::string::npos);
  }
  // Cancel needs an id.
  {
    grpc::ClientContext context;
    v1::CancelResponse response;
    grpc::Status status = worker->stub().Cancel(&context, v1::CancelRequest(), &response);
    EXPECT_EQ(status.error_code(), kInvalid);
    EXPECT_NE(status.error_message().find("job_id"), std::string::npos);
  }
  // After all that, a good request still works, and the worker counted the rejections.
  ExecuteResult good = Execute(*worker, Greedy("good", "Hello there", 4));
  EXPECT_TRUE(good.status.ok());
  EXPECT_EQ(good.tokens.size(), 4u);
  absl::StatusOr<std::string> metrics = worker->Metrics();
  ASSERT_TRUE(metrics.ok());
  EXPECT_NE(metrics->find("llorch_worker_requests_total{outcome=\"invalid_argument\"} 20"),
            std::string::npos)
      << *metrics;
}

TEST(MalformedRequestTest, ResourceExhausted) {
  // Room for one small job at a time and no queue.
  std::unique_ptr<WorkerProcess> worker = StartWorker(
      "tiny-f32-gqa", {"--kv_budget", "64tokens", "--max_batch", "1", "--max_waiting", "0"});
  ASSERT_NE(worker, nullptr);
  ExecuteResult too_big = Execute(*worker, Greedy("too-big", "Hello", 100));
  EXPECT_EQ(too_big.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(too_big.status.error_message().find("KV"), std::string::npos)
      << too_big.status.error_message();

  grpc::ClientContext context;
  v1::ExecuteRequest running = Greedy("running", "Hello", 40);
  running.set_ignore_eos(true);
  ExecuteResult queued;
  ExecuteResult first = ExecuteToEnd(worker->stub(), running, &context,
                                     [&](const v1::ExecuteEvent& event) {
    if (event.has_started()) {
      // Admission happens only while the first job holds the only slot; with
      // no queue, a second job is refused (or, rarely, runs if the first
      // already finished — the stream below shows which).
      queued = Execute(*worker, Greedy("second", "Hi", 8));
    }
  });
  EXPECT_TRUE(first.status.ok());
  EXPECT_EQ(queued.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << queued.status.error_message();
  EXPECT_NE(queued.status.error_message().find("queue"), std::string::npos);
}

// Proof 5: 300 rapid sequential requests, then 300 with 8 in flight.
TEST(LoadTest, NoFailuresAndBoundedMemory) {
  std::unique_ptr<WorkerProcess> worker = StartWorker("tiny-f32-gqa");
  ASSERT_NE(worker, nullptr);
  const std::vector<std::string> prompts = Prompts(8);
  std::atomic<int> failures{0};
  auto one = [&](int i) {
    v1::ExecuteRequest request = Greedy(absl::StrCat("load-", i), prompts[i % 8], 8 + i % 9);
    if (i % 3 == 0) request.mutable_sampling()->set_temperature(0.7f);
    if (i % 5 == 0) request.set_logprobs(5);
    ExecuteResult result = Execute(*worker, request);
    if (!result.status.ok() || !result.finished.has_value()) {
      if (failures.fetch_add(1) < 5) {
        ADD_FAILURE() << "request " << i << ": " << result.status.error_message();
      }
    }
  };
  auto eight_in_flight = [&](int first, int count) {
    std::atomic<int> next{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&] {
        for (int i = next++; i < count; i = next++) one(first + i);
      });
    }
    for (std::thread& t : threads) t.join();
  };
  // Warm both shapes first: batches of many one-token steps take their own
  // code (attention across threads, per-thread buffers) and fault in library
  // pages the worker released at start; that is not growth under load.
  for (int i = 0; i < 30; ++i) one(i);
  eight_in_flight(100, 60);
  absl::StatusOr<int64_t> rss_before = worker->RssBytes();
  ASSERT_TRUE(rss_before.ok());
  for (int i = 0; i < 300; ++i) one(1000 + i);
  eight_in_flight(2000, 300);
  absl::StatusOr<int64_t> rss_after = worker->RssBytes();
  ASSERT_TRUE(rss_after.ok());
  EXPECT_EQ(failures.load(), 0);
  // A bound, not a leak detector (tools/soak.sh fits the idle heap's slope per
  // request): the per-thread malloc arenas of the 8-in-flight phase move the
  // heap by up to ~10 MiB either way between runs (measured: 120-131 MiB of
  // anonymous memory across rounds, no trend). 600 requests leaking a logits
  // row, a KV block or a job's buffers each would pass 16 MiB.
  const int64_t growth = *rss_after - *rss_before;
  std::printf("RSS %.1f MiB -> %.1f MiB (%+.1f MiB)\n", *rss_before / 1048576.0,
              *rss_after / 1048576.0, growth / 1048576.0);
  EXPECT_LT(growth, int64_t{16} << 20);
  absl::StatusOr<double> total = worker->MetricValue("llorch_worker_generated_tokens_total");
  ASSERT_TRUE(total.ok());
  EXPECT_GT(*total, 600 * 8);
}

// Proof 6: health is SERVING only after warm-up; SIGTERM drains.
HealthStatus::ServingStatus Health(grpc::Channel& channel, const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(
      std::shared_ptr<grpc::Channel>(&channel, [](grpc::Channel*) {}));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  HealthStatus response;
  grpc::Status status = stub->Check(&context, request, &response);
  return status.ok() ? response.status() : HealthStatus::UNKNOWN;
}

TEST(HealthTest, ServingOnlyAfterWarmUpAndDrainOnSigterm) {
  absl::StatusOr<std::unique_ptr<WorkerProcess>> started =
      WorkerProcess::Start(LLORCH_WORKER_BINARY, ModelPath("smollm2"), {"--drain_timeout", "60s"});
  ASSERT_TRUE(started.ok()) << started.status();
  WorkerProcess& worker = **started;
  // Poll from the moment the port is open: the first answers come while
  // the weights load, and must be NOT_SERVING.
  std::vector<HealthStatus::ServingStatus> seen;
  bool info_ok_when_serving = false;
  while (true) {
    const HealthStatus::ServingStatus status = Health(*worker.channel(), "");
    if (status != HealthStatus::UNKNOWN && (seen.empty() || seen.back() != status)) {
      seen.push_back(status);
    }
    if (status == HealthStatus::SERVING) {
      EXPECT_NE(worker.Log().find("loaded"), std::string::npos);
      grpc::ClientContext context;
      v1::InfoResponse info;
      info_ok_when_serving = worker.stub().Info(&context, v1::InfoRequest(), &info).ok();
      EXPECT_FALSE(info.draining());
      break;
    }
    ASSERT_TRUE(worker.Alive()) << worker.Log();
  }
  ASSERT_GE(seen.size(), 2u) << "no NOT_SERVING seen before SERVING";
  EXPECT_EQ(seen.front(), HealthStatus::NOT_SERVING);
  EXPECT_EQ(seen.back(), HealthStatus::SERVING);
  EXPECT_TRUE(info_ok_when_serving);
  EXPECT_EQ(Health(*worker.channel(), "llorch.worker.v1.Worker"), HealthStatus::SERVING);

  // A job in flight when SIGTERM arrives runs to its end; meanwhile health
  // says NOT_SERVING, Info says draining and new jobs are refused with
  // UNAVAILABLE.
  grpc::ClientContext context;
  v1::ExecuteRequest request = Greedy("in-flight", "Count from one to one hundred:", 48);
  request.set_ignore_eos(true);
  HealthStatus::ServingStatus during_drain = HealthStatus::UNKNOWN;
  bool info_draining = false;
  ExecuteResult refused;
  ExecuteResult result = ExecuteToEnd(worker.stub(), request, &context,
                                      [&](const v1::ExecuteEvent& event) {
    if (event.has_token() && event.token().index() == 4) {
      kill(worker.pid(), SIGTERM);
      for (int i = 0; i < 200 && during_drain != HealthStatus::NOT_SERVING; ++i) {
        during_drain = Health(*worker.channel(), "");
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      refused = Execute(worker, Greedy("late", "Hello", 4));
      grpc::ClientContext info_context;
      v1::InfoResponse info;
      EXPECT_TRUE(worker.stub().Info(&info_context, v1::InfoRequest(), &info).ok());
      info_draining = info.draining();
    }
  });
  EXPECT_TRUE(result.status.ok()) << result.status.error_message();
  ASSERT_TRUE(result.finished.has_value());
  EXPECT_EQ(result.finished->reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(result.tokens.size(), 48u);
  EXPECT_EQ(during_drain, HealthStatus::NOT_SERVING);
  EXPECT_TRUE(info_draining);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  absl::StatusOr<int> exit_code = worker.Stop(0, std::chrono::seconds(30));  // signal 0: just wait
  ASSERT_TRUE(exit_code.ok()) << exit_code.status();
  EXPECT_EQ(*exit_code, 0);
  EXPECT_NE(worker.Log().find("drained"), std::string::npos) << worker.Log();
}

// Server reflection: generic tools (grpcurl, grpc_cli) can discover the API.
TEST(ReflectionTest, ListsServicesAndDescribesWorker) {
  std::unique_ptr<WorkerProcess> worker = StartWorker("tiny-f32-gqa");
  ASSERT_NE(worker, nullptr);
  namespace reflection = ::grpc::reflection::v1alpha;
  auto stub = reflection::ServerReflection::NewStub(worker->channel());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto stream = stub->ServerReflectionInfo(&context);

  reflection::ServerReflectionRequest list;
  list.set_list_services("*");
  ASSERT_TRUE(stream->Write(list));
  reflection::ServerReflectionResponse response;
  ASSERT_TRUE(stream->Read(&response));
  std::vector<std::string> services;
  for (const auto& service : response.list_services_response().service()) {
    services.push_back(service.name());
  }
  EXPECT_NE(std::find(services.begin(), services.end(), "llorch.worker.v1.Worker"), services.end())
      << absl::StrJoin(services, ",");
  EXPECT_NE(std::find(services.begin(), services.end(), "grpc.health.v1.Health"), services.end())
      << absl::StrJoin(services, ",");

  reflection::ServerReflectionRequest describe;
  describe.set_file_containing_symbol("llorch.worker.v1.Worker");
  ASSERT_TRUE(stream->Write(describe));
  ASSERT_TRUE(stream->Read(&response));
  ASSERT_GE(response.file_descriptor_response().file_descriptor_proto_size(), 1);
  google::protobuf::FileDescriptorProto file;
  ASSERT_TRUE(file.ParseFromString(response.file_descriptor_response().file_descriptor_proto(0)));
  EXPECT_EQ(file.name(), "llorch/worker/v1/worker.proto");
  ASSERT_EQ(file.service_size(), 1);
  std::vector<std::string> methods;
  for (const auto& method : file.service(0).method()) methods.push_back(method.name());
  EXPECT_EQ(absl::StrJoin(methods, ","), "Execute,Cancel,Info,MatchPrefix");
  EXPECT_TRUE(file.service(0).method(0).server_streaming());
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST(HealthTest, DrainTimeoutCancelsWhatIsLeft) {
  std::unique_ptr<WorkerProcess> worker = StartWorker("smollm2", {"--drain_timeout", "1s"});
  ASSERT_NE(worker, nullptr);
  grpc::ClientContext context;
  v1::ExecuteRequest request = Greedy("endless", "Tell me a story.", 4000);
  request.set_ignore_eos(true);
  ExecuteResult result = ExecuteToEnd(worker->stub(), request, &context,
                                      [&](const v1::ExecuteEvent& event) {
    if (event.has_token() && event.token().index() == 1) kill(worker->pid(), SIGTERM);
  });
  EXPECT_TRUE(result.status.ok()) << result.status.error_message();
  ASSERT_TRUE(result.finished.has_value());
  EXPECT_EQ(result.finished->reason(), v1::FINISH_REASON_CANCELLED);
  absl::StatusOr<int> exit_code = worker->Stop(0, std::chrono::seconds(30));
  ASSERT_TRUE(exit_code.ok());
  EXPECT_EQ(*exit_code, 0);
}

// ---- Issue 10: defaults, limits and robustness. ----

v1::ExecuteRequest Unseeded(const std::string& job_id, int max_tokens) {
  v1::ExecuteRequest request;  // no sampling fields: the shared defaults
  request.set_job_id(job_id);
  request.set_text("Once upon a time");
  request.set_max_tokens(max_tokens);
  request.set_ignore_eos(true);
  return request;
}

// Without a seed every request samples differently at the default
// temperature 1, and Started.seed replays it token for token.
TEST(WorkerProcessSeedTest, UnseededRequestsReportAReplayableSeed) {
  std::unique_ptr<WorkerProcess> worker = StartWorker("tiny-q4_1");
  ASSERT_NE(worker, nullptr);
  const ExecuteResult first = Execute(*worker, Unseeded("a", 24));
  const ExecuteResult second = Execute(*worker, Unseeded("b", 24));
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  ASSERT_TRUE(second.status.ok()) << second.status.error_message();
  ASSERT_TRUE(first.started.has_value() && second.started.has_value());
  EXPECT_NE(first.started->seed(), second.started->seed());
  EXPECT_NE(first.ids(), second.ids());

  v1::ExecuteRequest replay = Unseeded("replay", 24);
  replay.mutable_sampling()->set_seed(first.started->seed());
  const ExecuteResult replayed = Execute(*worker, replay);
  ASSERT_TRUE(replayed.status.ok()) << replayed.status.error_message();
  EXPECT_EQ(replayed.started->seed(), first.started->seed());
  EXPECT_EQ(replayed.ids(), first.ids());
  EXPECT_EQ(replayed.text(), first.text());
}

// LLORCH_TEST_FAULT (test only) makes the worker's Nth forward or KV
// allocation throw: the affected job ends with a status, the worker serves
// on, and other jobs give the tokens they give on a worker without faults.
class WorkerProcessFaultTest : public ::testing::Test {
 protected:
  static constexpr char kModel[] = "tiny-f32-gqa";

  static void SetUpTestSuite() { clean_ = StartWorker(kModel).release(); }
  static void TearDownTestSuite() { delete clean_; }

  static std::unique_ptr<WorkerProcess> StartFaulty(const std::string& spec) {
    setenv("LLORCH_TEST_FAULT", spec.c_str(), 1);  // inherited by the child only
    std::unique_ptr<WorkerProcess> worker = StartWorker(kModel);
    unsetenv("LLORCH_TEST_FAULT");
    return worker;
  }

  static v1::ExecuteRequest Job(const std::string& job_id, int max_tokens) {
    v1::ExecuteRequest request = Greedy(job_id, "The quick brown fox", max_tokens);
    request.set_ignore_eos(true);
    return request;
  }

  static void ExpectIdle(WorkerProcess& worker) {
    grpc::ClientContext context;
    v1::InfoResponse info;
    ASSERT_TRUE(worker.stub().Info(&context, v1::InfoRequest(), &info).ok());
    EXPECT_EQ(info.kv_used_bytes(), 0);
    EXPECT_EQ(info.active_jobs(), 0);
  }

  static WorkerProcess* clean_;
};
WorkerProcess* WorkerProcessFaultTest::clean_ = nullptr;

TEST_F(WorkerProcessFaultTest, ForwardFailureEndsThatJobWithInternal) {
  ASSERT_NE(clean_, nullptr);
  const ExecuteResult reference = Execute(*clean_, Job("reference", 12));
  ASSERT_TRUE(reference.status.ok());
  std::unique_ptr<WorkerProcess> worker = StartFaulty("forward:3");
  ASSERT_NE(worker, nullptr);

  const ExecuteResult faulted = Execute(*worker, Job("faulted", 12));
  EXPECT_EQ(faulted.status.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_NE(faulted.status.error_message().find("LLORCH_TEST_FAULT"), std::string::npos)
      << faulted.status.error_message();
  EXPECT_EQ(faulted.tokens.size(), 2u);  // forwards 1 and 2 each gave a token
  EXPECT_FALSE(faulted.finished.has_value());

  const ExecuteResult after = Execute(*worker, Job("faulted", 12));  // the id is free again
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(after.ids(), reference.ids());
  ExpectIdle(*worker);
  EXPECT_TRUE(worker->Alive());
}

TEST_F(WorkerProcessFaultTest, KvAllocationFailureEndsThatJobWithResourceExhausted) {
  ASSERT_NE(clean_, nullptr);
  const ExecuteResult reference = Execute(*clean_, Job("running", 200));
  ASSERT_TRUE(reference.status.ok());
  std::unique_ptr<WorkerProcess> worker = StartFaulty("kv_alloc:2");
  ASSERT_NE(worker, nullptr);

  // The second allocation is a job admitted while the first one runs.
  ExecuteResult faulted;
  grpc::ClientContext context;
  const ExecuteResult running =
      ExecuteToEnd(worker->stub(), Job("running", 200), &context, [&](const v1::ExecuteEvent& e) {
        if (e.has_token() && e.token().index() == 2) faulted = Execute(*worker, Job("faulted", 8));
      });
  EXPECT_EQ(faulted.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(faulted.status.error_message().find("out of memory"), std::string::npos)
      << faulted.status.error_message();
  EXPECT_FALSE(faulted.started.has_value());
  ASSERT_TRUE(running.status.ok()) << running.status.error_message();
  EXPECT_EQ(running.ids(), reference.ids());

  const ExecuteResult after = Execute(*worker, Job("after", 12));
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(after.ids(), Execute(*clean_, Job("after", 12)).ids());
  ExpectIdle(*worker);
}

// A client that stops reading its stream: once more than
// --max_stream_buffer_events events wait for it, its job is cancelled and its
// KV freed while the stream stays unread; the stream then ends with
// RESOURCE_EXHAUSTED.
TEST(WorkerProcessSlowClientTest, JobOfAClientThatStopsReadingIsCancelled) {
  std::unique_ptr<WorkerProcess> worker =
      StartWorker("tiny-f32-gqa", {"--max_stream_buffer_events", "8"});
  ASSERT_NE(worker, nullptr);
  absl::StatusOr<int64_t> rss_before = worker->RssBytes();
  ASSERT_TRUE(rss_before.ok());
  // Flow-control windows of 8 KiB that do not grow: the worker's writes
  // stall after a few dozen of these ~230-byte events (20 alternatives each).
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 8192);
  auto channel = grpc::CreateCustomChannel(worker->address(), grpc::InsecureChannelCredentials(),
                                           args);
  auto stub = v1::Worker::NewStub(channel);
  v1::ExecuteRequest request = Greedy("unread", "Tell me a story", 240);
  request.set_ignore_eos(true);
  request.set_logprobs(20);
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReader<v1::ExecuteEvent>> reader = stub->Execute(&context, request);

  // Not reading: the job must end on its own, cancelled by the worker.
  double exhausted = 0;
  v1::InfoResponse info;
  for (int i = 0; i < 1000; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    grpc::ClientContext info_context;
    ASSERT_TRUE(worker->stub().Info(&info_context, v1::InfoRequest(), &info).ok());
    absl::StatusOr<std::string> metrics = worker->Metrics();
    ASSERT_TRUE(metrics.ok());
    exhausted =
        SampleValue(*metrics, "llorch_worker_requests_total{outcome=\"resource_exhausted\"}");
    if (exhausted == 1 && info.kv_used_bytes() == 0 && info.active_jobs() == 0) break;
  }
  EXPECT_EQ(exhausted, 1);
  EXPECT_EQ(info.kv_used_bytes(), 0);
  EXPECT_EQ(info.active_jobs(), 0);
  absl::StatusOr<int64_t> rss_after = worker->RssBytes();
  ASSERT_TRUE(rss_after.ok());
  EXPECT_LT(*rss_after - *rss_before, 16 << 20);

  // Reading now: what was sent before the stall, then the status.
  int tokens = 0;
  v1::ExecuteEvent event;
  while (reader->Read(&event)) tokens += event.has_token();
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(status.error_message().find("client is not reading the stream"), std::string::npos)
      << status.error_message();
  EXPECT_LT(tokens, 240);
  std::printf("%d tokens reached the client before the worker cancelled the job\n", tokens);

  ExecuteResult after = Execute(*worker, Greedy("after", "Hello", 4));
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
}

// A call refused with ALREADY_EXISTS, then cancelled by its client (also
// while the refusal is still on its way), never cancels the live job that
// holds the id.
TEST(WorkerProcessDuplicateIdTest, CancelledDuplicateSparesTheLiveJob) {
  std::unique_ptr<WorkerProcess> worker = StartWorker("tiny-f32-gqa");
  ASSERT_NE(worker, nullptr);
  v1::ExecuteRequest live = Greedy("X", "Hello", 200);
  live.set_ignore_eos(true);
  std::vector<grpc::StatusCode> codes;
  auto duplicate = [&](int attempt) {
    grpc::ClientContext context;
    auto reader = worker->stub().Execute(&context, Greedy("X", "Other", 4));
    if (attempt > 0) {  // cancel at once or a little later, racing the refusal
      std::this_thread::sleep_for(std::chrono::microseconds(50 * (attempt % 8)));
      context.TryCancel();
    }
    v1::ExecuteEvent event;
    while (reader->Read(&event)) {
    }
    codes.push_back(reader->Finish().error_code());
    context.TryCancel();  // after the refusal, too
  };
  grpc::ClientContext context;
  const ExecuteResult result =
      ExecuteToEnd(worker->stub(), live, &context, [&](const v1::ExecuteEvent& event) {
        if (event.has_token() && event.token().index() < 40) duplicate(event.token().index());
      });
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  ASSERT_TRUE(result.finished.has_value());
  EXPECT_EQ(result.finished->reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(result.tokens.size(), 200u);
  ASSERT_EQ(codes.size(), 40u);
  EXPECT_EQ(codes[0], grpc::StatusCode::ALREADY_EXISTS);
  for (grpc::StatusCode code : codes) {
    EXPECT_TRUE(code == grpc::StatusCode::ALREADY_EXISTS || code == grpc::StatusCode::CANCELLED)
        << code;
  }
}

// Memory: the weights are held once (not beside the mapped file's pages or
// an F32 copy of the embedding), and the worker's peak resident memory stays
// within its weights, its KV budget and a constant for the process itself
// (libtorch's and gRPC's pages, buffers: docs/operations.md, "Memory").
TEST(WorkerProcessMemoryTest, PeakIsWeightsPlusKvBudgetPlusAConstant) {
  constexpr int64_t kProcessBytes = int64_t{160} << 20;
  std::unique_ptr<WorkerProcess> worker = StartWorker("smollm2", {"--kv_budget", "64MiB"});
  ASSERT_NE(worker, nullptr);
  grpc::ClientContext context;
  v1::InfoResponse info;
  ASSERT_TRUE(worker->stub().Info(&context, v1::InfoRequest(), &info).ok());
  // SmolLM2-135M Q4_1: the ggml blocks as the file has them (98 MB); the
  // KV of one position: 30 layers x 3 KV heads x 64 x (key, value) x F32.
  const auto file_bytes = static_cast<int64_t>(std::filesystem::file_size(ModelPath("smollm2")));
  EXPECT_GT(info.weight_bytes(), file_bytes * 9 / 10);
  EXPECT_LT(info.weight_bytes(), file_bytes * 21 / 20);
  EXPECT_EQ(info.kv_bytes_per_token(), 30 * 3 * 64 * 2 * 4);
  // The pool: the budget in whole blocks of 16 positions.
  const int64_t block_bytes = 16 * info.kv_bytes_per_token();
  EXPECT_EQ(info.kv_capacity_bytes(), ((int64_t{64} << 20) / block_bytes) * block_bytes);

  // Eight jobs at once, long enough to fill much of the budget.
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      ExecuteResult r = Execute(*worker, Greedy(absl::StrCat("mem-", i),
                                                Prompts(8)[i], 96));
      EXPECT_TRUE(r.status.ok()) << r.status.error_message();
    });
  }
  for (std::thread& t : threads) t.join();
  absl::StatusOr<int64_t> peak = worker->PeakRssBytes();
  ASSERT_TRUE(peak.ok()) << peak.status();
  const int64_t bound = info.weight_bytes() + info.kv_capacity_bytes() + kProcessBytes;
  std::printf("peak RSS %.1f MiB: weights %.1f MiB + KV budget %.1f MiB + %.1f MiB (bound: + %.0f)\n",
              *peak / 1048576.0, info.weight_bytes() / 1048576.0,
              info.kv_capacity_bytes() / 1048576.0,
              (*peak - info.weight_bytes() - info.kv_capacity_bytes()) / 1048576.0,
              kProcessBytes / 1048576.0);
  EXPECT_LE(*peak, bound);
}

// The threads of process `pid` that sleep inside libgomp's code (OpenMP team
// threads between parallel regions: libgomp makes its futex calls itself),
// from each thread's program counter in /proc/PID/task/TID/syscall; -1 when
// libgomp is not mapped or those files cannot be read.
int ThreadsParkedInLibgomp(pid_t pid) {
  std::vector<std::pair<uint64_t, uint64_t>> libgomp_text;
  std::ifstream maps(absl::StrCat("/proc/", pid, "/maps"));
  for (std::string line; std::getline(maps, line);) {
    // "start-end perms offset dev inode path"
    std::vector<std::string> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (fields.size() < 6 || fields[1].find('x') == std::string::npos ||
        fields[5].find("libgomp") == std::string::npos) {
      continue;
    }
    std::vector<std::string> range = absl::StrSplit(fields[0], '-');
    libgomp_text.emplace_back(std::stoull(range[0], nullptr, 16), std::stoull(range[1], nullptr, 16));
  }
  if (libgomp_text.empty()) return -1;
  int parked = 0, readable = 0;
  for (const auto& task : std::filesystem::directory_iterator(absl::StrCat("/proc/", pid, "/task"))) {
    std::ifstream syscall(task.path() / "syscall");
    std::string line;
    if (!std::getline(syscall, line)) continue;  // "NR args... sp pc", or "running"
    ++readable;
    std::vector<std::string> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (fields.size() < 3) continue;
    const uint64_t pc = std::stoull(fields.back(), nullptr, 16);
    for (const auto& [begin, end] : libgomp_text) parked += pc >= begin && pc < end;
  }
  return readable > 0 ? parked : -1;
}

// One OpenMP team in a serving worker, the engine thread's: libgomp stops
// spinning at barriers once it manages more threads than CPUs, and a second
// team (the loader's, kept while its thread lived) made every parallel region
// of a step sleep and wake (one stream 31 tok/s instead of 98 on 2 cores).
TEST(WorkerProcessThreadsTest, OnlyTheEngineThreadKeepsAnOpenMpTeam) {
  std::unique_ptr<WorkerProcess> worker = StartWorker("tiny-f32-gqa", {"--threads", "2"});
  ASSERT_NE(worker, nullptr);
  const int after_load = ThreadsParkedInLibgomp(worker->pid());
  if (after_load < 0) {
    GTEST_SKIP() << "libgomp is not mapped (a build without OpenMP), or /proc/PID/task/*/syscall "
                    "cannot be read";
  }
  EXPECT_EQ(after_load, 0) << "the loader's OpenMP team outlived the load";
  std::vector<std::thread> clients;
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back([&, i] {
      ExecuteResult r = Execute(*worker, Greedy(absl::StrCat("omp-", i), Prompts(4)[i], 16));
      EXPECT_TRUE(r.status.ok()) << r.status.error_message();
    });
  }
  for (std::thread& t : clients) t.join();
  // The engine's team: itself and one more thread, which sleeps in libgomp
  // once it has spun out (well under a second).
  int parked = 0;
  for (int i = 0; i < 50 && parked < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    parked = ThreadsParkedInLibgomp(worker->pid());
  }
  EXPECT_EQ(parked, 1);
}

// Info.worker_id: --worker_id, else the host name and the gRPC port.
TEST(WorkerProcessInfoTest, WorkerIdDefaultsToHostAndPort) {
  std::unique_ptr<WorkerProcess> unnamed = StartWorker("tiny-f32-gqa");
  std::unique_ptr<WorkerProcess> named = StartWorker("tiny-f32-gqa", {"--worker_id", "w-7"});
  ASSERT_NE(unnamed, nullptr);
  ASSERT_NE(named, nullptr);
  auto worker_id = [](WorkerProcess& worker) {
    grpc::ClientContext context;
    v1::InfoResponse info;
    EXPECT_TRUE(worker.stub().Info(&context, v1::InfoRequest(), &info).ok());
    return info.worker_id();
  };
  const std::string id = worker_id(*unnamed);
  const std::string suffix = absl::StrCat(":", unnamed->grpc_port());
  ASSERT_GT(id.size(), suffix.size()) << id;
  EXPECT_EQ(id.substr(id.size() - suffix.size()), suffix) << id;
  EXPECT_EQ(worker_id(*named), "w-7");
}

// MatchPrefix tells what a request would find in the prefix cache: nothing
// before, whole blocks of its prompt after the same request ran (as the
// job's Started then reports), nothing for another prompt; a bad request is
// refused as Execute refuses it.
TEST(WorkerProcessInfoTest, MatchPrefixReportsTheBlocksARequestWouldReuse) {
  std::unique_ptr<WorkerProcess> worker = StartWorker("smollm2");
  ASSERT_NE(worker, nullptr);
  auto match = [&](const v1::ExecuteRequest& request, v1::MatchPrefixResponse* response) {
    grpc::ClientContext context;
    return worker->stub().MatchPrefix(&context, request, response);
  };
  v1::ExecuteRequest request = Greedy("", "", 8);
  v1::ChatMessage* system = request.mutable_messages()->add_messages();
  system->set_role("system");
  system->set_content(
      "You answer questions about the geography of Europe in one short sentence each.");
  v1::ChatMessage* user = request.mutable_messages()->add_messages();
  user->set_role("user");
  user->set_content("What is the capital of Portugal?");
  v1::MatchPrefixResponse before;
  ASSERT_TRUE(match(request, &before).ok());
  EXPECT_GT(before.prompt_tokens(), 32);
  EXPECT_EQ(before.cached_prompt_tokens(), 0);

  request.set_job_id("first");
  const ExecuteResult first = Execute(*worker, request);
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  ASSERT_TRUE(first.started.has_value());
  EXPECT_EQ(first.started->prompt_tokens(), before.prompt_tokens());
  EXPECT_EQ(first.started->cached_prompt_tokens(), 0);

  v1::MatchPrefixResponse after;
  ASSERT_TRUE(match(request, &after).ok());
  EXPECT_EQ(after.prompt_tokens(), before.prompt_tokens());
  EXPECT_GT(after.cached_prompt_tokens(), 0);
  EXPECT_EQ(after.cached_prompt_tokens() % 16, 0);
  EXPECT_LT(after.cached_prompt_tokens(), after.prompt_tokens());
  request.set_job_id("second");
  const ExecuteResult second = Execute(*worker, request);
  ASSERT_TRUE(second.started.has_value());
  EXPECT_EQ(second.started->cached_prompt_tokens(), after.cached_prompt_tokens());
  EXPECT_EQ(second.text(), first.text());

  v1::MatchPrefixResponse other;
  ASSERT_TRUE(match(Greedy("", "Once upon a time in a land far away there lived a king", 8),
                    &other).ok());
  EXPECT_EQ(other.cached_prompt_tokens(), 0);
  v1::MatchPrefixResponse refused;
  EXPECT_EQ(match(v1::ExecuteRequest(), &refused).error_code(), grpc::INVALID_ARGUMENT);
}

// --cache_answers: after a chat turn, the worker recomputes prompt + answer
// as prompt rows in the background, so the next turn (the history with the
// answer, then a new question) maps blocks past the first prompt, and
// streams the text a worker without it streams.
TEST(WorkerProcessInfoTest, CacheAnswersLetsTheNextTurnMapTheAnswer) {
  std::unique_ptr<WorkerProcess> plain = StartWorker("smollm2");
  std::unique_ptr<WorkerProcess> answers = StartWorker("smollm2", {"--cache_answers"});
  ASSERT_NE(plain, nullptr);
  ASSERT_NE(answers, nullptr);
  auto turn = [](const std::vector<std::pair<std::string, std::string>>& messages) {
    v1::ExecuteRequest request = Greedy("", "", 40);
    for (const auto& [role, content] : messages) {
      v1::ChatMessage* m = request.mutable_messages()->add_messages();
      m->set_role(role);
      m->set_content(content);
    }
    return request;
  };
  std::vector<std::pair<std::string, std::string>> history = {
      {"system", "You are a geography teacher."},
      {"user", "Describe the river Danube: where it starts, where it ends, what it crosses."}};
  v1::ExecuteRequest first = turn(history);
  first.set_job_id("turn-1");
  const ExecuteResult one_plain = Execute(*plain, first);
  const ExecuteResult one = Execute(*answers, first);
  ASSERT_TRUE(one.status.ok() && one.started.has_value()) << one.status.error_message();
  ASSERT_EQ(one.text(), one_plain.text());
  ASSERT_GE(one.tokens.size(), 32u) << one.text();
  history.push_back({"assistant", one.text()});
  history.push_back({"user", "And the Rhine?"});
  v1::ExecuteRequest second = turn(history);
  auto cached = [&](WorkerProcess& worker) {
    grpc::ClientContext context;
    v1::MatchPrefixResponse response;
    EXPECT_TRUE(worker.stub().MatchPrefix(&context, second, &response).ok());
    return response.cached_prompt_tokens();
  };
  const int32_t first_prompt_blocks = one.started->prompt_tokens() / 16 * 16;
  EXPECT_EQ(cached(*plain), first_prompt_blocks);  // the answer's rows are generated rows
  int32_t found = 0;
  for (int i = 0; i < 500 && (found = cached(*answers)) <= first_prompt_blocks; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_GE(found, first_prompt_blocks + 16) << "the answer's blocks were not cached";
  second.set_job_id("turn-2");
  const ExecuteResult two_plain = Execute(*plain, second);
  const ExecuteResult two = Execute(*answers, second);
  ASSERT_TRUE(two.status.ok() && two.started.has_value()) << two.status.error_message();
  EXPECT_EQ(two.started->cached_prompt_tokens(), found);
  EXPECT_EQ(two_plain.started->cached_prompt_tokens(), first_prompt_blocks);
  EXPECT_EQ(two.text(), two_plain.text());
}

// --kv_type f16: Info reports it and half the KV bytes per position (a
// budget in tokens is that many positions), and the stream carries what
// `llorch run --kv-type f16` prints.
TEST(WorkerProcessInfoTest, KvTypeF16HalvesKvBytesAndStreamsWhatTheCliPrints) {
  std::unique_ptr<WorkerProcess> f32 = StartWorker("tiny-f32-gqa", {"--kv_budget", "1000tokens"});
  std::unique_ptr<WorkerProcess> f16 =
      StartWorker("tiny-f32-gqa", {"--kv_budget", "1000tokens", "--kv_type", "f16"});
  ASSERT_NE(f32, nullptr);
  ASSERT_NE(f16, nullptr);
  auto info = [](WorkerProcess& worker) {
    grpc::ClientContext context;
    v1::InfoResponse response;
    EXPECT_TRUE(worker.stub().Info(&context, v1::InfoRequest(), &response).ok());
    return response;
  };
  const v1::InfoResponse f32_info = info(*f32), f16_info = info(*f16);
  EXPECT_EQ(f32_info.kv_type(), "f32");
  EXPECT_EQ(f16_info.kv_type(), "f16");
  EXPECT_GT(f16_info.kv_bytes_per_token(), 0);
  EXPECT_EQ(f16_info.kv_bytes_per_token() * 2, f32_info.kv_bytes_per_token());
  // 1000 positions in whole blocks of 16: 62 blocks.
  EXPECT_EQ(f16_info.kv_capacity_bytes(), 992 * f16_info.kv_bytes_per_token());
  EXPECT_EQ(f32_info.kv_capacity_bytes(), 992 * f32_info.kv_bytes_per_token());

  const std::string prompt = "The three primary colours are";
  CliRun cli = RunCli("tiny-f32-gqa", absl::StrCat("--prompt '", prompt,
                                                   "' --kv-type f16 --temperature 0 "
                                                   "--max-tokens 24 --ignore-eos"));
  ASSERT_EQ(cli.tokens.size(), 24u);
  v1::ExecuteRequest request = Greedy("f16-cache", prompt, 24);
  request.set_ignore_eos(true);
  ExecuteResult result = Execute(*f16, request);
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  ASSERT_EQ(result.tokens.size(), cli.tokens.size());
  for (size_t i = 0; i < cli.tokens.size(); ++i) {
    EXPECT_EQ(result.tokens[i].id(), cli.tokens[i]["id"].get<int>()) << "token " << i;
    EXPECT_NEAR(result.tokens[i].logprob(), cli.tokens[i]["logprob"].get<double>(), 1e-4);
  }
}

// --kv_type q8_0: Info reports it and 34 bytes per 32 values (0.27x F32),
// the stream carries what `llorch run --kv-type q8_0` prints; a model whose
// head_dim is no multiple of 32 is refused at start, saying why.
TEST(WorkerProcessInfoTest, KvTypeQ8_0TakesAQuarterAndStreamsWhatTheCliPrints) {
  std::unique_ptr<WorkerProcess> f32 = StartWorker("tiny-q4_k", {"--kv_budget", "1000tokens"});
  std::unique_ptr<WorkerProcess> q8 =
      StartWorker("tiny-q4_k", {"--kv_budget", "1000tokens", "--kv_type", "q8_0"});
  ASSERT_NE(f32, nullptr);
  ASSERT_NE(q8, nullptr);
  auto info = [](WorkerProcess& worker) {
    grpc::ClientContext context;
    v1::InfoResponse response;
    EXPECT_TRUE(worker.stub().Info(&context, v1::InfoRequest(), &response).ok());
    return response;
  };
  const v1::InfoResponse f32_info = info(*f32), q8_info = info(*q8);
  EXPECT_EQ(q8_info.kv_type(), "q8_0");
  EXPECT_GT(q8_info.kv_bytes_per_token(), 0);
  EXPECT_EQ(q8_info.kv_bytes_per_token() * 128, f32_info.kv_bytes_per_token() * 34);
  EXPECT_EQ(q8_info.kv_capacity_bytes(), 992 * q8_info.kv_bytes_per_token());

  const std::string prompt = "The three primary colours are";
  CliRun cli = RunCli("tiny-q4_k", absl::StrCat("--prompt '", prompt,
                                                "' --kv-type q8_0 --temperature 0 "
                                                "--max-tokens 24 --ignore-eos"));
  ASSERT_EQ(cli.tokens.size(), 24u);
  v1::ExecuteRequest request = Greedy("q8-cache", prompt, 24);
  request.set_ignore_eos(true);
  ExecuteResult result = Execute(*q8, request);
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  ASSERT_EQ(result.tokens.size(), cli.tokens.size());
  for (size_t i = 0; i < cli.tokens.size(); ++i) {
    EXPECT_EQ(result.tokens[i].id(), cli.tokens[i]["id"].get<int>()) << "token " << i;
    EXPECT_NEAR(result.tokens[i].logprob(), cli.tokens[i]["logprob"].get<double>(), 1e-4);
  }

  // The worker listens (health NOT_SERVING) while it loads, then exits.
  absl::StatusOr<std::unique_ptr<WorkerProcess>> refused = WorkerProcess::Start(
      LLORCH_WORKER_BINARY, ModelPath("tiny-f32-gqa"), {"--kv_type", "q8_0"});
  const absl::Status served =
      refused.ok() ? (*refused)->WaitServing(std::chrono::seconds(60)) : refused.status();
  ASSERT_FALSE(served.ok());
  EXPECT_TRUE(absl::StrContains(served.message(),
                                "a q8_0 KV cache needs head_dim to be a multiple of 32; this "
                                "model's is 16"))
      << served;
}

// Info.model, the metrics' model label and the log name the model as
// --served_model_name says, else as its file without the extension: not
// the GGUF's general.name ("llorch random llama (tiny, f32, seed 1)" here).
TEST(WorkerProcessInfoTest, ModelNameIsTheFileStemUnlessServedModelNameIsGiven) {
  // Dots before the extension stay: only ".gguf" goes.
  char dir[] = "/tmp/llorch-model-name-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string dotted = std::string(dir) + "/Tiny-0.5B.F32.gguf";
  ASSERT_EQ(symlink(ModelPath("tiny-f32-gqa").c_str(), dotted.c_str()), 0);

  std::unique_ptr<WorkerProcess> by_file = StartWorker("tiny-f32-gqa");
  absl::StatusOr<std::unique_ptr<WorkerProcess>> by_dotted_file =
      WorkerProcess::Start(LLORCH_WORKER_BINARY, dotted, {});
  std::unique_ptr<WorkerProcess> named =
      StartWorker("tiny-f32-gqa", {"--served_model_name", "team/tiny:v2"});
  ASSERT_NE(by_file, nullptr);
  ASSERT_TRUE(by_dotted_file.ok()) << by_dotted_file.status();
  ASSERT_TRUE((*by_dotted_file)->WaitServing().ok()) << (*by_dotted_file)->Log();
  ASSERT_NE(named, nullptr);
  auto info = [](WorkerProcess& worker) {
    grpc::ClientContext context;
    v1::InfoResponse response;
    EXPECT_TRUE(worker.stub().Info(&context, v1::InfoRequest(), &response).ok());
    return response;
  };
  auto expect_named = [&](WorkerProcess& worker, const std::string& name) {
    SCOPED_TRACE(name);
    const v1::InfoResponse response = info(worker);
    EXPECT_EQ(response.model(), name);
    EXPECT_FALSE(response.draining());
    absl::StatusOr<std::string> metrics = worker.Metrics();
    ASSERT_TRUE(metrics.ok()) << metrics.status();
    EXPECT_NE(metrics->find(absl::StrCat("model=\"", name, "\"")), std::string::npos) << *metrics;
    EXPECT_NE(worker.Log().find(absl::StrCat("loaded ", name, " (")), std::string::npos)
        << worker.Log();
  };
  expect_named(*by_file, "tiny-f32-gqa");
  expect_named(**by_dotted_file, "Tiny-0.5B.F32");
  expect_named(*named, "team/tiny:v2");
  unlink(dotted.c_str());
  rmdir(dir);
}

// Size limits: INVALID_ARGUMENT naming the field, just past each limit;
// at the limit the request runs.
TEST(WorkerProcessLimitsTest, OversizedFieldsAreInvalidArgument) {
  std::unique_ptr<WorkerProcess> worker = StartWorker("tiny-f32-gqa");
  ASSERT_NE(worker, nullptr);
  auto stops = [](v1::ExecuteRequest& r, int n, size_t bytes) {
    for (int i = 0; i < n; ++i) r.add_stop(std::string(bytes, 'a' + i % 26));
  };
  auto stop_ids = [](v1::ExecuteRequest& r, int n) {
    for (int i = 0; i < n; ++i) r.add_stop_token_ids(i);
  };
  auto chat = [](v1::ExecuteRequest& r, int n, size_t bytes) {
    for (int i = 0; i < n; ++i) {
      v1::ChatMessage* m = r.mutable_messages()->add_messages();
      m->set_role("user");
      m->set_content(std::string(bytes, 'x'));
    }
  };
  struct Case {
    std::string name;
    std::function<void(v1::ExecuteRequest&)> mutate;
    std::string field;  // empty: must succeed
  };
  const std::vector<Case> cases = {
      {"17 stop strings", [&](auto& r) { stops(r, 17, 1); }, "stop"},
      {"257-byte stop string", [&](auto& r) { stops(r, 1, 257); }, "stop[0]"},
      {"65 stop ids", [&](auto& r) { stop_ids(r, 65); }, "stop_token_ids"},
      {"1 MiB + 1 of text", [](auto& r) { r.set_text(std::string((1 << 20) + 1, 'a')); },
       "text"},
      {"1025 messages", [&](auto& r) { chat(r, 1025, 1); }, "messages"},
      {"messages over 1 MiB", [&](auto& r) { chat(r, 2, 1 << 19); }, "messages"},
      {"16 stop strings of 256 bytes", [&](auto& r) { stops(r, 16, 256); }, ""},
      {"64 stop ids", [&](auto& r) { stop_ids(r, 64); }, ""},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    v1::ExecuteRequest request = Greedy("limits", "Hello there", 2);
    c.mutate(request);
    const ExecuteResult result = Execute(*worker, request);
    if (c.field.empty()) {
      EXPECT_TRUE(result.status.ok()) << result.status.error_message();
      continue;
    }
    EXPECT_EQ(result.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << result.status.error_message();
    EXPECT_EQ(result.status.error_message().rfind(c.field, 0), 0u)
        << result.status.error_message();
    std::printf("%-28s -> %s\n", c.name.c_str(), result.status.error_message().c_str());
  }
}

// grpcurl, through server reflection: the health service resolves, and the
// worker's API is listed and described. Skipped where grpcurl is absent.
std::string FindGrpcurl() {
  if (const char* path = std::getenv("LLORCH_GRPCURL")) return path;
  std::vector<std::string> candidates;
  if (const char* path = std::getenv("PATH")) {
    for (absl::string_view dir : absl::StrSplit(path, ':')) {
      candidates.push_back(absl::StrCat(dir, "/grpcurl"));
    }
  }
  // Where `go install` puts it.
  if (const char* gopath = std::getenv("GOPATH")) {
    candidates.push_back(absl::StrCat(gopath, "/bin/grpcurl"));
  }
  if (const char* home = std::getenv("HOME")) {
    candidates.push_back(absl::StrCat(home, "/go/bin/grpcurl"));
  }
  for (const std::string& candidate : candidates) {
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

// Runs a shell command; returns its exit code and stdout + stderr.
std::pair<int, std::string> Shell(const std::string& command) {
  std::string output;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return {-1, ""};
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

TEST(WorkerProcessGrpcurlTest, HealthCheckListAndDescribe) {
  const std::string grpcurl = FindGrpcurl();
  if (grpcurl.empty()) {
    GTEST_SKIP() << "grpcurl not found (PATH, $GOPATH/bin, ~/go/bin or LLORCH_GRPCURL)";
  }
  std::unique_ptr<WorkerProcess> worker = StartWorker("tiny-f32-gqa");
  ASSERT_NE(worker, nullptr);
  struct Case {
    std::string args;  // grpcurl's options go before the address
    std::string call;
    std::vector<std::string> expected;
  };
  const std::string serving = "\"status\": \"SERVING\"";
  const std::vector<Case> cases = {
      {"", "grpc.health.v1.Health/Check", {serving}},
      {R"(-d '{"service": "llorch.worker.v1.Worker"}')", "grpc.health.v1.Health/Check", {serving}},
      {"", "list", {"grpc.health.v1.Health", "llorch.worker.v1.Worker"}},
      {"", "describe grpc.health.v1.Health", {"rpc Check ( .grpc.health.v1.HealthCheckRequest )"}},
      {"", "describe llorch.worker.v1.Worker",
       {"rpc Execute", "stream .llorch.worker.v1.ExecuteEvent"}},
      {"", "describe llorch.worker.v1.Started", {"uint64 seed = 3"}},
      {"", "llorch.worker.v1.Worker/Info", {"\"worker_id\"", "\"vocab_size\""}},
  };
  for (const Case& c : cases) {
    const std::string command =
        absl::StrCat(grpcurl, " -plaintext ", c.args, " ", worker->address(), " ", c.call);
    SCOPED_TRACE(command);
    const auto [code, output] = Shell(command);
    EXPECT_EQ(code, 0) << output;
    for (const std::string& expected : c.expected) {
      EXPECT_NE(output.find(expected), std::string::npos) << output;
    }
  }
}

}  // namespace
}  // namespace llorch
