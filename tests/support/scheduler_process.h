// A real llorch-scheduler process on loopback for integration tests: started
// with --listen 127.0.0.1:0 and --metrics_port 0 (the test's own flags come
// after these and win), its ports read from its log; killed with the test if
// the test dies. Its client channel speaks plaintext or TLS and may carry a
// bearer token on every call.
#ifndef LLORCH_TESTS_SUPPORT_SCHEDULER_PROCESS_H_
#define LLORCH_TESTS_SUPPORT_SCHEDULER_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "llorch/v1/scheduler.grpc.pb.h"
#include "tests/support/child_process.h"

namespace llorch::testing {

// How a client reaches the scheduler's public port.
struct SchedulerClientOptions {
  // PEM file of the CA the client verifies the scheduler against; empty:
  // plaintext.
  std::string tls_ca;
  // PEM files of a client identity to present over TLS (optional).
  std::string tls_cert;
  std::string tls_key;
  // Sent as "authorization: Bearer <token>" on every call when not empty.
  std::string bearer_token;
};

class SchedulerProcess {
 public:
  // Starts `binary` with `--listen 127.0.0.1:0 --metrics_host 127.0.0.1
  // --metrics_port 0` and then `args` (so `args` may override them, e.g.
  // `--listen 127.0.0.1:PORT` to come back on a port, or `--metrics_port
  // -1`); returns once the gRPC port, and the metrics port unless it is -1,
  // are in the log. The channel is built as `client` says.
  static absl::StatusOr<std::unique_ptr<SchedulerProcess>> Start(
      const std::string& binary, std::vector<std::string> args,
      const SchedulerClientOptions& client = {});
  ~SchedulerProcess();  // SIGKILL if still running

  // A channel to `address` as `client` says (TLS roots and identity read from
  // the files; NotFound when one cannot be read).
  static absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(
      const std::string& address, const SchedulerClientOptions& client);

  // Waits for the log line "llorch-scheduler: serving".
  absl::Status WaitServing(std::chrono::seconds timeout = std::chrono::seconds(30));
  // Waits until `text` is in the log.
  absl::Status WaitForLog(const std::string& text,
                          std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    return child_->WaitForLog(text, timeout);
  }
  // Sends `signal_number` (0: none, just wait) and waits for the exit;
  // returns the exit code, or 128 + signal if killed by a signal.
  absl::StatusOr<int> Stop(int signal_number, std::chrono::seconds timeout) {
    return child_->Stop(signal_number, timeout);
  }
  // SIGKILL and reap (no-op when it already exited).
  void Kill() { child_->Kill(); }
  // Still running?
  bool Alive() { return child_->Alive(); }

  pid_t pid() const { return child_->pid(); }
  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return metrics_port_; }  // -1: off
  std::string address() const { return "127.0.0.1:" + std::to_string(grpc_port_); }
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }
  v1::Scheduler::Stub& stub() { return *stub_; }
  std::string Log() const { return child_->Log(); }  // its stderr and stdout so far

  // GET /metrics, and one sample's value from it: `name` is the series as
  // printed before the value, e.g. `llorch_scheduler_queued_jobs` or
  // `llorch_scheduler_requests_total{outcome="ok"}`.
  absl::StatusOr<std::string> Metrics() const { return ChildProcess::Metrics(metrics_port_); }
  absl::StatusOr<double> MetricValue(const std::string& name) const {
    return ChildProcess::MetricValue(metrics_port_, name);
  }

 private:
  SchedulerProcess() = default;
  std::unique_ptr<ChildProcess> child_;
  int grpc_port_ = 0;
  int metrics_port_ = -1;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Scheduler::Stub> stub_;
};

}  // namespace llorch::testing

#endif  // LLORCH_TESTS_SUPPORT_SCHEDULER_PROCESS_H_
