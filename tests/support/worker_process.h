// A real llorch-worker process on loopback for integration tests: started
// with --listen 127.0.0.1:0 and --metrics_port 0, its ports read from its
// log; killed with the test if the test dies.
#ifndef LLORCH_TESTS_SUPPORT_WORKER_PROCESS_H_
#define LLORCH_TESTS_SUPPORT_WORKER_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "llorch/worker/v1/worker.grpc.pb.h"
#include "tests/support/child_process.h"

namespace llorch::testing {

class WorkerProcess {
 public:
  // Starts `binary` with `--model model` plus `extra_args`; returns once the
  // gRPC port is known (the model may still be loading: see WaitServing).
  static absl::StatusOr<std::unique_ptr<WorkerProcess>> Start(
      const std::string& binary, const std::string& model, std::vector<std::string> extra_args);
  ~WorkerProcess();  // SIGKILL if still running

  // Waits for the log line printed once health is SERVING.
  absl::Status WaitServing(std::chrono::seconds timeout = std::chrono::seconds(120));
  // Sends `signal_number` and waits for the exit; returns the exit code, or
  // 128 + signal if killed by a signal.
  absl::StatusOr<int> Stop(int signal_number, std::chrono::seconds timeout) {
    return child_->Stop(signal_number, timeout);
  }
  // Still running?
  bool Alive() { return child_->Alive(); }

  pid_t pid() const { return child_->pid(); }
  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return metrics_port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(grpc_port_); }
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }
  worker::v1::Worker::Stub& stub() { return *stub_; }
  std::string Log() const { return child_->Log(); }  // its stderr so far

  // Resident set size from /proc/PID/status.
  absl::StatusOr<int64_t> RssBytes() const { return child_->RssBytes(); }
  absl::StatusOr<int64_t> PeakRssBytes() const { return child_->PeakRssBytes(); }
  // GET /metrics, and one unlabelled sample's value from it.
  absl::StatusOr<std::string> Metrics() const { return ChildProcess::Metrics(metrics_port_); }
  absl::StatusOr<double> MetricValue(const std::string& name) const {
    return ChildProcess::MetricValue(metrics_port_, name);
  }

 private:
  WorkerProcess() = default;
  std::unique_ptr<ChildProcess> child_;
  int grpc_port_ = 0;
  int metrics_port_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<worker::v1::Worker::Stub> stub_;
};

}  // namespace llorch::testing

#endif  // LLORCH_TESTS_SUPPORT_WORKER_PROCESS_H_
