// HTTP endpoint that Prometheus scrapes, in prometheus-cpp's Exposer shape:
//
//   auto exposer = llorch::metrics::Exposer::Create("0.0.0.0:9464");
//   if (!exposer.ok()) return exposer.status();
//   (*exposer)->RegisterCollectable(registry);  // std::shared_ptr<Registry>
//
// Differences from prometheus-cpp: construction goes through Create() so a
// port already in use is a status, not an exception; no auth.
#ifndef LLORCH_COMMON_METRICS_EXPOSER_H_
#define LLORCH_COMMON_METRICS_EXPOSER_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/metrics/metric_family.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace llorch::metrics {

class Exposer {
 public:
  // Binds `bind_address` ("host:port", "[::1]:port"; port 0 picks a free
  // port, see GetListeningPorts()) and serves from a background thread pool
  // of `num_threads`. Fails when the address cannot be parsed or bound.
  static absl::StatusOr<std::unique_ptr<Exposer>> Create(
      const std::string& bind_address, int num_threads = 2);

  // Stops accepting, finishes in-flight requests and joins the threads.
  ~Exposer();
  Exposer(const Exposer&) = delete;
  Exposer& operator=(const Exposer&) = delete;

  // GET `uri` answers with the text format of every registered collectable
  // still alive, in registration order. Held weakly: a destroyed registry
  // simply stops being served.
  void RegisterCollectable(const std::weak_ptr<Collectable>& collectable,
                           const std::string& uri = "/metrics");
  void RemoveCollectable(const std::weak_ptr<Collectable>& collectable,
                         const std::string& uri = "/metrics");

  std::vector<int> GetListeningPorts() const { return {port_}; }

 private:
  Exposer() = default;
  // The response body for `uri`, or false when no collectable was ever
  // registered there.
  bool Scrape(const std::string& uri, std::string* body) const;

  std::unique_ptr<httplib::Server> server_;
  std::thread listener_;
  std::atomic<bool> listener_done_{false};
  int port_ = 0;
  mutable std::mutex mutex_;
  std::map<std::string, std::vector<std::weak_ptr<Collectable>>> endpoints_;
};

// The /metrics endpoint of a server process: `collectable` served on
// host:port (an IPv6 host without brackets is fine; port 0 picks one), and
// "metrics listening on port N (http://HOST:N/metrics)" given to `log`; the
// process metrics (ProcessCollector) follow `collectable`'s.
// Null for port < 0 (metrics off). `collectable` must outlive the exposer.
absl::StatusOr<std::unique_ptr<Exposer>> ServeMetrics(
    const std::string& host, int port, const std::shared_ptr<Collectable>& collectable,
    const std::function<void(const std::string&)>& log);

}  // namespace llorch::metrics

#endif  // LLORCH_COMMON_METRICS_EXPOSER_H_
