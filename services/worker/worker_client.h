// A blocking client for llorch.worker.v1.Worker: runs one Execute stream to
// its end and collects the events. Used by the CLI, the benchmark and tests
// (and, later, by the scheduler's relay).
#ifndef LLORCH_SERVICES_WORKER_WORKER_CLIENT_H_
#define LLORCH_SERVICES_WORKER_WORKER_CLIENT_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "llorch/worker/v1/worker.grpc.pb.h"

namespace llorch {

struct ExecuteResult {
  grpc::Status status;
  std::optional<worker::v1::Started> started;
  std::vector<worker::v1::Token> tokens;
  std::optional<worker::v1::Finished> finished;

  std::vector<int32_t> ids() const;
  std::string text() const;
};

// Reads the whole stream. `on_event`, if set, sees each event as it arrives
// (it may call context->TryCancel()).
ExecuteResult ExecuteToEnd(worker::v1::Worker::StubInterface& stub,
                           const worker::v1::ExecuteRequest& request,
                           grpc::ClientContext* context,
                           const std::function<void(const worker::v1::ExecuteEvent&)>& on_event = {});

}  // namespace llorch

#endif  // LLORCH_SERVICES_WORKER_WORKER_CLIENT_H_
