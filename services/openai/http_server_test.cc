// HttpServer in front of a fake llorch.v1.Scheduler served in the same
// process and reached, as in llorch-scheduler, through the gRPC server's
// in-process channel. The fake answers by model name, so each test drives
// one path: a short generation, a slow one, an unknown model, a failure
// after the first token, a job that stays queued.
#include "services/openai/http_server.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace llorch::openai {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

struct Step {
  std::chrono::milliseconds delay;
  v1::GenerateResponse event;
};

v1::GenerateResponse Started(const std::string& job_id) {
  v1::GenerateResponse e;
  e.mutable_started()->set_job_id(job_id);
  e.mutable_started()->set_prompt_tokens(3);
  return e;
}

v1::GenerateResponse Token(int index, const std::string& text) {
  v1::GenerateResponse e;
  e.mutable_token()->set_index(index);
  e.mutable_token()->set_id(100 + index);
  e.mutable_token()->set_text(text);
  e.mutable_token()->set_logprob(-0.5f);
  return e;
}

v1::GenerateResponse Finished(v1::FinishReason reason, int completion_tokens) {
  v1::GenerateResponse e;
  e.mutable_finished()->set_reason(reason);
  e.mutable_finished()->set_prompt_tokens(3);
  e.mutable_finished()->set_completion_tokens(completion_tokens);
  return e;
}

// What the fake saw.
struct Observed {
  std::mutex mu;
  std::condition_variable changed;
  std::vector<v1::GenerateRequest> requests;
  std::vector<std::string> authorizations;
  int cancelled = 0;
  int running = 0;

  bool WaitCancelled(int n, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu);
    return changed.wait_for(lock, timeout, [&] { return cancelled >= n && running == 0; });
  }
};

// One Generate: a thread writes the planned events (each after its delay)
// and finishes, unless the client cancels first.
class FakeCall final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  FakeCall(Observed* observed, std::vector<Step> steps, grpc::Status status)
      : observed_(observed), steps_(std::move(steps)), status_(std::move(status)) {
    {
      std::lock_guard<std::mutex> lock(observed_->mu);
      ++observed_->running;
    }
    std::thread([this] { Run(); }).detach();
  }

  void OnWriteDone(bool /*ok*/) override {
    std::lock_guard<std::mutex> lock(mu_);
    write_done_ = true;
    changed_.notify_all();
  }
  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    changed_.notify_all();
  }
  void OnDone() override {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    changed_.notify_all();
  }

 private:
  void Run() {
    bool cancelled = false;
    for (Step& step : steps_) {
      std::unique_lock<std::mutex> lock(mu_);
      if (changed_.wait_for(lock, step.delay, [this] { return cancelled_; })) break;
      write_done_ = false;
      lock.unlock();
      StartWrite(&step.event);
      lock.lock();
      changed_.wait(lock, [this] { return write_done_ || cancelled_; });
      if (cancelled_) break;
    }
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (cancelled_) {
        // The last write's OnWriteDone must come before Finish.
        changed_.wait_for(lock, 1s, [this] { return write_done_; });
      }
      cancelled = cancelled_;
    }
    Finish(cancelled ? grpc::Status(grpc::StatusCode::CANCELLED, "cancelled") : status_);
    {
      std::unique_lock<std::mutex> lock(mu_);
      changed_.wait(lock, [this] { return done_; });
    }
    {
      // Notified under the lock: once the test sees running == 0 it may
      // destroy *observed_, condition variable included.
      std::lock_guard<std::mutex> lock(observed_->mu);
      observed_->cancelled += cancelled;
      --observed_->running;
      observed_->changed.notify_all();
    }
    delete this;
  }

  Observed* const observed_;
  std::vector<Step> steps_;
  const grpc::Status status_;
  std::mutex mu_;
  std::condition_variable changed_;
  bool write_done_ = true;
  bool cancelled_ = false;
  bool done_ = false;
};

class FakeScheduler final : public v1::Scheduler::CallbackService {
 public:
  explicit FakeScheduler(Observed* observed) : observed_(observed) {}

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override {
    {
      std::lock_guard<std::mutex> lock(observed_->mu);
      observed_->requests.push_back(*request);
      auto auth = context->client_metadata().find("authorization");
      observed_->authorizations.push_back(
          auth == context->client_metadata().end()
              ? ""
              : std::string(auth->second.data(), auth->second.size()));
    }
    const std::string& model = request->model();
    std::vector<Step> steps;
    grpc::Status status = grpc::Status::OK;
    if (model == "fake") {
      steps = {{0ms, Started("job-1")}, {0ms, Token(0, "Hel")}, {0ms, Token(1, "")},
               {0ms, Token(2, "lo")},   {0ms, Token(3, " world")},
               {0ms, Finished(v1::FINISH_REASON_EOS, 4)}};
    } else if (model == "slow") {
      steps.push_back({0ms, Started("job-slow")});
      for (int i = 0; i < 1000; ++i) steps.push_back({20ms, Token(i, "x")});
      steps.push_back({0ms, Finished(v1::FINISH_REASON_LENGTH, 1000)});
    } else if (model == "broken") {
      steps = {{0ms, Started("job-b")}, {0ms, Token(0, "a")}};
      status = grpc::Status(grpc::StatusCode::UNAVAILABLE, "worker w failed after 1 tokens");
    } else if (model == "queued") {
      steps = {{60s, Started("job-q")}};
    } else if (model == "invalid") {
      status = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "temperature must be finite and >= 0, got -1");
    } else {
      status = grpc::Status(grpc::StatusCode::NOT_FOUND,
                            absl::StrCat("no worker serves model '", model, "'"));
    }
    return new FakeCall(observed_, std::move(steps), status);
  }

  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const v1::ListModelsRequest* /*request*/,
                                       v1::ListModelsResponse* response) override {
    v1::Model* m = response->add_models();
    m->set_name("fake");
    m->set_context_length(2048);
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  Observed* const observed_;
};

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.RegisterService(&service_);
    grpc_server_ = builder.BuildAndStart();
    ASSERT_NE(grpc_server_, nullptr);
    grpc_server_->GetHealthCheckService()->SetServingStatus("llorch.v1.Scheduler", true);
  }

  void StartHttp(const BearerTokens* tokens = nullptr,
                 std::vector<std::string> cors_origins = {}) {
    HttpServerOptions options;
    options.cors_origins = std::move(cors_origins);
    options.listen = "127.0.0.1:0";
    options.channel = grpc_server_->InProcessChannel(grpc::ChannelArguments());
    options.tokens = tokens;
    options.workers_up = [this] { return workers_up_.load(); };
    // Longer than the slow fake's 20 ms between tokens: a client that goes away
    // must be seen between events too.
    options.disconnect_poll = 200ms;
    absl::StatusOr<std::unique_ptr<HttpServer>> http = HttpServer::Start(options);
    ASSERT_TRUE(http.ok()) << http.status();
    http_ = *std::move(http);
    client_ = std::make_unique<httplib::Client>("127.0.0.1", http_->port());
    client_->set_read_timeout(30, 0);
  }

  void TearDown() override {
    if (http_) http_->Stop(1000ms);
    grpc_server_->Shutdown(std::chrono::system_clock::now() + 2s);
    // Each FakeCall's thread still updates observed_ after its call is done:
    // wait for the last one before the fixture (and observed_) goes away.
    EXPECT_TRUE(observed_.WaitCancelled(0, 5s)) << "a fake Generate call is still running";
  }

  httplib::Result Post(const std::string& path, const json& body, httplib::Headers headers = {}) {
    return client_->Post(path, headers, body.dump(), "application/json");
  }

  // Sends a request by hand and closes the connection after `read_bytes`
  // of the answer (0: without reading).
  void PostAndHangUp(const std::string& path, const json& body, size_t read_bytes) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in address = {};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(http_->port()));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    const std::string payload = body.dump();
    const std::string request =
        absl::StrCat("POST ", path, " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n",
                     "Content-Length: ", payload.size(), "\r\n\r\n", payload);
    ASSERT_EQ(write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
    std::string got;
    char buffer[4096];
    while (got.size() < read_bytes) {
      const ssize_t n = read(fd, buffer, sizeof(buffer));
      ASSERT_GT(n, 0);
      got.append(buffer, static_cast<size_t>(n));
    }
    close(fd);
  }

  static std::vector<json> Events(const std::string& body, bool* done) {
    std::vector<json> events;
    *done = false;
    for (absl::string_view block : absl::StrSplit(body, "\n\n", absl::SkipEmpty())) {
      EXPECT_TRUE(absl::StartsWith(block, "data: ")) << block;
      block.remove_prefix(6);
      if (block == "[DONE]") {
        *done = true;
        continue;
      }
      EXPECT_FALSE(*done) << "an event after [DONE]";
      events.push_back(json::parse(block));
    }
    return events;
  }

  Observed observed_;
  FakeScheduler service_{&observed_};
  std::unique_ptr<grpc::Server> grpc_server_;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<httplib::Client> client_;
  std::atomic<int> workers_up_{1};
};

const json kChat = {{"model", "fake"}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}};

TEST_F(HttpServerTest, ChatCompletionTranslatesBothWays) {
  StartHttp();
  json body = kChat;
  body["max_tokens"] = 4;
  body["temperature"] = 0;
  httplib::Result r = Post("/v1/chat/completions", body, {{"Authorization", "Bearer abc"}});
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
  const json response = json::parse(r->body);
  EXPECT_EQ(response["id"], "chatcmpl-job-1");
  EXPECT_EQ(response["object"], "chat.completion");
  EXPECT_EQ(response["model"], "fake");
  EXPECT_EQ(response["choices"][0]["message"]["content"], "Hello world");
  EXPECT_EQ(response["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(response["usage"]["completion_tokens"], 4);
  EXPECT_EQ(response["usage"]["total_tokens"], 7);

  std::lock_guard<std::mutex> lock(observed_.mu);
  ASSERT_EQ(observed_.requests.size(), 1u);
  EXPECT_EQ(observed_.requests[0].max_tokens(), 4);
  EXPECT_EQ(observed_.requests[0].messages().messages(0).content(), "hi");
  EXPECT_TRUE(observed_.requests[0].sampling().has_temperature());
  EXPECT_EQ(observed_.authorizations[0], "Bearer abc");
}

TEST_F(HttpServerTest, StreamedChatIsServerSentEvents) {
  StartHttp();
  json body = kChat;
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  httplib::Result r = Post("/v1/chat/completions", body);
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
  bool done = false;
  const std::vector<json> events = Events(r->body, &done);
  EXPECT_TRUE(done);
  ASSERT_EQ(events.size(), 6u) << r->body;  // role, 3 texts (the empty one skipped), final, usage
  EXPECT_EQ(events[0]["choices"][0]["delta"], json({{"role", "assistant"}, {"content", ""}}));
  std::string text;
  for (int i = 1; i <= 3; ++i) {
    EXPECT_EQ(events[i]["object"], "chat.completion.chunk");
    EXPECT_EQ(events[i]["id"], "chatcmpl-job-1");
    text += events[i]["choices"][0]["delta"]["content"].get<std::string>();
  }
  EXPECT_EQ(text, "Hello world");
  EXPECT_EQ(events[4]["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(events[5]["choices"], json::array());
  EXPECT_EQ(events[5]["usage"]["completion_tokens"], 4);
}

TEST_F(HttpServerTest, StreamedCompletion) {
  StartHttp();
  httplib::Result r =
      Post("/v1/completions", {{"model", "fake"}, {"prompt", "x"}, {"stream", true}});
  ASSERT_TRUE(r);
  bool done = false;
  const std::vector<json> events = Events(r->body, &done);
  EXPECT_TRUE(done);
  ASSERT_EQ(events.size(), 4u) << r->body;
  EXPECT_EQ(events[0]["object"], "text_completion");
  EXPECT_EQ(events[0]["id"], "cmpl-job-1");
  EXPECT_EQ(events[0]["choices"][0]["text"], "Hel");
  EXPECT_EQ(events[3]["choices"][0]["finish_reason"], "stop");
  EXPECT_FALSE(events[3].contains("usage"));
}

TEST_F(HttpServerTest, ErrorsBeforeTheJobStartsHaveTheirHttpStatus) {
  StartHttp();
  for (bool stream : {false, true}) {
    json body = kChat;
    body["model"] = "nope";
    body["stream"] = stream;
    httplib::Result r = Post("/v1/chat/completions", body);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 404);
    const json error = json::parse(r->body)["error"];
    EXPECT_EQ(error["code"], "model_not_found");
    EXPECT_EQ(error["type"], "invalid_request_error");
    EXPECT_THAT(error["message"].get<std::string>(), HasSubstr("no worker serves model 'nope'"));

    body["model"] = "invalid";
    r = Post("/v1/chat/completions", body);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400);
    EXPECT_EQ(json::parse(r->body)["error"]["param"], "temperature");
  }
}

TEST_F(HttpServerTest, AnErrorAfterTheStreamStartedIsAnEvent) {
  StartHttp();
  httplib::Result r =
      Post("/v1/completions", {{"model", "broken"}, {"prompt", "x"}, {"stream", true}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  bool done = false;
  const std::vector<json> events = Events(r->body, &done);
  EXPECT_FALSE(done);
  ASSERT_EQ(events.size(), 2u) << r->body;
  EXPECT_EQ(events[0]["choices"][0]["text"], "a");
  EXPECT_EQ(events[1]["error"]["type"], "server_error");
  EXPECT_EQ(events[1]["error"]["code"], "service_unavailable");

  // Not streaming, the same failure is the answer's status.
  r = Post("/v1/completions", {{"model", "broken"}, {"prompt", "x"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
}

TEST_F(HttpServerTest, MalformedRequestsRoutesAndMethods) {
  StartHttp();
  struct Case {
    std::string method, path, body;
    int status;
  };
  for (const Case& c : std::vector<Case>{
           {"POST", "/v1/chat/completions", "{", 400},
           {"POST", "/v1/chat/completions", "[]", 400},
           {"POST", "/v1/chat/completions", R"({"model": "fake"})", 400},
           {"POST", "/v1/completions", R"({"model": "fake", "prompt": 3})", 400},
           {"GET", "/v1/chat/completions", "", 405},
           {"DELETE", "/v1/models", "", 405},
           {"POST", "/health", "{}", 405},
           {"GET", "/v1/nothing", "", 404},
           {"POST", "/v2/completions", "{}", 404},
       }) {
    httplib::Request request;
    request.method = c.method;
    request.path = c.path;
    request.body = c.body;
    if (!c.body.empty()) request.set_header("Content-Type", "application/json");
    httplib::Result r = client_->send(request);
    ASSERT_TRUE(r) << c.method << " " << c.path;
    EXPECT_EQ(r->status, c.status) << c.method << " " << c.path << ": " << r->body;
    const json error = json::parse(r->body)["error"];
    EXPECT_TRUE(error["message"].is_string()) << r->body;
    EXPECT_TRUE(error["type"].is_string()) << r->body;
    EXPECT_TRUE(error.contains("param") && error.contains("code")) << r->body;
  }
  EXPECT_TRUE(observed_.requests.empty());
}

TEST_F(HttpServerTest, ModelsAndHealth) {
  StartHttp();
  httplib::Result r = client_->Get("/v1/models");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  const json models = json::parse(r->body);
  EXPECT_EQ(models["object"], "list");
  ASSERT_EQ(models["data"].size(), 1u);
  EXPECT_EQ(models["data"][0]["id"], "fake");
  EXPECT_EQ(models["data"][0]["object"], "model");
  EXPECT_EQ(models["data"][0]["owned_by"], "llorch");
  EXPECT_TRUE(models["data"][0]["created"].is_number_integer());
  r = client_->Get("/v1/models/fake");
  ASSERT_TRUE(r);
  EXPECT_EQ(json::parse(r->body)["id"], "fake");
  r = client_->Get("/v1/models/other");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);

  r = client_->Get("/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(json::parse(r->body)["status"], "ok");
  workers_up_ = 0;
  r = client_->Get("/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  workers_up_ = 1;
  http_->StartDrain();
  r = client_->Get("/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  r = Post("/v1/chat/completions", kChat);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
}

TEST_F(HttpServerTest, BearerTokens) {
  absl::StatusOr<BearerTokens> tokens = BearerTokens::FromTokens({"s3cret"});
  ASSERT_TRUE(tokens.ok());
  StartHttp(&*tokens);
  httplib::Result r = Post("/v1/chat/completions", kChat);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(json::parse(r->body)["error"]["code"], "invalid_api_key");
  r = Post("/v1/chat/completions", kChat, {{"Authorization", "Bearer wrong"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  r = client_->Get("/v1/models");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  r = Post("/v1/chat/completions", kChat, {{"Authorization", "Bearer s3cret"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  r = client_->Get("/health");  // probes need no token
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(HttpServerTest, ClientThatHangsUpMidStreamCancelsTheCall) {
  StartHttp();
  PostAndHangUp("/v1/completions", {{"model", "slow"}, {"prompt", "x"}, {"stream", true}},
                /*read_bytes=*/400);
  EXPECT_TRUE(observed_.WaitCancelled(1, 3s)) << "the Generate call was not cancelled";
}

TEST_F(HttpServerTest, ClientThatHangsUpWhileTheJobIsQueuedCancelsTheCall) {
  StartHttp();
  PostAndHangUp("/v1/chat/completions",
                {{"model", "queued"}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}},
                /*read_bytes=*/0);
  EXPECT_TRUE(observed_.WaitCancelled(1, 3s)) << "the Generate call was not cancelled";
}

TEST_F(HttpServerTest, ClientThatHangsUpBeforeANonStreamingAnswerCancelsTheCall) {
  StartHttp();
  PostAndHangUp("/v1/completions", {{"model", "slow"}, {"prompt", "x"}}, /*read_bytes=*/0);
  EXPECT_TRUE(observed_.WaitCancelled(1, 3s)) << "the Generate call was not cancelled";
}

// CORS: preflights of allowed origins are answered, answers name them;
// other origins and servers without cors_origins get no CORS headers.
TEST_F(HttpServerTest, CorsForAllowedOriginsOnly) {
  StartHttp(nullptr, {"http://app.example", "http://other.example"});
  const httplib::Headers preflight = {{"Origin", "http://app.example"},
                                      {"Access-Control-Request-Method", "POST"},
                                      {"Access-Control-Request-Headers", "authorization"}};
  httplib::Result r = client_->Options("/v1/chat/completions", preflight);
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 204);
  EXPECT_EQ(r->get_header_value("Access-Control-Allow-Origin"), "http://app.example");
  EXPECT_EQ(r->get_header_value("Access-Control-Allow-Methods"), "POST");
  EXPECT_EQ(r->get_header_value("Access-Control-Allow-Headers"), "authorization");
  r = client_->Options("/v1/models", preflight);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 204);
  EXPECT_EQ(r->get_header_value("Access-Control-Allow-Methods"), "GET, HEAD");
  r = client_->Options("/v1/nowhere", preflight);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);

  httplib::Result answer = Post("/v1/completions", {{"model", "fake"}, {"prompt", "x"}},
                                {{"Origin", "http://other.example"}});
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->status, 200) << answer->body;
  EXPECT_EQ(answer->get_header_value("Access-Control-Allow-Origin"), "http://other.example");
  EXPECT_EQ(answer->get_header_value("Vary"), "Origin");

  const httplib::Headers stranger = {{"Origin", "http://evil.example"},
                                     {"Access-Control-Request-Method", "POST"}};
  r = client_->Options("/v1/chat/completions", stranger);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 405);
  EXPECT_FALSE(r->has_header("Access-Control-Allow-Origin"));
  answer = Post("/v1/completions", {{"model", "fake"}, {"prompt", "x"}},
                {{"Origin", "http://evil.example"}});
  ASSERT_TRUE(answer);
  EXPECT_FALSE(answer->has_header("Access-Control-Allow-Origin"));
}

TEST_F(HttpServerTest, NoCorsWithoutOrigins) {
  StartHttp();
  httplib::Result r = client_->Options(
      "/v1/chat/completions",
      {{"Origin", "http://app.example"}, {"Access-Control-Request-Method", "POST"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 405);
  EXPECT_FALSE(r->has_header("Access-Control-Allow-Origin"));
  httplib::Result answer = Post("/v1/completions", {{"model", "fake"}, {"prompt", "x"}},
                                {{"Origin", "http://app.example"}});
  ASSERT_TRUE(answer);
  EXPECT_FALSE(answer->has_header("Access-Control-Allow-Origin"));
  EXPECT_FALSE(answer->has_header("Vary"));
}

TEST_F(HttpServerTest, CorsAnyOrigin) {
  StartHttp(nullptr, {"*"});
  httplib::Result answer = client_->Get("/v1/models", {{"Origin", "http://anywhere.example"}});
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->status, 200);
  EXPECT_EQ(answer->get_header_value("Access-Control-Allow-Origin"), "*");
}

}  // namespace
}  // namespace llorch::openai
