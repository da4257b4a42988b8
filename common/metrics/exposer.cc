#include "common/metrics/exposer.h"

#include <httplib.h>
#include <sys/socket.h>

#include <chrono>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/metrics/process_collector.h"
#include "common/metrics/text_serializer.h"

namespace llorch::metrics {

absl::StatusOr<std::unique_ptr<Exposer>> Exposer::Create(
    const std::string& bind_address, int num_threads) {
  const size_t colon = bind_address.rfind(':');
  int port = -1;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(bind_address.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics bind address \"", bind_address, "\" is not host:port"));
  }
  std::string host = bind_address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);  // IPv6 literal.
  }

  std::unique_ptr<Exposer> exposer(new Exposer());
  exposer->server_ = std::make_unique<httplib::Server>();
  httplib::Server& server = *exposer->server_;
  // httplib's default pool has max(8, cores-1) threads: far more than a
  // scrape every few seconds needs.
  server.new_task_queue = [num_threads] {
    return new httplib::ThreadPool(num_threads > 0 ? num_threads : 1);
  };
  // httplib sets SO_REUSEPORT by default, which lets a second process bind
  // the same metrics port and silently steal half the scrapes. SO_REUSEADDR
  // alone still allows a quick restart while old connections linger.
  server.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  Exposer* self = exposer.get();
  server.Get(".*", [self](const httplib::Request& request,
                          httplib::Response& response) {
    std::string body;
    if (!self->Scrape(request.path, &body)) {
      response.status = 404;
      response.set_content("not found\n", "text/plain");
      return;
    }
    response.set_content(body, kTextContentType);
  });

  const int bound_port = port == 0 ? server.bind_to_any_port(host)
                                   : (server.bind_to_port(host, port)
                                          ? port
                                          : -1);
  if (bound_port < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot bind metrics endpoint to ", bind_address));
  }
  exposer->port_ = bound_port;
  exposer->listener_ = std::thread([self] {
    self->server_->listen_after_bind();
    self->listener_done_ = true;
  });
  // httplib's stop() is a no-op until the accept loop runs; wait for it so
  // that the destructor can always stop the server.
  while (!server.is_running() && !exposer->listener_done_) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return exposer;
}

Exposer::~Exposer() {
  if (listener_.joinable()) {
    server_->stop();
    listener_.join();
  }
}

void Exposer::RegisterCollectable(
    const std::weak_ptr<Collectable>& collectable, const std::string& uri) {
  std::lock_guard<std::mutex> lock(mutex_);
  endpoints_[uri].push_back(collectable);
}

void Exposer::RemoveCollectable(const std::weak_ptr<Collectable>& collectable,
                                const std::string& uri) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto endpoint = endpoints_.find(uri);
  if (endpoint == endpoints_.end()) return;
  std::vector<std::weak_ptr<Collectable>>& list = endpoint->second;
  for (auto it = list.begin(); it != list.end(); ++it) {
    if (!it->owner_before(collectable) && !collectable.owner_before(*it)) {
      list.erase(it);
      return;
    }
  }
}

bool Exposer::Scrape(const std::string& uri, std::string* body) const {
  std::vector<std::shared_ptr<Collectable>> alive;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto endpoint = endpoints_.find(uri);
    if (endpoint == endpoints_.end()) return false;
    for (const std::weak_ptr<Collectable>& weak : endpoint->second) {
      if (std::shared_ptr<Collectable> collectable = weak.lock()) {
        alive.push_back(std::move(collectable));
      }
    }
  }
  // Collect outside our lock: registries have their own.
  std::vector<MetricFamily> families;
  for (const std::shared_ptr<Collectable>& collectable : alive) {
    for (MetricFamily& family : collectable->Collect()) {
      families.push_back(std::move(family));
    }
  }
  *body = TextSerializer().Serialize(families);
  return true;
}

absl::StatusOr<std::unique_ptr<Exposer>> ServeMetrics(
    const std::string& host, int port, const std::shared_ptr<Collectable>& collectable,
    const std::function<void(const std::string&)>& log) {
  if (port < 0) return std::unique_ptr<Exposer>();
  const bool v6 = host.find(':') != std::string::npos;
  absl::StatusOr<std::unique_ptr<Exposer>> exposer =
      Exposer::Create(absl::StrCat(v6 ? "[" : "", host, v6 ? "]" : "", ":", port));
  if (!exposer.ok()) return exposer.status();
  (*exposer)->RegisterCollectable(collectable);
  static const std::shared_ptr<Collectable> process = std::make_shared<ProcessCollector>();
  (*exposer)->RegisterCollectable(process);
  const int bound = (*exposer)->GetListeningPorts()[0];
  log(absl::StrCat("metrics listening on port ", bound, " (http://", host, ":", bound,
                   "/metrics)"));
  return exposer;
}

}  // namespace llorch::metrics
