// llorch health: grpc.health.v1 Check on a llorch-scheduler or a
// llorch-worker. Prints the serving status; exits 0 only for SERVING, so
// scripts can wait on it.
#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tools/llorch/common.h"

ABSL_FLAG(std::string, service, "",
          "the service to check, e.g. llorch.v1.Scheduler or llorch.worker.v1.Worker "
          "(default: the server as a whole)");

namespace llorch {
namespace tool {
namespace {

namespace health = ::grpc::health::v1;

constexpr char kUsage[] = "llorch health (--scheduler HOST:PORT | --worker HOST:PORT) [flags]";

absl::Status Health() {
  absl::StatusOr<bool> as_json = JsonFormat();
  if (!as_json.ok()) return as_json.status();
  absl::StatusOr<Target> target = WorkerOrScheduler();
  if (!target.ok()) return target.status();
  absl::StatusOr<Connection> server = Connect(target->address);
  if (!server.ok()) return server.status();
  grpc::ClientContext context;
  server->Prepare(&context, CallTimeout());
  health::HealthCheckRequest request;
  request.set_service(absl::GetFlag(FLAGS_service));
  health::HealthCheckResponse response;
  grpc::Status status =
      health::Health::NewStub(server->channel)->Check(&context, request, &response);
  if (!status.ok()) return RpcError(server->address, status);
  const std::string name = health::HealthCheckResponse::ServingStatus_Name(response.status());
  std::cout << (*as_json ? Dump({{"service", request.service()}, {"status", name}}) : name) << "\n";
  if (response.status() != health::HealthCheckResponse::SERVING) {
    return absl::UnavailableError(absl::StrCat(server->address, ": ", name));
  }
  return absl::OkStatus();
}

}  // namespace

cli::Subcommand HealthCommand() {
  return MakeSubcommand(
      "health", "whether a llorch-scheduler or llorch-worker is serving (grpc.health.v1)",
      kUsage,
      {{SchedulerFlag(), WorkerFlag(), cli::FlagSpec("service").Value("NAME")}, ConnectionFlags(),
       CallFlags()},
      &Health);
}

}  // namespace tool
}  // namespace llorch
