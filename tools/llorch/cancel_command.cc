// llorch cancel JOB_ID: ends a live job, queued or running, on a
// llorch-scheduler (or a llorch-worker); its stream gets Finished with
// reason "cancelled". Unknown and finished ids succeed too (the API's Cancel
// is idempotent), so success says the request was taken, not that a job died.
#include <iostream>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "llorch/v1/scheduler.grpc.pb.h"
#include "tools/llorch/common.h"

// Not `job_id`: generate's help says what its default is.
ABSL_FLAG(std::string, cancel_job_id, "", "the job to cancel; also the bare argument");

namespace llorch {
namespace tool {
namespace {

namespace api = ::llorch::v1;

constexpr char kUsage[] =
    "llorch cancel (--scheduler HOST:PORT | --worker HOST:PORT) [flags] JOB_ID";

grpc::Status CancelOn(const Target& target, const Connection& server, const std::string& job_id) {
  grpc::ClientContext context;
  server.Prepare(&context, CallTimeout());
  if (target.scheduler) {
    api::CancelRequest request;
    request.set_job_id(job_id);
    api::CancelResponse response;
    return api::Scheduler::NewStub(server.channel)->Cancel(&context, request, &response);
  }
  worker::v1::CancelRequest request;
  request.set_job_id(job_id);
  worker::v1::CancelResponse response;
  return worker::v1::Worker::NewStub(server.channel)->Cancel(&context, request, &response);
}

absl::Status Cancel() {
  const std::string job_id = absl::GetFlag(FLAGS_cancel_job_id);
  if (job_id.empty()) {
    return absl::InvalidArgumentError("give the job id: llorch cancel ... JOB_ID");
  }
  absl::StatusOr<bool> as_json = JsonFormat();
  if (!as_json.ok()) return as_json.status();
  absl::StatusOr<Target> target = WorkerOrScheduler();
  if (!target.ok()) return target.status();
  absl::StatusOr<Connection> server = Connect(target->address);
  if (!server.ok()) return server.status();
  if (grpc::Status s = CancelOn(*target, *server, job_id); !s.ok()) {
    return RpcError(server->address, s);
  }
  std::cout << (*as_json ? Dump({{"job_id", job_id}, {"cancel_requested", true}})
                         : "cancel requested: " + job_id)
            << "\n";
  return absl::OkStatus();
}

}  // namespace

cli::Subcommand CancelCommand() {
  return MakeSubcommand(
      "cancel", "end a live job, queued or running, on a llorch-scheduler (or a llorch-worker)",
      kUsage,
      {{SchedulerFlag(), WorkerFlag(), cli::FlagSpec("job_id").Reads("cancel_job_id").Value("ID")},
       ConnectionFlags(), CallFlags()},
      &Cancel);
}

}  // namespace tool
}  // namespace llorch
