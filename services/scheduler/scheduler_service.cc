#include "services/scheduler/scheduler_service.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/grpc/lenient_utf8.h"
#include "common/grpc/status.h"
#include "grpc/health/v1/health.pb.h"
#include "services/scheduler/generate_call.h"
#include "services/scheduler/generate_request.h"
#include "worker/tokenizer/utf8.h"

namespace llorch {
namespace {

using scheduler::WorkerState;

v1::WorkerState ToProto(WorkerState state) {
  switch (state) {
    case WorkerState::kUnknown: return v1::WORKER_STATE_UNKNOWN;
    case WorkerState::kUp: return v1::WORKER_STATE_UP;
    case WorkerState::kDown: return v1::WORKER_STATE_DOWN;
  }
  return v1::WORKER_STATE_UNSPECIFIED;
}

void FillWorker(const scheduler::WorkerRecord& w, scheduler::Clock::time_point now,
                v1::WorkerStatus* out) {
  out->set_address(w.address);
  out->set_state(ToProto(w.state));
  out->set_model(w.model());
  out->set_source(scheduler::WorkerSourceName(w.source));
  out->set_dispatched_jobs(w.dispatched_jobs);
  out->set_last_error(w.last_error);
  out->set_seconds_since_heartbeat(
      w.last_seen == scheduler::Clock::time_point()
          ? -1.0
          : std::chrono::duration<double>(now - w.last_seen).count());
  if (w.info) {
    out->set_worker_id(w.info->worker_id());
    out->set_active_jobs(w.info->active_jobs());
    out->set_waiting_jobs(w.info->waiting_jobs());
    out->set_kv_used_bytes(w.info->kv_used_bytes());
    out->set_kv_capacity_bytes(w.info->kv_capacity_bytes());
  }
}

void FillModels(const scheduler::CoreSnapshot& snapshot, v1::ListModelsResponse* response) {
  std::map<std::string, v1::Model> models;
  for (const scheduler::WorkerRecord& w : snapshot.workers) {
    if (!w.info || w.model().empty()) continue;
    v1::Model& m = models[w.model()];
    m.set_name(w.model());
    m.add_workers(w.address);
    if (w.state == WorkerState::kUp) m.set_workers_up(m.workers_up() + 1);
    m.set_architecture(w.info->architecture());
    m.set_dtype(w.info->dtype());
    m.set_context_length(w.info->context_length());
  }
  for (auto& [name, model] : models) {
    auto queued = snapshot.queued.find(name);
    if (queued != snapshot.queued.end()) model.set_queued_jobs(static_cast<int32_t>(queued->second));
    *response->add_models() = std::move(model);
  }
}

// "host:port" with a numeric port; "" host allowed (":PORT").
bool ParseAddress(const std::string& address, std::string* host, int* port) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) return false;
  *host = address.substr(0, colon);
  return absl::SimpleAtoi(address.substr(colon + 1), port) && *port > 0 && *port < 65536;
}

bool ValidUtf8(const std::string& text) { return utf8::Sanitize(text) == text; }

// INVALID_ARGUMENT for bytes that were no request at all (lenient_utf8.h).
absl::Status Parsed(const google::protobuf::Message& request) {
  const std::string why = UnparsedRequest(request);
  return why.empty() ? absl::OkStatus() : absl::InvalidArgumentError(why);
}

// Cancel's job_id: required and UTF-8 (unknown ids succeed).
absl::Status CheckCancelRequest(const v1::CancelRequest& request) {
  if (absl::Status s = Parsed(request); !s.ok()) return s;
  if (request.job_id().empty()) return absl::InvalidArgumentError("job_id is required");
  if (!ValidUtf8(request.job_id())) return absl::InvalidArgumentError("job_id is not valid UTF-8");
  return absl::OkStatus();
}

}  // namespace

std::string PeerHost(const std::string& peer) {
  absl::string_view rest = peer;
  if (!absl::ConsumePrefix(&rest, "ipv4:") && !absl::ConsumePrefix(&rest, "ipv6:")) return "";
  const size_t colon = rest.rfind(':');
  if (colon == absl::string_view::npos) return "";
  absl::string_view host = rest.substr(0, colon);
  if (absl::ConsumePrefix(&host, "[")) absl::ConsumeSuffix(&host, "]");
  // URL-escaped zone ids ("%25") are kept as they are.
  return std::string(host);
}

SchedulerService::SchedulerService(SchedulerServiceOptions options) : options_(std::move(options)) {
  // Links the generated health descriptors so reflection can resolve
  // grpc.health.v1 (gRPC's built-in health service does not register them).
  grpc::health::v1::HealthCheckRequest::descriptor();
}

absl::Status SchedulerService::Authenticate(const grpc::CallbackServerContext& context) const {
  if (options_.tokens == nullptr) return absl::OkStatus();
  return options_.tokens->Check(context);
}

// Workers prove themselves by their client certificate when mutual TLS is
// on, else by a token when tokens are required.
absl::Status SchedulerService::AuthenticateWorker(
    const grpc::CallbackServerContext& context) const {
  if (options_.workers_use_client_certs) {
    std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
    if (auth == nullptr || !auth->IsPeerAuthenticated()) {
      return absl::UnauthenticatedError(
          "RegisterWorker needs a client certificate signed by the scheduler's --tls_ca");
    }
    return absl::OkStatus();
  }
  return Authenticate(context);
}

grpc::ServerWriteReactor<v1::GenerateResponse>* SchedulerService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  absl::Status status = Authenticate(*context);
  if (status.ok()) status = ValidateGenerateRequest(*request);
  if (!status.ok()) {
    if (options_.metrics) {
      options_.metrics->CountRequest("", absl::AsciiStrToLower(absl::StatusCodeToString(status.code())));
    }
    return GenerateCall::Refuse(ToGrpcStatus(status));
  }
  GenerateCallOptions call_options;
  call_options.core = options_.core;
  call_options.metrics = options_.metrics;
  call_options.max_buffered_events = options_.max_buffered_events;
  return GenerateCall::Start(call_options, context, *request,
                             request->job_id().empty() ? scheduler::NewJobId() : request->job_id());
}

grpc::ServerUnaryReactor* SchedulerService::Cancel(grpc::CallbackServerContext* context,
                                                   const v1::CancelRequest* request,
                                                   v1::CancelResponse* /*response*/) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Status status = Authenticate(*context);
  if (status.ok()) status = CheckCancelRequest(*request);
  if (status.ok()) options_.core->Cancel(request->job_id());
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

grpc::ServerUnaryReactor* SchedulerService::ListModels(grpc::CallbackServerContext* context,
                                                       const v1::ListModelsRequest* request,
                                                       v1::ListModelsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Status status = Authenticate(*context);
  if (status.ok()) status = Parsed(*request);
  if (!status.ok()) {
    reactor->Finish(ToGrpcStatus(status));
    return reactor;
  }
  options_.core->Snapshot([reactor, response](scheduler::CoreSnapshot snapshot) {
    FillModels(snapshot, response);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* SchedulerService::ListWorkers(grpc::CallbackServerContext* context,
                                                        const v1::ListWorkersRequest* request,
                                                        v1::ListWorkersResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Status status = Authenticate(*context);
  if (status.ok()) status = Parsed(*request);
  if (!status.ok()) {
    reactor->Finish(ToGrpcStatus(status));
    return reactor;
  }
  options_.core->Snapshot([reactor, response](scheduler::CoreSnapshot snapshot) {
    for (const scheduler::WorkerRecord& w : snapshot.workers) {
      FillWorker(w, snapshot.now, response->add_workers());
    }
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* SchedulerService::RegisterWorker(
    grpc::CallbackServerContext* context, const v1::RegisterWorkerRequest* request,
    v1::RegisterWorkerResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status status = AuthenticateWorker(*context); !status.ok()) {
    reactor->Finish(ToGrpcStatus(status));
    return reactor;
  }
  absl::Status parsed = Parsed(*request);
  if (parsed.ok() && !ValidUtf8(request->address())) {
    parsed = absl::InvalidArgumentError("address is not valid UTF-8");
  }
  if (parsed.ok() && !ValidUtf8(request->model())) {
    parsed = absl::InvalidArgumentError("model is not valid UTF-8");
  }
  if (!parsed.ok()) {
    reactor->Finish(ToGrpcStatus(parsed));
    return reactor;
  }
  std::string host;
  int port = 0;
  if (!ParseAddress(request->address(), &host, &port)) {
    reactor->Finish(ToGrpcStatus(absl::InvalidArgumentError(absl::StrCat(
        "address must be HOST:PORT or :PORT, got '", request->address(), "'"))));
    return reactor;
  }
  if (host.empty()) host = PeerHost(context->peer());
  if (host.empty()) {
    reactor->Finish(ToGrpcStatus(absl::InvalidArgumentError(
        "address has no host and the call's peer address is not an IP address")));
    return reactor;
  }
  const bool v6 = host.find(':') != std::string::npos && !absl::StartsWith(host, "[");
  const std::string address = absl::StrCat(v6 ? "[" : "", host, v6 ? "]" : "", ":", port);
  response->set_address(address);
  response->set_heartbeat_interval_seconds(
      std::chrono::duration<double>(options_.core->options().heartbeat_interval).count());
  options_.core->Register(address, [reactor](absl::Status status) {
    reactor->Finish(ToGrpcStatus(status));
  });
  return reactor;
}

}  // namespace llorch
