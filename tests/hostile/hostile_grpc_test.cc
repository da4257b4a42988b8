// The hostile-input catalogue, gRPC half (issue 13): bad requests to
// llorch.v1.Scheduler (Generate, Cancel, RegisterWorker) and to
// llorch.worker.v1.Worker (Execute, Cancel), over a real llorch-scheduler in
// front of a real llorch-worker serving the tiny random model.
//
// Each row expects a status code and a text its message must contain: the
// field's name (for a request that is answered, a summary of the answer).
// After every row the process it hit serves a good request (greedy, 2
// tokens), and both processes are still running. The table is printed.
//
// Requests go as bytes (grpc::ByteBuffer), so string fields can hold any
// bytes (invalid UTF-8) and a request can be no protobuf at all. The
// mutations of the first table are written once on a GenerateRequest and
// sent to both: to the scheduler as they are, to the worker converted field
// by field (ToWorker; the worker has no `model`). Rows that are no mutation
// (a live duplicate, raw bytes, Cancel, RegisterWorker, ...) follow.
//
// The rest of the catalogue, the HTTP API, is hostile_http_test.py.
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <google/protobuf/stubs/logging.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/client_unary_call.h>
#include <grpcpp/impl/rpc_method.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/sync_stream.h>
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "llorch/v1/scheduler.pb.h"
#include "llorch/worker/v1/worker.pb.h"
#include "tests/support/scheduler_process.h"
#include "tests/support/worker_process.h"

namespace llorch {
namespace {

namespace sv1 = ::llorch::v1;
namespace wv1 = ::llorch::worker::v1;
using ::llorch::testing::SchedulerProcess;
using ::llorch::testing::WorkerProcess;
using Code = grpc::StatusCode;
using std::chrono::seconds;

constexpr char kTiny[] = "tiny-f32-gqa";
constexpr char kGenerate[] = "/llorch.v1.Scheduler/Generate";
constexpr char kSchedulerCancel[] = "/llorch.v1.Scheduler/Cancel";
constexpr char kRegister[] = "/llorch.v1.Scheduler/RegisterWorker";
constexpr char kExecute[] = "/llorch.worker.v1.Worker/Execute";
constexpr char kWorkerCancel[] = "/llorch.worker.v1.Worker/Cancel";
constexpr char kMatchPrefix[] = "/llorch.worker.v1.Worker/MatchPrefix";

// ---- Calls with bytes. ----

// What a call got: its code and message; for a call that succeeded, a
// summary ("finished LENGTH, 2 tokens, job_id job-...").
struct Outcome {
  Code code = Code::UNKNOWN;
  std::string message;
};

grpc::ByteBuffer Buffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

template <typename Message>
std::string Bytes(const Message& message) {
  std::string out;
  message.SerializeToString(&out);  // strings are not checked for UTF-8 on the way out
  return out;
}

// A server-streaming call (Generate, Execute): the scheduler's events and the
// worker's have the same numbers (started 1, token 2, finished 3; Started's
// job_id 1; Finished's reason 1), so both are read as GenerateResponse.
Outcome Stream(grpc::Channel& channel, const char* method, const std::string& request,
               grpc::ClientContext* context = nullptr) {
  grpc::ClientContext own;
  if (context == nullptr) {
    context = &own;
    context->set_deadline(std::chrono::system_clock::now() + seconds(60));
  }
  const grpc::internal::RpcMethod rpc(method, grpc::internal::RpcMethod::SERVER_STREAMING);
  std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> reader(
      grpc::internal::ClientReaderFactory<grpc::ByteBuffer>::Create(&channel, rpc, context,
                                                                    Buffer(request)));
  grpc::ByteBuffer buffer;
  std::string job_id;
  int tokens = 0;
  std::optional<sv1::Finished> finished;
  while (reader->Read(&buffer)) {
    std::vector<grpc::Slice> slices;
    (void)buffer.Dump(&slices);
    std::string bytes;
    for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    sv1::GenerateResponse event;
    if (!event.ParseFromString(bytes)) continue;
    if (event.has_started()) job_id = event.started().job_id();
    if (event.has_token()) ++tokens;
    if (event.has_finished()) finished = event.finished();
  }
  const grpc::Status status = reader->Finish();
  Outcome out{status.error_code(), status.error_message()};
  if (status.ok()) {
    out.message = finished ? absl::StrCat("finished ",
                                          sv1::FinishReason_Name(finished->reason()).substr(14),
                                          ", ", tokens, " tokens, job_id ", job_id)
                           : absl::StrCat("no Finished after ", tokens, " tokens");
  }
  return out;
}

Outcome Unary(grpc::Channel& channel, const char* method, const std::string& request) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + seconds(30));
  const grpc::internal::RpcMethod rpc(method, grpc::internal::RpcMethod::NORMAL_RPC);
  grpc::ByteBuffer response;
  const grpc::Status status =
      grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
          &channel, rpc, &context, Buffer(request), &response);
  return {status.error_code(), status.ok() ? std::string("ok") : status.error_message()};
}

// A job with `job_id` runs (its first event is in) while a second request with
// the same id comes: the second's outcome. Tries again if the first job ended
// before the second arrived (the tiny model is fast).
Outcome WhileLive(grpc::Channel& channel, const char* method, const std::string& live,
                  const std::string& second) {
  Outcome out;
  for (int attempt = 0; attempt < 3; ++attempt) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + seconds(60));
    const grpc::internal::RpcMethod rpc(method, grpc::internal::RpcMethod::SERVER_STREAMING);
    std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> reader(
        grpc::internal::ClientReaderFactory<grpc::ByteBuffer>::Create(&channel, rpc, &context,
                                                                      Buffer(live)));
    grpc::ByteBuffer first;
    if (!reader->Read(&first)) return {reader->Finish().error_code(), "the live job failed"};
    out = Stream(channel, method, second);
    context.TryCancel();
    while (reader->Read(&first)) {
    }
    (void)reader->Finish();
    if (out.code != Code::OK) break;
  }
  return out;
}

// ---- Requests. ----

sv1::GenerateRequest Good(const std::string& job_id) {
  sv1::GenerateRequest r;
  r.set_model(kTiny);
  r.set_job_id(job_id);
  r.set_text("Hello there");
  r.mutable_sampling()->set_temperature(0);
  r.set_max_tokens(2);
  return r;
}

// The worker's request with the same fields (bytes kept as they are).
wv1::ExecuteRequest ToWorker(const sv1::GenerateRequest& g) {
  wv1::ExecuteRequest e;
  e.set_job_id(g.job_id());
  switch (g.prompt_case()) {
    case sv1::GenerateRequest::kText:
      e.set_text(g.text());
      break;
    case sv1::GenerateRequest::kTokenIds:
      e.mutable_token_ids()->mutable_ids()->CopyFrom(g.token_ids().ids());
      break;
    case sv1::GenerateRequest::kMessages:
      e.mutable_messages();
      for (const sv1::ChatMessage& m : g.messages().messages()) {
        wv1::ChatMessage* out = e.mutable_messages()->add_messages();
        out->set_role(m.role());
        out->set_content(m.content());
      }
      if (g.messages().has_add_generation_prompt()) {
        e.mutable_messages()->set_add_generation_prompt(g.messages().add_generation_prompt());
      }
      break;
    case sv1::GenerateRequest::PROMPT_NOT_SET:
      break;
  }
  if (g.has_sampling()) {
    const sv1::SamplingParams& s = g.sampling();
    wv1::SamplingParams* out = e.mutable_sampling();
    if (s.has_temperature()) out->set_temperature(s.temperature());
    if (s.has_top_k()) out->set_top_k(s.top_k());
    if (s.has_top_p()) out->set_top_p(s.top_p());
    if (s.has_min_p()) out->set_min_p(s.min_p());
    if (s.has_repetition_penalty()) out->set_repetition_penalty(s.repetition_penalty());
    if (s.has_seed()) out->set_seed(s.seed());
  }
  e.set_max_tokens(g.max_tokens());
  *e.mutable_stop() = g.stop();
  *e.mutable_stop_token_ids() = g.stop_token_ids();
  e.set_logprobs(g.logprobs());
  e.set_ignore_eos(g.ignore_eos());
  if (g.has_parse_special()) e.set_parse_special(g.parse_special());
  return e;
}

void Ids(sv1::GenerateRequest& r, std::vector<int> ids) {
  r.mutable_token_ids()->clear_ids();
  for (int id : ids) r.mutable_token_ids()->add_ids(id);
}

void Chat(sv1::GenerateRequest& r, int n, size_t bytes, const std::string& role = "user") {
  r.mutable_messages();
  for (int i = 0; i < n; ++i) {
    sv1::ChatMessage* m = r.mutable_messages()->add_messages();
    m->set_role(role);
    m->set_content(std::string(bytes, 'x'));
  }
}

void Stops(sv1::GenerateRequest& r, int n, size_t bytes) {
  for (int i = 0; i < n; ++i) r.add_stop(std::string(bytes, 'a' + i % 26));
}

// Invalid UTF-8 of several kinds.
const std::string kTruncated = "ok \xe2\x82";           // a 3-byte sequence cut short
const std::string kStray = std::string("ok \xc3") + "\x28 not";  // a lead byte, then ASCII
const std::string kOverlong = "ok \xc0\xaf";            // "/" in two bytes
const std::string kSurrogate = "ok \xed\xa0\x80";       // U+D800 encoded

// ---- The catalogue. ----

// An expected answer: the code and text the message must contain.
struct Expect {
  Code code;
  std::string names;
};
const Expect kNotApplicable{Code::DO_NOT_USE, ""};  // the field is not the worker's

Expect Invalid(const std::string& field) { return {Code::INVALID_ARGUMENT, field}; }
Expect Ok(const std::string& summary = "finished") { return {Code::OK, summary}; }

struct Row {
  std::string name;
  std::string api;        // "Scheduler.Generate", "Worker.Execute", ...
  bool worker = false;    // which process must serve the next good request
  std::function<Outcome()> send;
  Expect expect;
};

const char* CodeName(Code code) {
  switch (code) {
    case Code::OK: return "OK";
    case Code::CANCELLED: return "CANCELLED";
    case Code::UNKNOWN: return "UNKNOWN";
    case Code::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case Code::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case Code::NOT_FOUND: return "NOT_FOUND";
    case Code::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case Code::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case Code::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case Code::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case Code::ABORTED: return "ABORTED";
    case Code::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case Code::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case Code::INTERNAL: return "INTERNAL";
    case Code::UNAVAILABLE: return "UNAVAILABLE";
    case Code::DATA_LOSS: return "DATA_LOSS";
    case Code::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "?";
  }
}

std::string Shorten(const std::string& text, size_t n = 90) {
  std::string out;
  for (char c : text.size() <= n ? text : text.substr(0, n)) {
    out += (c >= 0x20 && c < 0x7f) ? c : '?';
  }
  return text.size() <= n ? out : out + "...";
}

class HostileGrpcTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    google::protobuf::SetLogHandler(nullptr);  // no "invalid UTF-8 when serializing" lines
    absl::StatusOr<std::unique_ptr<WorkerProcess>> worker = WorkerProcess::Start(
        LLORCH_WORKER_BINARY, std::string(LLORCH_TESTDATA_DIR) + "/" + kTiny + ".gguf",
        {"--threads", "1"});
    ASSERT_TRUE(worker.ok()) << worker.status();
    ASSERT_TRUE((*worker)->WaitServing(seconds(60)).ok()) << (*worker)->Log();
    worker_ = worker->release();
    absl::StatusOr<std::unique_ptr<SchedulerProcess>> scheduler = SchedulerProcess::Start(
        LLORCH_SCHEDULER_BINARY, {"--metrics_port", "-1", "--workers", worker_->address()});
    ASSERT_TRUE(scheduler.ok()) << scheduler.status();
    ASSERT_TRUE((*scheduler)->WaitServing().ok()) << (*scheduler)->Log();
    scheduler_ = scheduler->release();
    // The worker is up once ListModels counts it.
    for (int i = 0; i < 300; ++i) {
      grpc::ClientContext context;
      sv1::ListModelsResponse models;
      if (scheduler_->stub().ListModels(&context, sv1::ListModelsRequest(), &models).ok() &&
          models.models_size() == 1 && models.models(0).workers_up() == 1) {
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    grpc::ClientContext context;
    wv1::InfoResponse info;
    ASSERT_TRUE(worker_->stub().Info(&context, wv1::InfoRequest(), &info).ok());
    vocab_ = static_cast<int>(info.vocab_size());
    context_length_ = static_cast<int>(info.context_length());
  }
  static void TearDownTestSuite() {
    delete scheduler_;
    delete worker_;
  }

  static WorkerProcess* worker_;
  static SchedulerProcess* scheduler_;
  static int vocab_;
  static int context_length_;
};
WorkerProcess* HostileGrpcTest::worker_ = nullptr;
SchedulerProcess* HostileGrpcTest::scheduler_ = nullptr;
int HostileGrpcTest::vocab_ = 0;
int HostileGrpcTest::context_length_ = 0;

TEST_F(HostileGrpcTest, Catalogue) {
  ASSERT_NE(scheduler_, nullptr);
  ASSERT_NE(worker_, nullptr);
  ASSERT_EQ(vocab_, 49152);
  ASSERT_EQ(context_length_, 256);
  grpc::Channel& scheduler = *scheduler_->channel();
  grpc::Channel& worker = *worker_->channel();
  const int vocab = vocab_;
  const int kMax = std::numeric_limits<int32_t>::max();
  const int kMin = std::numeric_limits<int32_t>::min();
  const float kNaN = std::nanf("");
  const float kInf = std::numeric_limits<float>::infinity();
  using G = sv1::GenerateRequest;

  // Mutations of a good request, sent to both APIs: what the scheduler
  // answers and what the worker answers (the worker has no `model`).
  struct Mutation {
    std::string name;
    std::function<void(G&)> mutate;
    Expect scheduler;
    Expect worker;
  };
  const std::vector<Mutation> mutations = {
      // model (the scheduler's only)
      {"model empty", [](G& r) { r.clear_model(); }, Invalid("model"), kNotApplicable},
      {"model of 257 bytes", [](G& r) { r.set_model(std::string(257, 'm')); }, Invalid("model"),
       kNotApplicable},
      {"model invalid UTF-8", [](G& r) { r.set_model(kStray); }, Invalid("model"),
       kNotApplicable},
      {"model unknown", [](G& r) { r.set_model("no-such-model"); },
       {Code::NOT_FOUND, "model 'no-such-model'"}, kNotApplicable},
      // job_id
      {"job_id empty (the scheduler makes one)", [](G& r) { r.clear_job_id(); },
       Ok("job_id job-"), Invalid("job_id")},
      {"job_id of 256 bytes (the limit)", [](G& r) { r.set_job_id(std::string(256, 'j')); },
       Ok(), Ok()},
      {"job_id of 257 bytes", [](G& r) { r.set_job_id(std::string(257, 'j')); },
       Invalid("job_id"), Invalid("job_id")},
      {"job_id invalid UTF-8 (surrogate)", [](G& r) { r.set_job_id(kSurrogate); },
       Invalid("job_id"), Invalid("job_id")},
      // the prompt
      {"no prompt", [](G& r) { r.clear_prompt(); }, Invalid("prompt"), Invalid("prompt")},
      {"text empty", [](G& r) { r.set_text(""); }, Invalid("text"), Invalid("text")},
      {"text invalid UTF-8 (truncated)", [](G& r) { r.set_text(kTruncated); }, Invalid("text"),
       Invalid("text")},
      {"text invalid UTF-8 (overlong)", [](G& r) { r.set_text(kOverlong); }, Invalid("text"),
       Invalid("text")},
      {"text of 1 MiB + 1", [](G& r) { r.set_text(std::string((1 << 20) + 1, 'a')); },
       Invalid("text"), Invalid("text")},
      {"text over the context (300 words)",
       [](G& r) {
         std::string text;
         for (int i = 0; i < 300; ++i) text += "word ";
         r.set_text(text);
       },
       Invalid("prompt of"), Invalid("prompt of")},
      {"text of 5 MiB (over gRPC's 4 MiB)", [](G& r) { r.set_text(std::string(5 << 20, 'a')); },
       {Code::RESOURCE_EXHAUSTED, "larger than max"}, {Code::RESOURCE_EXHAUSTED, "larger than max"}},
      {"token_ids empty", [](G& r) { r.mutable_token_ids(); }, Invalid("token_ids"),
       Invalid("token_ids")},
      {"token_ids negative", [](G& r) { Ids(r, {1, -1}); }, Invalid("token_ids"),
       Invalid("token_ids")},
      {"token_ids = vocab size", [&](G& r) { Ids(r, {1, vocab}); }, Invalid("token_ids"),
       Invalid("token_ids")},
      {"token_ids INT32_MAX", [&](G& r) { Ids(r, {kMax}); }, Invalid("token_ids"),
       Invalid("token_ids")},
      {"token_ids over the context (256)", [](G& r) { Ids(r, std::vector<int>(256, 5)); },
       Invalid("prompt of 256 tokens"), Invalid("prompt of 256 tokens")},
      {"token_ids 1,048,577 ids", [](G& r) { Ids(r, std::vector<int>((1 << 20) + 1, 5)); },
       Invalid("token_ids"), Invalid("prompt of 1048577 tokens")},
      {"messages empty list", [](G& r) { r.mutable_messages(); }, Invalid("messages"),
       Invalid("messages")},
      {"messages 1025", [](G& r) { Chat(r, 1025, 1); }, Invalid("messages"),
       Invalid("messages")},
      {"messages over 1 MiB", [](G& r) { Chat(r, 2, 1 << 19); }, Invalid("messages"),
       Invalid("messages")},
      {"messages role empty", [](G& r) { Chat(r, 1, 2, ""); }, Invalid("messages[0].role"),
       Invalid("messages[0].role")},
      {"messages role invalid UTF-8", [](G& r) { Chat(r, 1, 2, kStray); },
       Invalid("messages[0].role"), Invalid("messages[0].role")},
      {"messages content invalid UTF-8",
       [](G& r) {
         Chat(r, 2, 2);
         r.mutable_messages()->mutable_messages(1)->set_content(kTruncated);
       },
       Invalid("messages[1].content"), Invalid("messages[1].content")},
      {"messages role unknown (the template decides)", [](G& r) { Chat(r, 1, 2, "wizard"); },
       Ok(), Ok()},
      {"messages over the context", [](G& r) { Chat(r, 1, 2000); }, Invalid("prompt of"),
       Invalid("prompt of")},
      // sampling
      {"temperature NaN", [&](G& r) { r.mutable_sampling()->set_temperature(kNaN); },
       Invalid("temperature"), Invalid("temperature")},
      {"temperature +inf", [&](G& r) { r.mutable_sampling()->set_temperature(kInf); },
       Invalid("temperature"), Invalid("temperature")},
      {"temperature -1", [](G& r) { r.mutable_sampling()->set_temperature(-1); },
       Invalid("temperature"), Invalid("temperature")},
      {"top_k -1", [](G& r) { r.mutable_sampling()->set_top_k(-1); }, Invalid("top_k"),
       Invalid("top_k")},
      {"top_k INT32_MAX (all the vocabulary)", [&](G& r) { r.mutable_sampling()->set_top_k(kMax); },
       Ok(), Ok()},
      {"top_p 0", [](G& r) { r.mutable_sampling()->set_top_p(0); }, Invalid("top_p"),
       Invalid("top_p")},
      {"top_p 1.5", [](G& r) { r.mutable_sampling()->set_top_p(1.5f); }, Invalid("top_p"),
       Invalid("top_p")},
      {"top_p NaN", [&](G& r) { r.mutable_sampling()->set_top_p(kNaN); }, Invalid("top_p"),
       Invalid("top_p")},
      {"min_p -0.1", [](G& r) { r.mutable_sampling()->set_min_p(-0.1f); }, Invalid("min_p"),
       Invalid("min_p")},
      {"min_p 1.5", [](G& r) { r.mutable_sampling()->set_min_p(1.5f); }, Invalid("min_p"),
       Invalid("min_p")},
      {"repetition_penalty 0", [](G& r) { r.mutable_sampling()->set_repetition_penalty(0); },
       Invalid("repetition_penalty"), Invalid("repetition_penalty")},
      {"repetition_penalty -1", [](G& r) { r.mutable_sampling()->set_repetition_penalty(-1); },
       Invalid("repetition_penalty"), Invalid("repetition_penalty")},
      {"repetition_penalty +inf",
       [&](G& r) { r.mutable_sampling()->set_repetition_penalty(kInf); },
       Invalid("repetition_penalty"), Invalid("repetition_penalty")},
      {"repetition_penalty NaN",
       [&](G& r) { r.mutable_sampling()->set_repetition_penalty(kNaN); },
       Invalid("repetition_penalty"), Invalid("repetition_penalty")},
      // lengths
      {"max_tokens -1", [](G& r) { r.set_max_tokens(-1); }, Invalid("max_tokens"),
       Invalid("max_tokens")},
      {"max_tokens INT32_MIN", [&](G& r) { r.set_max_tokens(kMin); }, Invalid("max_tokens"),
       Invalid("max_tokens")},
      {"max_tokens INT32_MAX (the context bounds it)", [&](G& r) { r.set_max_tokens(kMax); },
       Ok("finished LENGTH"), Ok("finished LENGTH")},
      {"logprobs -1", [](G& r) { r.set_logprobs(-1); }, Invalid("logprobs"),
       Invalid("logprobs")},
      {"logprobs 21", [](G& r) { r.set_logprobs(21); }, Invalid("logprobs"),
       Invalid("logprobs")},
      {"logprobs INT32_MAX", [&](G& r) { r.set_logprobs(kMax); }, Invalid("logprobs"),
       Invalid("logprobs")},
      // stops
      {"stop: 17 strings", [](G& r) { Stops(r, 17, 1); }, Invalid("stop"), Invalid("stop")},
      {"stop: a string of 257 bytes", [](G& r) { Stops(r, 1, 257); }, Invalid("stop[0]"),
       Invalid("stop[0]")},
      {"stop: 16 strings of 256 bytes (the limit)", [](G& r) { Stops(r, 16, 256); }, Ok(),
       Ok()},
      {"stop: an empty string", [](G& r) { r.add_stop(""); }, Invalid("stop"), Invalid("stop")},
      {"stop: invalid UTF-8",
       [](G& r) {
         r.add_stop("fine");
         r.add_stop(kOverlong);
       },
       Invalid("stop[1]"), Invalid("stop[1]")},
      {"stop_token_ids: 65 ids",
       [](G& r) {
         for (int i = 0; i < 65; ++i) r.add_stop_token_ids(i);
       },
       Invalid("stop_token_ids"), Invalid("stop_token_ids")},
      {"stop_token_ids: negative", [](G& r) { r.add_stop_token_ids(-1); },
       Invalid("stop_token_ids"), Invalid("stop_token_ids")},
      {"stop_token_ids: = vocab size", [&](G& r) { r.add_stop_token_ids(vocab); },
       Invalid("stop_token_ids"), Invalid("stop_token_ids")},
  };

  std::vector<Row> rows;
  int serial = 0;
  for (const Mutation& m : mutations) {
    const std::string id = absl::StrCat("hostile-", ++serial);
    G request = Good(id);
    m.mutate(request);
    const std::string to_scheduler = Bytes(request);
    rows.push_back({m.name, "Scheduler.Generate", false,
                    [&scheduler, to_scheduler] {
                      return Stream(scheduler, kGenerate, to_scheduler);
                    },
                    m.scheduler});
    if (m.worker.code == kNotApplicable.code) continue;
    request.set_job_id(request.job_id() == id ? id + "-w" : request.job_id());
    const std::string to_worker = Bytes(ToWorker(request));
    rows.push_back({m.name, "Worker.Execute", true,
                    [&worker, to_worker] { return Stream(worker, kExecute, to_worker); },
                    m.worker});
  }

  // Requests that are not a mutation of one good request.
  auto cancel = [](const std::string& job_id) {
    sv1::CancelRequest r;
    r.set_job_id(job_id);
    return Bytes(r);
  };
  auto live = [](const std::string& job_id) {
    G r = Good(job_id);
    r.set_max_tokens(250);
    r.set_ignore_eos(true);
    return r;
  };
  const std::string good_bytes = Bytes(Good("hostile-raw"));
  const std::string good_worker_bytes = Bytes(ToWorker(Good("hostile-raw-w")));
  // Field 99 (unknown to both), a varint.
  const std::string unknown_field = std::string("\x98\x06\x01", 3);
  const std::vector<Row> specials = {
      {"job_id of a live job", "Scheduler.Generate", false,
       [&] {
         return WhileLive(scheduler, kGenerate, Bytes(live("hostile-dup")),
                          Bytes(Good("hostile-dup")));
       },
       {Code::ALREADY_EXISTS, "job_id 'hostile-dup'"}},
      {"job_id of a live job", "Worker.Execute", true,
       [&] {
         return WhileLive(worker, kExecute, Bytes(ToWorker(live("hostile-dup-w"))),
                          Bytes(ToWorker(Good("hostile-dup-w"))));
       },
       {Code::ALREADY_EXISTS, "job_id 'hostile-dup-w'"}},
      {"bytes that are no protobuf", "Scheduler.Generate", false,
       [&] { return Stream(scheduler, kGenerate, "\xff\xff\xff\xff"); },
       Invalid("llorch.v1.GenerateRequest")},
      {"bytes that are no protobuf", "Worker.Execute", true,
       [&] { return Stream(worker, kExecute, "\xff\xff\xff\xff"); },
       Invalid("llorch.worker.v1.ExecuteRequest")},
      {"a good request cut short", "Scheduler.Generate", false,
       [&] { return Stream(scheduler, kGenerate, good_bytes.substr(0, good_bytes.size() - 1)); },
       Invalid("llorch.v1.GenerateRequest")},
      {"a good request cut short", "Worker.Execute", true,
       [&] {
         return Stream(worker, kExecute, good_worker_bytes.substr(0, good_worker_bytes.size() - 1));
       },
       Invalid("llorch.worker.v1.ExecuteRequest")},
      {"model as a varint (wrong wire type)", "Scheduler.Generate", false,
       [&] {
         G r = Good("hostile-wire");
         r.clear_model();
         return Stream(scheduler, kGenerate, std::string("\x08\x07", 2) + Bytes(r));
       },
       Invalid("model")},
      {"job_id as a varint (wrong wire type)", "Worker.Execute", true,
       [&] {
         wv1::ExecuteRequest r = ToWorker(Good(""));
         return Stream(worker, kExecute, std::string("\x08\x07", 2) + Bytes(r));
       },
       Invalid("job_id")},
      {"an unknown field (ignored)", "Scheduler.Generate", false,
       [&] { return Stream(scheduler, kGenerate, good_bytes + unknown_field); }, Ok()},
      {"an unknown field (ignored)", "Worker.Execute", true,
       [&] { return Stream(worker, kExecute, good_worker_bytes + unknown_field); }, Ok()},
      {"cancel an unknown job", "Scheduler.Cancel", false,
       [&] { return Unary(scheduler, kSchedulerCancel, cancel("never-existed")); }, Ok("ok")},
      {"cancel an unknown job", "Worker.Cancel", true,
       [&] { return Unary(worker, kWorkerCancel, cancel("never-existed")); }, Ok("ok")},
      {"cancel with job_id empty", "Scheduler.Cancel", false,
       [&] { return Unary(scheduler, kSchedulerCancel, cancel("")); }, Invalid("job_id")},
      {"cancel with job_id empty", "Worker.Cancel", true,
       [&] { return Unary(worker, kWorkerCancel, cancel("")); }, Invalid("job_id")},
      {"cancel with job_id invalid UTF-8", "Scheduler.Cancel", false,
       [&] { return Unary(scheduler, kSchedulerCancel, cancel(kStray)); }, Invalid("job_id")},
      {"cancel with job_id invalid UTF-8", "Worker.Cancel", true,
       [&] { return Unary(worker, kWorkerCancel, cancel(kStray)); }, Invalid("job_id")},
      {"cancel: bytes that are no protobuf", "Scheduler.Cancel", false,
       [&] { return Unary(scheduler, kSchedulerCancel, "\xff\xff\xff\xff"); },
       Invalid("llorch.v1.CancelRequest")},
      {"cancel: bytes that are no protobuf", "Worker.Cancel", true,
       [&] { return Unary(worker, kWorkerCancel, "\xff\xff\xff\xff"); },
       Invalid("llorch.worker.v1.CancelRequest")},
      {"register address without a port", "Scheduler.RegisterWorker", false,
       [&] {
         sv1::RegisterWorkerRequest r;
         r.set_address("nonsense");
         return Unary(scheduler, kRegister, Bytes(r));
       },
       Invalid("address")},
      {"register address with port 0", "Scheduler.RegisterWorker", false,
       [&] {
         sv1::RegisterWorkerRequest r;
         r.set_address("127.0.0.1:0");
         return Unary(scheduler, kRegister, Bytes(r));
       },
       Invalid("address")},
      {"register address invalid UTF-8", "Scheduler.RegisterWorker", false,
       [&] {
         sv1::RegisterWorkerRequest r;
         r.set_address(kStray + ":5000");
         return Unary(scheduler, kRegister, Bytes(r));
       },
       Invalid("address")},
      {"register: bytes that are no protobuf", "Scheduler.RegisterWorker", false,
       [&] { return Unary(scheduler, kRegister, "\xff\xff\xff\xff"); },
       Invalid("llorch.v1.RegisterWorkerRequest")},
      {"list models: bytes that are no protobuf", "Scheduler.ListModels", false,
       [&] { return Unary(scheduler, "/llorch.v1.Scheduler/ListModels", "\xff\xff\xff\xff"); },
       Invalid("llorch.v1.ListModelsRequest")},
      {"list workers: bytes that are no protobuf", "Scheduler.ListWorkers", false,
       [&] { return Unary(scheduler, "/llorch.v1.Scheduler/ListWorkers", "\xff\xff\xff\xff"); },
       Invalid("llorch.v1.ListWorkersRequest")},
      {"info: bytes that are no protobuf", "Worker.Info", true,
       [&] { return Unary(worker, "/llorch.worker.v1.Worker/Info", "\xff\xff\xff\xff"); },
       Invalid("llorch.worker.v1.InfoRequest")},
      {"match prefix of a good request", "Worker.MatchPrefix", true,
       [&] { return Unary(worker, kMatchPrefix, good_worker_bytes); }, Ok("ok")},
      {"match prefix: bytes that are no protobuf", "Worker.MatchPrefix", true,
       [&] { return Unary(worker, kMatchPrefix, "\xff\xff\xff\xff"); },
       Invalid("llorch.worker.v1.ExecuteRequest")},
      {"match prefix with job_id invalid UTF-8", "Worker.MatchPrefix", true,
       [&] {
         wv1::ExecuteRequest r = ToWorker(Good(""));
         r.set_job_id(kStray);
         return Unary(worker, kMatchPrefix, Bytes(r));
       },
       Invalid("job_id")},
      {"an unknown method", "Scheduler.Nope", false,
       [&] { return Unary(scheduler, "/llorch.v1.Scheduler/Nope", good_bytes); },
       {Code::UNIMPLEMENTED, ""}},
      {"an unknown method", "Worker.Nope", true,
       [&] { return Unary(worker, "/llorch.worker.v1.Worker/Nope", good_worker_bytes); },
       {Code::UNIMPLEMENTED, ""}},
  };
  rows.insert(rows.end(), specials.begin(), specials.end());

  // The next request each process gets after a bad one.
  int good_serial = 0;
  auto good_after = [&](bool to_worker) {
    const std::string id = absl::StrCat("hostile-good-", ++good_serial);
    return to_worker ? Stream(worker, kExecute, Bytes(ToWorker(Good(id))))
                     : Stream(scheduler, kGenerate, Bytes(Good(id)));
  };

  std::printf("\n%-46s %-24s %-44s %s\n", "case", "API", "expected", "got");
  std::printf("%s\n", std::string(170, '-').c_str());
  int failures = 0;
  for (const Row& row : rows) {
    SCOPED_TRACE(row.name + " (" + row.api + ")");
    const Outcome got = row.send();
    const bool code_ok = got.code == row.expect.code;
    const bool names_ok = absl::StrContains(got.message, row.expect.names);
    const Outcome next = good_after(row.worker);
    const bool next_ok = next.code == Code::OK && absl::StrContains(next.message, "2 tokens");
    const bool alive = worker_->Alive() && scheduler_->Alive();
    const bool pass = code_ok && names_ok && next_ok && alive;
    failures += !pass;
    std::printf("%-46s %-24s %-44s %s%s\n", Shorten(row.name, 46).c_str(), row.api.c_str(),
                Shorten(row.expect.names.empty()
                            ? std::string(CodeName(row.expect.code))
                            : absl::StrCat(CodeName(row.expect.code), " '", row.expect.names, "'"),
                        44)
                    .c_str(),
                pass ? "" : "FAIL ",
                Shorten(absl::StrCat(CodeName(got.code), ": ", got.message)).c_str());
    EXPECT_EQ(CodeName(got.code), std::string(CodeName(row.expect.code))) << got.message;
    EXPECT_TRUE(names_ok) << "the message does not name '" << row.expect.names
                          << "': " << got.message;
    EXPECT_TRUE(next_ok) << "the next good request got " << CodeName(next.code) << ": "
                         << next.message;
    ASSERT_TRUE(alive) << "a process died:\nworker:\n"
                       << worker_->Log() << "\nscheduler:\n"
                       << scheduler_->Log();
  }
  std::printf("%s\n", std::string(170, '-').c_str());
  int scheduler_rows = 0;
  for (const Row& row : rows) scheduler_rows += !row.worker;
  std::printf("%zu gRPC cases (%d to the scheduler, %zu to the worker), %d failed; each "
              "followed by a good request\n",
              rows.size(), scheduler_rows, rows.size() - scheduler_rows, failures);
  EXPECT_GE(rows.size(), 40u);
}

}  // namespace
}  // namespace llorch
