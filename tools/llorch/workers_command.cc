// llorch workers: a llorch-scheduler's workers and their load (ListWorkers).
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "llorch/v1/scheduler.grpc.pb.h"
#include "tools/llorch/common.h"

namespace llorch {
namespace tool {
namespace {

namespace api = ::llorch::v1;

constexpr char kUsage[] = "llorch workers --scheduler HOST:PORT [flags]";

std::string StateName(api::WorkerState state) {
  return std::string(
      absl::StripPrefix(absl::AsciiStrToLower(api::WorkerState_Name(state)), "worker_state_"));
}

std::string Mib(int64_t bytes) { return absl::StrFormat("%.1f", bytes / 1048576.0); }

std::string WorkersTable(const api::ListWorkersResponse& response) {
  std::vector<std::vector<std::string>> rows = {{"ADDRESS", "STATE", "MODEL", "ACTIVE", "WAITING",
                                                 "DISPATCHED", "KV MIB", "HEARTBEAT S",
                                                 "LAST ERROR"}};
  for (const api::WorkerStatus& w : response.workers()) {
    const double age = w.seconds_since_heartbeat();
    rows.push_back({w.address(), StateName(w.state()), w.model(), absl::StrCat(w.active_jobs()),
                    absl::StrCat(w.waiting_jobs()), absl::StrCat(w.dispatched_jobs()),
                    absl::StrCat(Mib(w.kv_used_bytes()), "/", Mib(w.kv_capacity_bytes())),
                    age < 0 ? "never" : absl::StrFormat("%.1f", age), w.last_error()});
  }
  return Table(rows);
}

// The proto's field names, so the JSON reads as the API's docs.
json WorkersJson(const api::ListWorkersResponse& response) {
  json workers = json::array();
  for (const api::WorkerStatus& w : response.workers()) {
    workers.push_back({{"address", w.address()},
                       {"state", StateName(w.state())},
                       {"model", w.model()},
                       {"worker_id", w.worker_id()},
                       {"source", w.source()},
                       {"active_jobs", w.active_jobs()},
                       {"waiting_jobs", w.waiting_jobs()},
                       {"dispatched_jobs", w.dispatched_jobs()},
                       {"kv_used_bytes", w.kv_used_bytes()},
                       {"kv_capacity_bytes", w.kv_capacity_bytes()},
                       {"seconds_since_heartbeat", w.seconds_since_heartbeat()},
                       {"last_error", w.last_error()}});
  }
  return workers;
}

absl::Status Workers() {
  api::ListWorkersResponse response;
  return PrintSchedulerAnswer(
      [&](api::Scheduler::Stub& stub, grpc::ClientContext* context) {
        return stub.ListWorkers(context, api::ListWorkersRequest(), &response);
      },
      [&] { return WorkersJson(response); }, [&] { return WorkersTable(response); });
}

}  // namespace

cli::Subcommand WorkersCommand() {
  return MakeSubcommand(
      "workers", "a llorch-scheduler's workers: state, jobs, KV cache use, last heartbeat",
      kUsage, {{SchedulerFlag()}, ConnectionFlags(), CallFlags()}, &Workers);
}

}  // namespace tool
}  // namespace llorch
