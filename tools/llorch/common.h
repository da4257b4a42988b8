// What the llorch subcommands share: flags (model, prompt, sampling, loading,
// servers and how to reach them), their readers, and helpers for output and
// the servers.
// Each <name>_command.cc defines its own flags and returns its Subcommand.
#ifndef LLORCH_TOOLS_LLORCH_COMMON_H_
#define LLORCH_TOOLS_LLORCH_COMMON_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/flags/declare.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/cli/flags.h"
#include "llorch/v1/scheduler.grpc.pb.h"
#include "services/worker/worker_client.h"
#include "worker/engine/job.h"
#include "worker/engine/served_model.h"

ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(std::string, prompt);
ABSL_DECLARE_FLAG(std::string, prompt_ids);
ABSL_DECLARE_FLAG(std::string, system);
ABSL_DECLARE_FLAG(llorch::cli::StringList, chat);
ABSL_DECLARE_FLAG(std::string, format);
ABSL_DECLARE_FLAG(std::string, worker);
ABSL_DECLARE_FLAG(std::string, scheduler);

namespace llorch {
namespace tool {

using json = nlohmann::json;

// Flags shared by several subcommands, in help order.
cli::FlagSpec ModelFlag();
cli::FlagSpec FormatFlag();
cli::FlagSpec WorkerFlag();
std::vector<cli::FlagSpec> PromptFlags();    // --prompt, --prompt-ids, --system, --chat
std::vector<cli::FlagSpec> SamplingFlags();  // --max-tokens ... --logprobs (run, generate)
std::vector<cli::FlagSpec> LoadFlags();      // --threads, --device, --gelu, --ggml-variant, --kv-type

// A subcommand of `llorch` whose flags are the concatenated groups.
cli::Subcommand MakeSubcommand(std::string name, std::string summary, std::string usage,
                               std::vector<std::vector<cli::FlagSpec>> flag_groups,
                               absl::Status (*run)());

// One JSON line; invalid UTF-8 replaced.
std::string Dump(const json& j);
json TopLogProbsJson(const std::vector<std::pair<int32_t, float>>& top);

// "1,2,3" -> ids; errors name `flag`.
absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& text, const std::string& flag);

// --format: text or jsonl; true for jsonl.
absl::StatusOr<bool> JsonlFormat();

// The model of --model: tokenizer and config, plus the weights when
// `weights` (then --threads, --device, --gelu and --ggml-variant apply). With
// `progress`, on a terminal, "llorch: loading PATH ... done in 1.2 s" on stderr.
struct LoadRequest {
  bool weights = true;
  bool need_tokenizer = true;
  bool progress = false;
};
absl::StatusOr<ServedModel> LoadModel(const LoadRequest& request);

// Exactly one of --prompt, --prompt-ids and --chat (with optional --system).
absl::Status CheckOnePrompt();
bool HasChatPrompt();
// --system and every --chat "[ROLE:]TEXT" (no role: user).
std::vector<ChatMessage> ChatMessages();
// The prompt as ids, encoded or rendered with the model's chat template.
absl::StatusOr<std::vector<int32_t>> PromptIds(const ServedModel& served);

// The sampling flags as job parameters.
absl::StatusOr<GenerationParams> GenerationParamsFromFlags();

// ---- Client side: talking to a running llorch-worker or llorch-scheduler. ----
worker::v1::ExecuteRequest ToExecuteRequest(const std::string& job_id,
                                            const GenerationParams& params);
std::unique_ptr<worker::v1::Worker::Stub> WorkerStub(const std::string& address);
std::string NewJobId();

cli::FlagSpec SchedulerFlag();
std::vector<cli::FlagSpec> ConnectionFlags();  // --tls-ca, --tls-cert, --tls-key, --token-file
std::vector<cli::FlagSpec> CallFlags();        // --format text|json, --timeout (one short call)

// A server to call: a channel with TLS as the flags say, and the bearer
// token of --token-file that every call carries.
struct Connection {
  std::string address;
  std::shared_ptr<grpc::Channel> channel;
  std::string token;  // empty: none

  // Sets the call's deadline and its authorization metadata.
  void Prepare(grpc::ClientContext* context, double timeout_seconds) const;
};
absl::StatusOr<Connection> Connect(const std::string& address);

// The address of --worker or --scheduler: exactly one must be given.
struct Target {
  std::string address;
  bool scheduler = false;
};
absl::StatusOr<Target> WorkerOrScheduler();
absl::StatusOr<Connection> ConnectScheduler();  // --scheduler, required

// "ADDRESS: CODE_NAME: message", keeping the gRPC code.
absl::Status RpcError(const std::string& address, const grpc::Status& status);

// CallFlags: json (true) or text; --timeout.
absl::StatusOr<bool> JsonFormat();
double CallTimeout();

// One short call to the scheduler of --scheduler (`call` gets a context with
// --timeout and the token), then its answer printed as --format says:
// `as_json()` on one line, or `as_table()`.
absl::Status PrintSchedulerAnswer(
    absl::FunctionRef<grpc::Status(::llorch::v1::Scheduler::Stub&, grpc::ClientContext*)> call,
    absl::FunctionRef<json()> as_json, absl::FunctionRef<std::string()> as_table);

// Rows as columns padded to their widest cell; the first row is the header.
std::string Table(const std::vector<std::vector<std::string>>& rows);

// `SUBCOMMAND ... VALUE ...` -> `SUBCOMMAND ... --flag VALUE ...` for the
// first bare argument, since the flag parser takes none. Assumes every flag
// of the subcommand but --help takes a value. Other subcommands' args are
// returned as given.
std::vector<std::string> BareArgumentAsFlag(std::vector<std::string> args,
                                            const std::string& subcommand,
                                            const std::string& flag);

// The subcommands, one per file.
cli::Subcommand RunCommand();
cli::Subcommand ScoreCommand();
cli::Subcommand BenchCommand();
cli::Subcommand GenerateCommand();
cli::Subcommand BenchServeCommand();
cli::Subcommand ConvertCommand();
cli::Subcommand InspectCommand();
cli::Subcommand TokenizeCommand();
cli::Subcommand ModelsCommand();
cli::Subcommand WorkersCommand();
cli::Subcommand CancelCommand();
cli::Subcommand HealthCommand();
cli::Subcommand SoakCommand();

}  // namespace tool
}  // namespace llorch

#endif  // LLORCH_TOOLS_LLORCH_COMMON_H_
