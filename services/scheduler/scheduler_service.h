// gRPC handlers of llorch.v1.Scheduler: authenticate, validate, convert,
// delegate to the scheduler core (which owns workers, queues and jobs) or,
// for Generate, to a GenerateCall that relays the worker's stream.
#ifndef LLORCH_SERVICES_SCHEDULER_SCHEDULER_SERVICE_H_
#define LLORCH_SERVICES_SCHEDULER_SCHEDULER_SERVICE_H_

#include <cstddef>

#include "common/grpc/bearer_tokens.h"
#include "llorch/v1/scheduler.grpc.pb.h"
#include "scheduler/scheduler_core.h"
#include "services/scheduler/scheduler_metrics.h"

namespace llorch {

struct SchedulerServiceOptions {
  scheduler::SchedulerCore* core = nullptr;
  SchedulerMetrics* metrics = nullptr;      // optional
  const BearerTokens* tokens = nullptr;     // optional: clients need a bearer token
  // Mutual TLS with workers is on (--tls_ca): RegisterWorker needs a client
  // certificate that chains to the CA instead of a token.
  bool workers_use_client_certs = false;
  size_t max_buffered_events = 1024;  // per Generate stream (see GenerateCallOptions)
};

class SchedulerService final : public v1::Scheduler::CallbackService {
 public:
  explicit SchedulerService(SchedulerServiceOptions options);

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Cancel(grpc::CallbackServerContext* context,
                                   const v1::CancelRequest* request,
                                   v1::CancelResponse* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const v1::ListModelsRequest* request,
                                       v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* ListWorkers(grpc::CallbackServerContext* context,
                                        const v1::ListWorkersRequest* request,
                                        v1::ListWorkersResponse* response) override;
  grpc::ServerUnaryReactor* RegisterWorker(grpc::CallbackServerContext* context,
                                           const v1::RegisterWorkerRequest* request,
                                           v1::RegisterWorkerResponse* response) override;

 private:
  absl::Status Authenticate(const grpc::CallbackServerContext& context) const;
  absl::Status AuthenticateWorker(const grpc::CallbackServerContext& context) const;

  SchedulerServiceOptions options_;
};

// "ipv4:10.0.0.7:51234" / "ipv6:[::1]:5" -> "10.0.0.7" / "::1"; "" if neither.
std::string PeerHost(const std::string& peer);

}  // namespace llorch

#endif  // LLORCH_SERVICES_SCHEDULER_SCHEDULER_SERVICE_H_
