// llorch models: the models a llorch-scheduler serves (ListModels).
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "llorch/v1/scheduler.grpc.pb.h"
#include "tools/llorch/common.h"

namespace llorch {
namespace tool {
namespace {

namespace api = ::llorch::v1;

constexpr char kUsage[] = "llorch models --scheduler HOST:PORT [flags]";

std::string ModelsTable(const api::ListModelsResponse& response) {
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "WORKERS", "ARCHITECTURE", "DTYPE", "CONTEXT", "QUEUED"}};
  for (const api::Model& m : response.models()) {
    rows.push_back({m.name(), absl::StrCat(m.workers_up(), "/", m.workers_size()),
                    m.architecture(), m.dtype(), absl::StrCat(m.context_length()),
                    absl::StrCat(m.queued_jobs())});
  }
  return Table(rows);
}

// The proto's field names, so the JSON reads as the API's docs.
json ModelsJson(const api::ListModelsResponse& response) {
  json models = json::array();
  for (const api::Model& m : response.models()) {
    models.push_back({{"name", m.name()},
                      {"workers", std::vector<std::string>(m.workers().begin(), m.workers().end())},
                      {"workers_up", m.workers_up()},
                      {"architecture", m.architecture()},
                      {"dtype", m.dtype()},
                      {"context_length", m.context_length()},
                      {"queued_jobs", m.queued_jobs()}});
  }
  return models;
}

absl::Status Models() {
  api::ListModelsResponse response;
  return PrintSchedulerAnswer(
      [&](api::Scheduler::Stub& stub, grpc::ClientContext* context) {
        return stub.ListModels(context, api::ListModelsRequest(), &response);
      },
      [&] { return ModelsJson(response); }, [&] { return ModelsTable(response); });
}

}  // namespace

cli::Subcommand ModelsCommand() {
  return MakeSubcommand("models",
                        "the models a llorch-scheduler serves: workers up/total, queued jobs",
                        kUsage, {{SchedulerFlag()}, ConnectionFlags(), CallFlags()}, &Models);
}

}  // namespace tool
}  // namespace llorch
