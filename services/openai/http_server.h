// llorch-scheduler's OpenAI-compatible HTTP API (--http_listen): a thin
// translator onto the scheduler's own gRPC API, called through a channel
// (in the scheduler: grpc::Server::InProcessChannel), so that validation,
// authentication, queueing, placement, metrics and cancellation stay the
// scheduler's.
//
//   POST /v1/chat/completions, POST /v1/completions  -> Generate (SSE with stream: true)
//   GET  /v1/models                                   -> ListModels
//   GET  /health                                      -> grpc.health.v1 + workers up
//
// A streaming answer starts once the job has started (its first token), so
// that every error before it has its own HTTP status (404 for an unknown
// model, 429 for a full queue, ...); a later error becomes an SSE
// `data: {"error": ...}` event that ends the stream. A client that goes
// away (its connection closed, or a write fails) cancels its Generate call,
// which cancels the job on its worker, or withdraws it from the queue.
#ifndef LLORCH_SERVICES_OPENAI_HTTP_SERVER_H_
#define LLORCH_SERVICES_OPENAI_HTTP_SERVER_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>
#include <thread>

#include <grpcpp/channel.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/grpc/bearer_tokens.h"
#include "llorch/v1/scheduler.grpc.pb.h"
#include "services/openai/openai_request.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace llorch::openai {

struct HttpServerOptions {
  // HOST:PORT ("[::1]:8000" for IPv6); port 0 picks a free one (port()).
  std::string listen = "127.0.0.1:0";
  // PEM files: HTTPS when both are given (the gRPC port's --tls_cert/--tls_key).
  std::string tls_cert;
  std::string tls_key;
  // The scheduler's API (llorch.v1.Scheduler and grpc.health.v1). Required.
  std::shared_ptr<grpc::Channel> channel;
  // Optional: when set, a request without `Authorization: Bearer TOKEN`
  // (one of these) gets 401 before its body is read further. The header is
  // forwarded as the call's `authorization` metadata either way, and the
  // scheduler checks it.
  const BearerTokens* tokens = nullptr;
  // Browser pages of these origins ("https://app.example:8443", or "*" for
  // any) may call the API from another origin (CORS): preflight OPTIONS get
  // 204 with the allowed methods and headers, answers carry
  // Access-Control-Allow-Origin. Empty: no CORS headers (same origin only).
  std::vector<std::string> cors_origins;
  // Optional: workers up, for /health (else from ListWorkers, which needs
  // a token when tokens are required).
  std::function<int()> workers_up;
  // Requests served at once (each streaming answer holds one thread);
  // more connections wait for a thread.
  int threads = 64;
  size_t max_body_bytes = size_t{16} << 20;
  // How often a waiting request looks whether its client is still there.
  std::chrono::milliseconds disconnect_poll{100};
  // Deadline of ListModels, ListWorkers and health calls.
  std::chrono::milliseconds unary_timeout{10000};
  std::function<void(const std::string&)> log;  // optional
};

class HttpServer {
 public:
  // Binds and serves from a thread pool. InvalidArgument for a bad address
  // or TLS files that do not load; Unavailable when the address is taken.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(HttpServerOptions options);

  ~HttpServer();  // Stop()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const { return port_; }
  bool tls() const { return tls_; }

  // From now on new completions get 503 and /health says 503; running
  // answers go on.
  void StartDrain() { draining_ = true; }
  // Waits until no answer runs, or `deadline`; true when none runs. A
  // server draining calls this before grpc::Server::Shutdown: the answers'
  // calls come through its in-process channel, whose transport the
  // shutdown closes at once, cancelling them (in-process transports have no
  // graceful GOAWAY).
  bool WaitIdle(std::chrono::system_clock::time_point deadline);
  // Waits up to `grace` for running answers to end, then stops listening,
  // closes the connections and joins the threads.
  void Stop(std::chrono::milliseconds grace = std::chrono::milliseconds(5000));

 private:
  explicit HttpServer(HttpServerOptions options);
  // server_: HTTPS when a certificate is given. InvalidArgument when its
  // files do not load.
  absl::Status CreateHttplibServer();
  // Binds (port 0: a free one) and runs the accept loop on listener_.
  // Unavailable when the address is taken.
  absl::Status Listen(const std::string& host, int port);
  // Installs every handler: the API's routes, CORS, the 405/404 answers,
  // then httplib's own refusals and exceptions as OpenAI errors.
  void Route();
  void RouteApi();
  void RouteCors();
  void RouteRefusals();
  void RouteErrors();

  void Generate(Endpoint endpoint, const httplib::Request& request, httplib::Response& response);
  void Models(const httplib::Request& request, httplib::Response& response);
  void Health(const httplib::Request& request, httplib::Response& response);
  // The Access-Control-Allow-Origin value for a request's Origin header:
  // the origin itself, "*", or "" when CORS does not allow it.
  std::string CorsOrigin(const httplib::Request& request) const;
  // 401 when tokens are required and the header has none of them.
  bool Authorized(const httplib::Request& request, httplib::Response& response) const;

  // Live answers (a streaming one lives until its last chunk is written).
  class Active;
  std::shared_ptr<Active> Enter();

  HttpServerOptions options_;
  std::unique_ptr<v1::Scheduler::Stub> stub_;
  std::unique_ptr<httplib::Server> server_;
  std::thread listener_;
  std::atomic<bool> listener_done_{false};
  std::atomic<bool> draining_{false};
  bool tls_ = false;
  int port_ = 0;
  int64_t created_ = 0;  // /v1/models' `created`: when the server started

  std::mutex mu_;
  std::condition_variable idle_;
  int active_ = 0;  // guarded by mu_
};

}  // namespace llorch::openai

#endif  // LLORCH_SERVICES_OPENAI_HTTP_SERVER_H_
