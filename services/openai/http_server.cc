#include "services/openai/http_server.h"

// Debian's cpp-httplib is a compiled library built with OpenSSL, zlib and
// brotli support: its pkg-config Cflags define the CPPHTTPLIB_* macros for
// every user (common/metrics' exposer too), so all translation units of a
// binary see one httplib::Server.
#include <httplib.h>

#include <dirent.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdlib>
#include <deque>
#include <optional>
#include <regex>
#include <utility>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/grpc/status.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "services/openai/chat_page.h"

namespace llorch::openai {
namespace {

// The routes by method, for the 405s and CORS preflights.
constexpr const char* kPostRoutes = "/v1/(chat/)?completions";
constexpr const char* kGetRoutes = "/v1/models(/.+)?|/health|/";

using json = nlohmann::json;

constexpr char kJson[] = "application/json";
constexpr char kSchedulerService[] = "llorch.v1.Scheduler";

// One Generate call, read by the callback API into a bounded queue that an
// HTTP thread drains with timeouts (so that it can look at its client
// between events). Reads pause while the queue is full: the scheduler's
// stream then waits, as it would for a slow gRPC client.
class GenerateStream final : public grpc::ClientReadReactor<v1::GenerateResponse> {
 public:
  enum class Next { kEvent, kDone, kTimeout };

  GenerateStream(v1::Scheduler::Stub* stub, const v1::GenerateRequest& request,
                 const std::string& authorization)
      : request_(request) {
    if (!authorization.empty()) context_.AddMetadata("authorization", authorization);
    stub->async()->Generate(&context_, &request_, this);
    StartRead(&incoming_);
    StartCall();
  }

  // Cancels the call if it still runs and waits for its end (the reactor
  // must outlive OnDone).
  ~GenerateStream() {
    Cancel();
    std::unique_lock<std::mutex> lock(mu_);
    changed_.wait(lock, [this] { return done_; });
  }

  // The next event, or kDone once the call ended and every event was taken
  // (then status()), or kTimeout.
  Next Wait(std::chrono::milliseconds timeout, v1::GenerateResponse* event) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!changed_.wait_for(lock, timeout, [this] { return !queue_.empty() || done_; })) {
      return Next::kTimeout;
    }
    if (queue_.empty()) return Next::kDone;
    *event = std::move(queue_.front());
    queue_.pop_front();
    if (paused_) {
      paused_ = false;
      lock.unlock();  // a read may complete inline
      StartRead(&incoming_);
    }
    return Next::kEvent;
  }

  grpc::Status status() {
    std::lock_guard<std::mutex> lock(mu_);
    return status_;
  }

  // The scheduler's GenerateCall sees the cancellation: it withdraws a
  // queued job or cancels it on its worker.
  void Cancel() { context_.TryCancel(); }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream ended: OnDone follows
    bool read_more = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(incoming_));
      incoming_.Clear();  // before a read that Wait may start
      paused_ = queue_.size() >= kMaxQueued;
      read_more = !paused_;
    }
    changed_.notify_all();
    if (read_more) StartRead(&incoming_);
  }

  void OnDone(const grpc::Status& status) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      status_ = status;
      done_ = true;
    }
    changed_.notify_all();
  }

 private:
  static constexpr size_t kMaxQueued = 64;

  grpc::ClientContext context_;
  const v1::GenerateRequest request_;
  v1::GenerateResponse incoming_;  // the outstanding read's

  std::mutex mu_;
  std::condition_variable changed_;
  std::deque<v1::GenerateResponse> queue_;  // guarded by mu_
  bool paused_ = false;                      // guarded by mu_: no read outstanding
  bool done_ = false;                        // guarded by mu_
  grpc::Status status_;                      // guarded by mu_
};

std::string HostPort(const std::string& host, int port) {
  const bool v6 = host.find(':') != std::string::npos;
  return absl::StrCat(v6 ? "[" : "", host, v6 ? "]" : "", ":", port);
}

// "ip"/port of a socket's end, as httplib writes Request::remote_addr.
bool SocketAddress(int fd, bool peer, std::string* host, int* port) {
  sockaddr_storage address = {};
  socklen_t length = sizeof(address);
  const int rc = peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&address), &length)
                      : getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  if (rc != 0) return false;
  char name[NI_MAXHOST];
  char service[NI_MAXSERV];
  if (getnameinfo(reinterpret_cast<sockaddr*>(&address), length, name, sizeof(name), service,
                  sizeof(service), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    return false;
  }
  *host = name;
  return absl::SimpleAtoi(service, port);
}

// The socket of the request's connection, or -1. httplib 0.11 gives a
// handler no handle on its connection, so a plaintext one is found by its
// addresses among the process's sockets (the descriptor stays open while
// the handler runs; another connection has another address pair).
int ConnectionSocket(const httplib::Request& request) {
  if (request.ssl != nullptr) return SSL_get_fd(request.ssl);
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int found = -1;
  while (dirent* entry = readdir(dir)) {
    int fd = -1;
    if (!absl::SimpleAtoi(entry->d_name, &fd) || fd == dirfd(dir)) continue;
    std::string host;
    int port = 0;
    if (!SocketAddress(fd, /*peer=*/true, &host, &port) || port != request.remote_port ||
        host != request.remote_addr) {
      continue;
    }
    if (SocketAddress(fd, /*peer=*/false, &host, &port) && port == request.local_port &&
        host == request.local_addr) {
      found = fd;
      break;
    }
  }
  closedir(dir);
  return found;
}

// The client closed its connection (or it broke): HTTP/1.1 clients do not
// half-close while they wait for an answer.
bool ClientGone(int socket) {
  if (socket < 0) return false;
  pollfd p = {socket, POLLRDHUP, 0};
  return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

void Reply(httplib::Response& response, const ApiError& error) {
  response.status = error.http_status;
  response.set_content(Dump(ErrorBody(error)), kJson);
}

void ReplyStatus(httplib::Response& response, const absl::Status& status,
                 const OpenAiRequest* request) {
  Reply(response, ToApiError(status, request));
}

ApiError RouteError(int http_status, std::string message, std::string code) {
  ApiError error;
  error.http_status = http_status;
  error.message = std::move(message);
  error.type = http_status >= 500 ? "server_error" : "invalid_request_error";
  error.code = std::move(code);
  return error;
}

std::string Authorization(const httplib::Request& request) {
  return request.get_header_value("Authorization");
}

// gRPC metadata values are printable ASCII; anything else cannot be a token.
bool PrintableAscii(const std::string& value) {
  for (char c : value) {
    if (c < 0x20 || c > 0x7E) return false;
  }
  return true;
}

void Prepare(grpc::ClientContext* context, const httplib::Request& request,
             std::chrono::milliseconds timeout) {
  context->set_deadline(std::chrono::system_clock::now() + timeout);
  const std::string authorization = Authorization(request);
  if (!authorization.empty() && PrintableAscii(authorization)) {
    context->AddMetadata("authorization", authorization);
  }
}

// --http_listen split into the host to bind (brackets of an IPv6 address
// removed; empty: every IPv4 address) and its port.
struct ListenAddress {
  std::string host;
  int port = -1;
};

absl::StatusOr<ListenAddress> ParseListen(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  ListenAddress address;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &address.port) ||
      address.port < 0 || address.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--http_listen: '", listen, "' is not HOST:PORT"));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty()) host = "0.0.0.0";
  address.host = std::move(host);
  return address;
}

// The thread pool, socket options and body limit, before any route.
void ConfigureHttplibServer(const HttpServerOptions& options, httplib::Server& http) {
  const int threads = std::max(1, options.threads);
  http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  // Not httplib's default SO_REUSEPORT: a second process could bind the
  // same port and take half the connections. A bounded send buffer (accepted
  // sockets inherit it): a client that stops reading blocks our writes after
  // ~128 KiB instead of the kernel's autotuned megabytes, so httplib's write
  // timeout cuts it off and its job is cancelled (token streams need far
  // less).
  http.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    int send_buffer = 64 << 10;
    setsockopt(sock, SOL_SOCKET, SO_SNDBUF, &send_buffer, sizeof(send_buffer));
  });
  http.set_tcp_nodelay(true);  // one token per chunk, sent at once
  http.set_payload_max_length(options.max_body_bytes);
}

// One streaming answer: the content provider's state. Each call writes one
// event's chunks (flushed: one HTTP chunk per token).
class SseAnswer {
 public:
  SseAnswer(OpenAiRequest request, std::unique_ptr<GenerateStream> call,
            v1::GenerateResponse first, int64_t created, std::chrono::milliseconds poll,
            std::shared_ptr<void> active)
      : request_(std::move(request)),
        call_(std::move(call)),
        first_(std::move(first)),
        builder_(request_,
                 ResponseBuilder::ResponseId(request_.endpoint, first_.started().job_id()),
                 created, first_.started().cached_prompt_tokens()),
        poll_(poll),
        active_(std::move(active)) {}

  // httplib's chunked content provider: true to be called again (after
  // sink.done(), not); false drops the connection.
  bool Provide(httplib::DataSink& sink) {
    std::string out;
    if (!began_) {
      began_ = true;
      if (std::optional<json> chunk = builder_.FirstChunk()) out += SseEvent(*chunk);
      Handle(first_, &out);
    } else {
      v1::GenerateResponse event;
      for (;;) {
        const GenerateStream::Next next = call_->Wait(poll_, &event);
        if (next == GenerateStream::Next::kTimeout) {
          if (!sink.is_writable()) return Abandon();  // the client went away
          continue;
        }
        if (next == GenerateStream::Next::kDone) {
          End(&out);
          if (!sink.write(out.data(), out.size())) return Abandon();
          sink.done();
          return true;
        }
        Handle(event, &out);
        if (!out.empty()) break;
      }
    }
    if (!out.empty() && !sink.write(out.data(), out.size())) return Abandon();
    return true;
  }

  // httplib is done with the answer (written, or the connection dropped).
  void Released() { call_->Cancel(); }

 private:
  bool Abandon() {
    call_->Cancel();
    return false;
  }

  void Handle(const v1::GenerateResponse& event, std::string* out) {
    if (event.has_token()) {
      if (std::optional<json> chunk = builder_.TokenChunk(event.token())) *out += SseEvent(*chunk);
    } else if (event.has_finished()) {
      finished_ = event.finished();
    }
  }

  // The stream's end: the final chunk (and usage) and [DONE], or an error
  // event.
  void End(std::string* out) {
    const grpc::Status status = call_->status();
    if (!status.ok() || !finished_) {
      const absl::Status error =
          status.ok() ? absl::InternalError("the stream ended without Finished")
                      : FromGrpcStatus(status);
      *out += SseEvent(ErrorBody(ToApiError(error, &request_)));
      return;
    }
    *out += SseEvent(builder_.FinalChunk(*finished_));
    if (request_.include_usage) *out += SseEvent(builder_.UsageChunk(*finished_));
    *out += kSseDone;
  }

  const OpenAiRequest request_;
  const std::unique_ptr<GenerateStream> call_;
  const v1::GenerateResponse first_;
  ResponseBuilder builder_;
  const std::chrono::milliseconds poll_;
  const std::shared_ptr<void> active_;
  bool began_ = false;
  std::optional<v1::Finished> finished_;
};

// One completion request's Generate call, and what its answer needs.
struct Completion {
  OpenAiRequest request;
  std::unique_ptr<GenerateStream> call;
  int socket = -1;  // the client's connection (ConnectionSocket)
  std::chrono::milliseconds poll{0};
  int64_t created = 0;         // the answer's `created`
  v1::GenerateResponse first;  // the job's Started event
};

// Waits for the job's start into completion.first. Until the job starts
// (queued, prefilling) the answer is not committed: an error gets its own
// HTTP status. False when the response got one.
bool AwaitStarted(Completion& completion, httplib::Response& response) {
  GenerateStream::Next next;
  while ((next = completion.call->Wait(completion.poll, &completion.first)) ==
         GenerateStream::Next::kTimeout) {
    if (ClientGone(completion.socket)) {  // ~GenerateStream cancels; nobody reads this
      ReplyStatus(response, absl::CancelledError("the client went away"), nullptr);
      return false;
    }
  }
  if (next == GenerateStream::Next::kDone || !completion.first.has_started()) {
    const grpc::Status status = completion.call->status();
    ReplyStatus(response,
                status.ok() ? absl::InternalError("the stream ended before Started")
                            : FromGrpcStatus(status),
                &completion.request);
    return false;
  }
  return true;
}

// stream: true. Server-sent events, written by httplib's content provider
// after the handler returns; the answer holds `active` until its end.
void AnswerStreaming(Completion completion, std::shared_ptr<void> active,
                     httplib::Response& response) {
  auto answer = std::make_shared<SseAnswer>(std::move(completion.request),
                                            std::move(completion.call), std::move(completion.first),
                                            completion.created, completion.poll, std::move(active));
  response.set_header("Cache-Control", "no-cache");
  response.set_header("X-Accel-Buffering", "no");
  response.set_chunked_content_provider(
      "text/event-stream",
      [answer](size_t /*offset*/, httplib::DataSink& sink) { return answer->Provide(sink); },
      [answer](bool /*success*/) { answer->Released(); });
}

// stream: false. One JSON answer once the job has finished.
void AnswerWhole(Completion& completion, httplib::Response& response) {
  const v1::Started& started = completion.first.started();
  ResponseBuilder builder(completion.request,
                          ResponseBuilder::ResponseId(completion.request.endpoint,
                                                      started.job_id()),
                          completion.created, started.cached_prompt_tokens());
  std::optional<v1::Finished> finished;
  v1::GenerateResponse event;
  for (;;) {
    const GenerateStream::Next next = completion.call->Wait(completion.poll, &event);
    // Looked at after every event too: tokens may come faster than `poll`.
    if (ClientGone(completion.socket)) {
      ReplyStatus(response, absl::CancelledError("the client went away"), nullptr);
      return;
    }
    if (next == GenerateStream::Next::kTimeout) continue;
    if (next == GenerateStream::Next::kDone) break;
    if (event.has_token()) builder.Add(event.token());
    if (event.has_finished()) finished = event.finished();
  }
  const grpc::Status status = completion.call->status();
  if (!status.ok() || !finished) {
    ReplyStatus(response,
                status.ok() ? absl::InternalError("the stream ended without Finished")
                            : FromGrpcStatus(status),
                &completion.request);
    return;
  }
  response.set_content(Dump(builder.Response(*finished)), kJson);
}

}  // namespace

class HttpServer::Active {
 public:
  explicit Active(HttpServer* server) : server_(server) {}
  ~Active() {
    {
      std::lock_guard<std::mutex> lock(server_->mu_);
      --server_->active_;
    }
    server_->idle_.notify_all();
  }

 private:
  HttpServer* const server_;
};

std::shared_ptr<HttpServer::Active> HttpServer::Enter() {
  std::lock_guard<std::mutex> lock(mu_);
  ++active_;
  return std::make_shared<Active>(this);
}

HttpServer::HttpServer(HttpServerOptions options)
    : options_(std::move(options)),
      stub_(v1::Scheduler::NewStub(options_.channel)),
      created_(absl::ToUnixSeconds(absl::Now())) {}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(HttpServerOptions options) {
  if (options.channel == nullptr) return absl::InvalidArgumentError("HttpServer needs a channel");
  absl::StatusOr<ListenAddress> address = ParseListen(options.listen);
  if (!address.ok()) return address.status();
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return absl::InvalidArgumentError("HTTPS needs both a certificate and its key");
  }

  std::unique_ptr<HttpServer> server(new HttpServer(std::move(options)));
  if (absl::Status s = server->CreateHttplibServer(); !s.ok()) return s;
  ConfigureHttplibServer(server->options_, *server->server_);
  server->Route();
  if (absl::Status s = server->Listen(address->host, address->port); !s.ok()) return s;
  return server;
}

absl::Status HttpServer::CreateHttplibServer() {
  if (!options_.tls_cert.empty()) {
    auto tls = std::make_unique<httplib::SSLServer>(options_.tls_cert.c_str(),
                                                    options_.tls_key.c_str());
    if (!tls->is_valid()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "HTTPS: cannot load the certificate ", options_.tls_cert, " and key ",
          options_.tls_key));
    }
    server_ = std::move(tls);
    tls_ = true;
  } else {
    server_ = std::make_unique<httplib::Server>();
  }
  return absl::OkStatus();
}

absl::Status HttpServer::Listen(const std::string& host, int port) {
  httplib::Server& http = *server_;
  const int bound = port == 0 ? http.bind_to_any_port(host)
                              : (http.bind_to_port(host, port) ? port : -1);
  if (bound < 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", HostPort(host, port)));
  }
  port_ = bound;
  listener_ = std::thread([this] {
    server_->listen_after_bind();
    listener_done_ = true;
  });
  // stop() does nothing until the accept loop runs.
  while (!http.is_running() && !listener_done_) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return absl::OkStatus();
}

HttpServer::~HttpServer() { Stop(std::chrono::milliseconds(0)); }

bool HttpServer::WaitIdle(std::chrono::system_clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  return idle_.wait_until(lock, deadline, [this] { return active_ == 0; });
}

void HttpServer::Stop(std::chrono::milliseconds grace) {
  draining_ = true;
  WaitIdle(std::chrono::system_clock::now() + grace);
  if (listener_.joinable()) {
    server_->stop();
    listener_.join();
  }
}

void HttpServer::Route() {
  RouteApi();
  RouteCors();
  RouteRefusals();
  RouteErrors();
}

void HttpServer::RouteApi() {
  httplib::Server& http = *server_;
  http.Post("/v1/chat/completions",
            [this](const httplib::Request& request, httplib::Response& response) {
              Generate(Endpoint::kChatCompletions, request, response);
            });
  http.Post("/v1/completions",
            [this](const httplib::Request& request, httplib::Response& response) {
              Generate(Endpoint::kCompletions, request, response);
            });
  http.Get("/v1/models(/.+)?",
           [this](const httplib::Request& request, httplib::Response& response) {
             Models(request, response);
           });
  http.Get("/health", [this](const httplib::Request& request, httplib::Response& response) {
    Health(request, response);
  });
  // The chat page (static/index.html, embedded at build time). Open: the API
  // calls it makes carry the token typed into the page.
  http.Get("/", [](const httplib::Request& /*request*/, httplib::Response& response) {
    const std::string_view page = openai::ChatPageHtml();
    response.set_content(page.data(), page.size(), "text/html; charset=utf-8");
  });
}

// A cross-origin page's preflight (OPTIONS with the method it will send) is
// answered before routing; every answer to an allowed origin names it.
// Without cors_origins neither happens (OPTIONS: 405, RouteRefusals).
void HttpServer::RouteCors() {
  httplib::Server& http = *server_;
  http.set_pre_routing_handler([this](const httplib::Request& request,
                                      httplib::Response& response) {
    static const std::regex post_routes(kPostRoutes), get_routes(kGetRoutes);
    if (request.method != "OPTIONS" || !request.has_header("Access-Control-Request-Method")) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    const std::string origin = CorsOrigin(request);
    if (origin.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string methods;
    if (std::regex_match(request.path, post_routes)) {
      methods = "POST";
    } else if (std::regex_match(request.path, get_routes)) {
      methods = "GET, HEAD";
    } else {
      return httplib::Server::HandlerResponse::Unhandled;  // 404
    }
    response.status = 204;
    response.set_header("Access-Control-Allow-Methods", methods);
    // Authorization and Content-Type, and whatever else the page asks for:
    // the API reads only the headers it knows.
    std::string headers = request.get_header_value("Access-Control-Request-Headers");
    response.set_header("Access-Control-Allow-Headers",
                        headers.empty() ? "Authorization, Content-Type" : headers);
    response.set_header("Access-Control-Max-Age", "600");
    return httplib::Server::HandlerResponse::Handled;
  });
  http.set_post_routing_handler([this](const httplib::Request& request,
                                       httplib::Response& response) {
    if (options_.cors_origins.empty()) return;
    response.set_header("Vary", "Origin");
    const std::string origin = CorsOrigin(request);
    if (!origin.empty()) response.set_header("Access-Control-Allow-Origin", origin);
  });
}

// A known route with another method: 405; anything else: 404.
void HttpServer::RouteRefusals() {
  httplib::Server& http = *server_;
  auto not_allowed = [](const char* allow) {
    return [allow](const httplib::Request& request, httplib::Response& response) {
      Reply(response, RouteError(405,
                                 absl::StrCat("Method ", request.method, " is not allowed on ",
                                              request.path, " (allowed: ", allow, ")"),
                                 "method_not_allowed"));
      response.set_header("Allow", allow);
    };
  };
  http.Get(kPostRoutes, not_allowed("POST"));
  http.Post(kGetRoutes, not_allowed("GET, HEAD"));
  for (const auto& [pattern, allow] :
       {std::pair<const char*, const char*>{kPostRoutes, "POST"}, {kGetRoutes, "GET, HEAD"}}) {
    http.Put(pattern, not_allowed(allow));
    http.Patch(pattern, not_allowed(allow));
    http.Delete(pattern, not_allowed(allow));
    http.Options(pattern, not_allowed(allow));
  }
  auto not_found = [](const httplib::Request& request, httplib::Response& response) {
    Reply(response, RouteError(404, absl::StrCat("No route ", request.method, " ", request.path),
                               "not_found"));
  };
  http.Get(".*", not_found);
  http.Post(".*", not_found);
  http.Put(".*", not_found);
  http.Patch(".*", not_found);
  http.Delete(".*", not_found);
  http.Options(".*", not_found);
}

void HttpServer::RouteErrors() {
  httplib::Server& http = *server_;
  // httplib's own refusals (a body over the limit, a bad request line)
  // come with an empty body: give them an OpenAI one.
  http.set_error_handler([this](const httplib::Request& /*request*/, httplib::Response& response) {
    if (!response.body.empty() || response.is_chunked_content_provider_) return;
    std::string message = absl::StrCat("HTTP ", response.status);
    if (response.status == 413) {
      message = absl::StrCat("The request body is larger than ", options_.max_body_bytes, " bytes");
    } else if (response.status == 400) {
      message = "Malformed HTTP request";
    }
    Reply(response, RouteError(response.status, message, ""));
  });
  http.set_exception_handler(
      [](const httplib::Request& /*request*/, httplib::Response& response, std::exception_ptr e) {
        std::string what = "unknown exception";
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          what = ex.what();
        } catch (...) {
        }
        Reply(response, RouteError(500, absl::StrCat("Internal error: ", what), ""));
      });
}

std::string HttpServer::CorsOrigin(const httplib::Request& request) const {
  if (options_.cors_origins.empty() || !request.has_header("Origin")) return "";
  const std::string origin = request.get_header_value("Origin");
  for (const std::string& allowed : options_.cors_origins) {
    if (allowed == "*") return "*";
    if (allowed == origin) return origin;
  }
  return "";
}

bool HttpServer::Authorized(const httplib::Request& request, httplib::Response& response) const {
  const std::string authorization = Authorization(request);
  absl::Status status = absl::OkStatus();
  if (!PrintableAscii(authorization)) {
    status = absl::UnauthenticatedError("invalid bearer token");
  } else if (options_.tokens != nullptr) {
    status = options_.tokens->CheckHeader(authorization);
  }
  if (status.ok()) return true;
  ReplyStatus(response, status, nullptr);
  response.set_header("WWW-Authenticate", "Bearer");
  return false;
}

void HttpServer::Generate(Endpoint endpoint, const httplib::Request& request,
                          httplib::Response& response) {
  std::shared_ptr<Active> active = Enter();
  const int64_t created = absl::ToUnixSeconds(absl::Now());
  if (draining_) {
    Reply(response, RouteError(503, "The server is shutting down", "service_unavailable"));
    return;
  }
  if (!Authorized(request, response)) return;
  absl::StatusOr<OpenAiRequest> parsed = ParseRequest(endpoint, request.body);
  if (!parsed.ok()) {
    ReplyStatus(response, parsed.status(), nullptr);
    return;
  }

  Completion completion;
  completion.call =
      std::make_unique<GenerateStream>(stub_.get(), parsed->generate, Authorization(request));
  completion.socket = ConnectionSocket(request);
  completion.poll = options_.disconnect_poll;
  completion.created = created;
  completion.request = *std::move(parsed);
  if (!AwaitStarted(completion, response)) return;
  if (completion.request.stream) {
    AnswerStreaming(std::move(completion), active, response);
  } else {
    AnswerWhole(completion, response);
  }
}

void HttpServer::Models(const httplib::Request& request, httplib::Response& response) {
  std::shared_ptr<Active> active = Enter();
  if (!Authorized(request, response)) return;
  grpc::ClientContext context;
  Prepare(&context, request, options_.unary_timeout);
  v1::ListModelsResponse models;
  const grpc::Status status = stub_->ListModels(&context, v1::ListModelsRequest(), &models);
  if (!status.ok()) {
    ReplyStatus(response, FromGrpcStatus(status), nullptr);
    return;
  }
  auto model_json = [this](const v1::Model& m) {
    return json{{"id", m.name()},
                {"object", "model"},
                {"created", created_},
                {"owned_by", "llorch"},
                {"max_model_len", m.context_length()}};
  };
  if (request.matches.size() > 1 && request.matches[1].matched) {
    const std::string id = request.matches[1].str().substr(1);  // GET /v1/models/ID
    for (const v1::Model& m : models.models()) {
      if (m.name() == id) {
        response.set_content(Dump(model_json(m)), kJson);
        return;
      }
    }
    ApiError error = RouteError(404, absl::StrCat("The model '", id, "' does not exist"),
                                "model_not_found");
    error.param = "model";
    Reply(response, error);
    return;
  }
  json data = json::array();
  for (const v1::Model& m : models.models()) data.push_back(model_json(m));
  response.set_content(Dump({{"object", "list"}, {"data", std::move(data)}}), kJson);
}

void HttpServer::Health(const httplib::Request& request, httplib::Response& response) {
  std::shared_ptr<Active> active = Enter();
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + options_.unary_timeout);
  grpc::health::v1::HealthCheckRequest check;
  check.set_service(kSchedulerService);
  grpc::health::v1::HealthCheckResponse health;
  const grpc::Status status =
      grpc::health::v1::Health::NewStub(options_.channel)->Check(&context, check, &health);
  const bool serving = !draining_ && status.ok() &&
                       health.status() == grpc::health::v1::HealthCheckResponse::SERVING;
  int workers_up = 0;
  if (options_.workers_up) {
    workers_up = options_.workers_up();
  } else {
    grpc::ClientContext list_context;
    Prepare(&list_context, request, options_.unary_timeout);
    v1::ListWorkersResponse workers;
    if (stub_->ListWorkers(&list_context, v1::ListWorkersRequest(), &workers).ok()) {
      for (const v1::WorkerStatus& w : workers.workers()) {
        workers_up += w.state() == v1::WORKER_STATE_UP;
      }
    }
  }
  const bool ok = serving && workers_up > 0;
  response.status = ok ? 200 : 503;
  response.set_content(Dump({{"status", ok ? "ok" : "unavailable"},
                             {"serving", serving},
                             {"workers_up", workers_up}}),
                       kJson);
}

}  // namespace llorch::openai
