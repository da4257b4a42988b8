// A child process for integration tests: its stdout and stderr go to a temp
// log file that the test polls (for readiness lines and ports printed once
// bound), and it is killed with the test if the test dies. The shared core of
// WorkerProcess and SchedulerProcess.
#ifndef LLORCH_TESTS_SUPPORT_CHILD_PROCESS_H_
#define LLORCH_TESTS_SUPPORT_CHILD_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace llorch::testing {

class ChildProcess {
 public:
  // Runs `argv` (argv[0] is the binary's path); `name` labels the log file
  // and error messages.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(std::vector<std::string> argv,
                                                             const std::string& name);
  ~ChildProcess();  // Kill, and remove the log

  // Waits until `text` is in the log.
  absl::Status WaitForLog(const std::string& text, std::chrono::milliseconds timeout);
  // Waits for the number after `prefix` in the log, e.g. "grpc listening on
  // port " (servers started on port 0 print the one they got).
  absl::StatusOr<int> WaitForPort(const std::string& prefix,
                                  std::chrono::milliseconds timeout = std::chrono::seconds(60));
  // Sends `signal_number` (0: none, just wait) and waits for the exit;
  // returns the exit code, or 128 + signal if killed by a signal.
  absl::StatusOr<int> Stop(int signal_number, std::chrono::milliseconds timeout);
  // SIGKILL and reap (no-op when it already exited).
  void Kill();
  // Still running? Reaps it when it has exited.
  bool Alive();

  pid_t pid() const { return pid_; }
  std::string Log() const;  // its stderr and stdout so far
  // Resident set size from /proc/PID/status, now and at its peak.
  absl::StatusOr<int64_t> RssBytes() const;
  absl::StatusOr<int64_t> PeakRssBytes() const;

  // GET /metrics on 127.0.0.1:`port` (FailedPrecondition when `port` < 0,
  // i.e. metrics are off), and one sample's value from it: `name` is the
  // series as printed before the value, e.g. `foo_total{outcome="ok"}`.
  static absl::StatusOr<std::string> Metrics(int port);
  static absl::StatusOr<double> MetricValue(int port, const std::string& name);

 private:
  // Polls until `done` (given the log) holds, failing if the child exits or
  // `timeout` passes; `what` names the wait in errors.
  absl::Status Poll(const std::string& what, std::chrono::milliseconds timeout,
                    absl::FunctionRef<bool(const std::string&)> done);

  ChildProcess() = default;
  std::string name_;
  std::string log_path_;
  pid_t pid_ = -1;
  bool exited_ = false;
};

}  // namespace llorch::testing

#endif  // LLORCH_TESTS_SUPPORT_CHILD_PROCESS_H_
