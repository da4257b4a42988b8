#include "tests/support/worker_process.h"

#include <utility>

namespace llorch::testing {

absl::StatusOr<std::unique_ptr<WorkerProcess>> WorkerProcess::Start(
    const std::string& binary, const std::string& model, std::vector<std::string> extra_args) {
  std::vector<std::string> args = {binary, "--model", model, "--listen", "127.0.0.1:0",
                                   "--metrics_host", "127.0.0.1", "--metrics_port", "0"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  absl::StatusOr<std::unique_ptr<ChildProcess>> child =
      ChildProcess::Start(std::move(args), "worker");
  if (!child.ok()) return child.status();
  std::unique_ptr<WorkerProcess> process(new WorkerProcess());
  process->child_ = *std::move(child);

  absl::StatusOr<int> grpc_port = process->child_->WaitForPort("grpc listening on port ");
  if (!grpc_port.ok()) return grpc_port.status();
  absl::StatusOr<int> metrics_port = process->child_->WaitForPort("metrics listening on port ");
  if (!metrics_port.ok()) return metrics_port.status();
  process->grpc_port_ = *grpc_port;
  process->metrics_port_ = *metrics_port;
  process->channel_ =
      grpc::CreateChannel(process->address(), grpc::InsecureChannelCredentials());
  process->stub_ = worker::v1::Worker::NewStub(process->channel_);
  return process;
}

WorkerProcess::~WorkerProcess() = default;

absl::Status WorkerProcess::WaitServing(std::chrono::seconds timeout) {
  return child_->WaitForLog("llorch-worker: serving", timeout);
}

}  // namespace llorch::testing
