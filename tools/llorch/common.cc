#include "tools/llorch/common.h"

#include <ATen/Parallel.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include <grpc/support/log.h>
#include <grpcpp/grpcpp.h>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/grpc/bearer_tokens.h"
#include "common/grpc/tls.h"
#include "worker/model/ggml_ops.h"
#include "worker/sampling/generation_defaults.h"

// The model and the prompt.
ABSL_FLAG(std::string, model, "", "GGUF file or Hugging Face model directory (required)");
ABSL_FLAG(std::string, prompt, "", "prompt text; special tokens such as <|im_start|> are parsed");
ABSL_FLAG(std::string, prompt_ids, "", "prompt as comma-separated token ids: 1,2,3");
ABSL_FLAG(std::string, system, "", "system message before the --chat messages");
ABSL_FLAG(llorch::cli::StringList, chat, {},
          "a chat message (no role: user), rendered with the model's chat template");

// Sampling (run, generate): the worker's defaults (worker/sampling/
// generation_defaults.h), so a flag not given means what an absent field means.
ABSL_FLAG(int32_t, max_tokens, llorch::kDefaultMaxTokens, "most tokens to generate");
ABSL_FLAG(float, temperature, llorch::kDefaultTemperature, "sampling temperature; 0 is greedy");
ABSL_FLAG(int32_t, top_k, llorch::kDefaultTopK, "sample among the N most likely tokens; 0 is off");
ABSL_FLAG(float, top_p, llorch::kDefaultTopP, "nucleus sampling mass; 1 is off");
ABSL_FLAG(float, min_p, llorch::kDefaultMinP, "drop tokens less likely than X times the most likely; 0 is off");
ABSL_FLAG(float, repetition_penalty, llorch::kDefaultRepetitionPenalty,
          "divide the logits of tokens already seen (prompt and output); 1 is off");
ABSL_FLAG(std::optional<uint64_t>, seed, std::nullopt,
          "sampling seed; the same seed gives the same tokens (default: random)");
ABSL_FLAG(llorch::cli::StringList, stop, {}, "stop string: ends generation, not emitted");
ABSL_FLAG(llorch::cli::StringList, stop_id, {}, "token ids that end generation, comma-separated");
ABSL_FLAG(bool, ignore_eos, false, "generate past end-of-generation tokens");
ABSL_FLAG(int32_t, logprobs, 0, "log-probs of the N most likely alternatives per token");
ABSL_FLAG(std::string, format, "text", "output: the text, or one JSON event per line");

// Loading the weights (run, score, bench).
ABSL_FLAG(int32_t, threads,
          static_cast<int32_t>(std::max(1u, std::thread::hardware_concurrency())),
          "CPU threads; all cores unless given");
ABSL_FLAG(std::string, device, "cpu", "where the model runs");
ABSL_FLAG(std::string, gelu, "auto",
          "GELU as ggml computes it (ggml) or the exact tanh form (exact); auto: ggml for "
          "GGUF files, exact for Hugging Face directories");
ABSL_FLAG(std::string, ggml_variant, "auto",
          "whose float order the CPU path follows; auto: LLORCH_GGML_VARIANT, else what "
          "llama.cpp's ggml picks on this CPU");
ABSL_FLAG(std::string, kv_type, "auto",
          "element type of the KV cache: auto, f32, f16, bf16 or q8_0 (auto: f32 where the CPU "
          "kernels run, else --dtype's type; f16 and bf16 halve its memory, q8_0 takes 0.27x, "
          "CPU only)");
ABSL_FLAG(std::string, dtype, "auto",
          "weights and activations on the libtorch path: auto (bf16 on cuda, f16 on mps, "
          "the CPU's own kernels over the file's types on cpu), f32, f16 or bf16 (on cpu: "
          "the libtorch path, as a GPU computes)");
ABSL_FLAG(bool, cuda_graphs, true,
          "on CUDA below f32, replay each decode step's kernels as a CUDA graph captured once "
          "per batch shape (false: launch them one by one)");
ABSL_FLAG(bool, cuda_kernels, true,
          "on CUDA below f32, in builds with llorch's CUDA kernels: llorch's kernels for products "
          "of up to 8 jobs, norms, SiLU, RoPE and decode attention (false: libtorch's ops)");
ABSL_FLAG(bool, mmap, true,
          "multiply CPU weights straight from the file's mapping where its rows are laid out "
          "as the kernels read them (fast load); false copies them (llama.cpp's --no-mmap)");

// The servers (generate, bench-serve, models, workers, cancel, health).
ABSL_FLAG(std::string, worker, "", "address of a running llorch-worker");
ABSL_FLAG(std::string, scheduler, "", "address of a running llorch-scheduler");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA certificates the server's certificate must chain to; turns TLS on");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain presented as this client's identity (mutual TLS; with --tls-ca)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls-cert");
ABSL_FLAG(std::string, token_file, "",
          "file holding a bearer token, sent with every call as `authorization: Bearer TOKEN`");
// One short call (models, workers, cancel, health); `generate` has its own.
ABSL_FLAG(std::string, call_format, "text", "output: a table or a line of text, or JSON");
ABSL_FLAG(double, call_timeout, 10, "seconds until the call is abandoned");

namespace llorch {
namespace tool {

cli::FlagSpec ModelFlag() { return cli::FlagSpec("model").Value("PATH"); }
cli::FlagSpec FormatFlag() { return cli::FlagSpec("format").Value("text|jsonl"); }
cli::FlagSpec WorkerFlag() { return cli::FlagSpec("worker").Value("HOST:PORT"); }

std::vector<cli::FlagSpec> PromptFlags() {
  return {"prompt", cli::FlagSpec("prompt_ids").Value("IDS"), "system",
          cli::FlagSpec("chat").Value("[ROLE:]TEXT")};
}

std::vector<cli::FlagSpec> SamplingFlags() {
  return {cli::FlagSpec("max_tokens").AtLeast(1),
          cli::FlagSpec("temperature").AtLeast(0),
          cli::FlagSpec("top_k").AtLeast(0),
          cli::FlagSpec("top_p").Above(0).AtMost(1),
          cli::FlagSpec("min_p").AtLeast(0).AtMost(1),
          cli::FlagSpec("repetition_penalty").Above(0),
          "seed",
          "stop",
          cli::FlagSpec("stop_id").Value("IDS"),
          "ignore_eos",
          cli::FlagSpec("logprobs").AtLeast(0).AtMost(20)};
}

std::vector<cli::FlagSpec> LoadFlags() {
  return {cli::FlagSpec("threads").AtLeast(1), cli::FlagSpec("device").Value("cpu|cuda|mps"),
          cli::FlagSpec("gelu").Value("auto|exact|ggml"),
          cli::FlagSpec("ggml_variant").Value("auto|avx2|avx512|amx"),
          cli::FlagSpec("kv_type").Value("auto|f32|f16|bf16|q8_0"),
          cli::FlagSpec("dtype").Value("auto|f32|f16|bf16"), "cuda_graphs", "cuda_kernels", "mmap"};
}

cli::Subcommand MakeSubcommand(std::string name, std::string summary, std::string usage,
                               std::vector<std::vector<cli::FlagSpec>> flag_groups,
                               absl::Status (*run)()) {
  cli::Subcommand subcommand;
  subcommand.name = name;
  subcommand.spec.program = absl::StrCat("llorch ", name);
  subcommand.spec.summary = std::move(summary);
  subcommand.spec.usage = std::move(usage);
  for (std::vector<cli::FlagSpec>& group : flag_groups) {
    for (cli::FlagSpec& flag : group) subcommand.spec.flags.push_back(std::move(flag));
  }
  subcommand.run = run;
  return subcommand;
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json TopLogProbsJson(const std::vector<std::pair<int32_t, float>>& top) {
  json out = json::array();
  for (const auto& [id, lp] : top) out.push_back({id, lp});
  return out;
}

absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& text, const std::string& flag) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id)) {
      return absl::InvalidArgumentError(absl::StrCat(flag, ": not a token id: '", part, "'"));
    }
    ids.push_back(id);
  }
  return ids;
}

absl::StatusOr<bool> JsonlFormat() {
  const std::string format = absl::GetFlag(FLAGS_format);
  if (format != "text" && format != "jsonl") {
    return absl::InvalidArgumentError(absl::StrCat("--format must be text or jsonl, got ", format));
  }
  return format == "jsonl";
}

namespace {

absl::StatusOr<LoadOptions> LoadOptionsFromFlags() {
  at::set_num_threads(absl::GetFlag(FLAGS_threads));
  LoadOptions options;
  options.device = absl::GetFlag(FLAGS_device);
  const std::string gelu = absl::GetFlag(FLAGS_gelu);
  if (gelu == "exact") {
    options.gelu = LoadOptions::Gelu::kExact;
  } else if (gelu == "ggml") {
    options.gelu = LoadOptions::Gelu::kGgmlF16;
  } else if (gelu != "auto") {
    return absl::InvalidArgumentError(
        absl::StrCat("--gelu must be auto, exact or ggml, got ", gelu));
  }
  if (const std::string variant = absl::GetFlag(FLAGS_ggml_variant); variant != "auto") {
    absl::StatusOr<GgmlVariant> parsed = ParseGgmlVariant(variant);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--ggml-variant: ", parsed.status().message()));
    }
    options.ggml_variant = *parsed;
  }
  absl::StatusOr<LoadOptions::Dtype> dtype = ParseDtype(absl::GetFlag(FLAGS_dtype));
  if (!dtype.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--dtype: ", dtype.status().message()));
  }
  options.dtype = *dtype;
  options.cuda_graphs = absl::GetFlag(FLAGS_cuda_graphs);
  options.cuda_kernels = absl::GetFlag(FLAGS_cuda_kernels);
  absl::StatusOr<KvType> kv_type = ParseKvTypeFor(absl::GetFlag(FLAGS_kv_type), options);
  if (!kv_type.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--kv-type: ", kv_type.status().message()));
  }
  options.kv_type = *kv_type;
  options.map_weights = absl::GetFlag(FLAGS_mmap);
  return options;
}

// "llorch: loading PATH ... " now, "done in 1.2 s" or "failed" at Finish;
// silent unless stderr is a terminal.
class LoadProgress {
 public:
  LoadProgress(bool wanted, const std::string& path)
      : shown_(wanted && isatty(STDERR_FILENO)), start_(std::chrono::steady_clock::now()) {
    if (shown_) std::cerr << "llorch: loading " << path << " ... " << std::flush;
  }
  void Finish(bool ok) {
    if (!shown_) return;
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    std::cerr << (ok ? absl::StrFormat("done in %.1f s", seconds) : "failed") << std::endl;
  }

 private:
  const bool shown_;
  const std::chrono::steady_clock::time_point start_;
};

}  // namespace

absl::StatusOr<ServedModel> LoadModel(const LoadRequest& request) {
  const std::string path = absl::GetFlag(FLAGS_model);
  if (path.empty()) return absl::InvalidArgumentError("--model is required");
  std::optional<LoadOptions> options;
  if (request.weights) {
    absl::StatusOr<LoadOptions> parsed = LoadOptionsFromFlags();
    if (!parsed.ok()) return parsed.status();
    options = *parsed;
  }
  LoadProgress progress(request.progress, path);
  absl::StatusOr<ServedModel> served = LoadServedModel(path, options ? &*options : nullptr);
  progress.Finish(served.ok());
  if (served.ok() && request.need_tokenizer && served->tokenizer == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, ": no tokenizer in the model directory (only `score` works without one)"));
  }
  return served;
}

bool HasChatPrompt() {
  return cli::WasGiven(FLAGS_chat) || cli::WasGiven(FLAGS_system);
}

absl::Status CheckOnePrompt() {
  const int forms =
      cli::WasGiven(FLAGS_prompt) + cli::WasGiven(FLAGS_prompt_ids) + HasChatPrompt();
  if (forms != 1) {
    return absl::InvalidArgumentError(
        "give exactly one of --prompt, --prompt-ids and --chat (with optional --system)");
  }
  return absl::OkStatus();
}

std::vector<ChatMessage> ChatMessages() {
  std::vector<ChatMessage> messages;
  if (cli::WasGiven(FLAGS_system)) messages.push_back({"system", absl::GetFlag(FLAGS_system)});
  for (const std::string& turn : absl::GetFlag(FLAGS_chat).values) {
    const size_t colon = turn.find(':');
    const std::string role = colon == std::string::npos ? "" : turn.substr(0, colon);
    const bool named = !role.empty() && role.find_first_of(" \n") == std::string::npos;
    messages.push_back(named ? ChatMessage{role, turn.substr(colon + 1)}
                             : ChatMessage{"user", turn});
  }
  return messages;
}

absl::StatusOr<std::vector<int32_t>> PromptIds(const ServedModel& served) {
  if (absl::Status s = CheckOnePrompt(); !s.ok()) return s;
  if (cli::WasGiven(FLAGS_prompt_ids)) {
    return ParseIds(absl::GetFlag(FLAGS_prompt_ids), "--prompt-ids");
  }
  if (cli::WasGiven(FLAGS_prompt)) {
    return served.tokenizer->Encode(absl::GetFlag(FLAGS_prompt), /*add_special=*/true,
                                    /*parse_special=*/true);
  }
  return ChatPromptIds(served, ChatMessages(), /*add_generation_prompt=*/true);
}

absl::StatusOr<GenerationParams> GenerationParamsFromFlags() {
  GenerationParams params;
  params.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  params.sampling.temperature = absl::GetFlag(FLAGS_temperature);
  params.sampling.top_k = absl::GetFlag(FLAGS_top_k);
  params.sampling.top_p = absl::GetFlag(FLAGS_top_p);
  params.sampling.min_p = absl::GetFlag(FLAGS_min_p);
  params.sampling.repetition_penalty = absl::GetFlag(FLAGS_repetition_penalty);
  params.sampling.seed = absl::GetFlag(FLAGS_seed);  // none: the job draws one
  params.stop_strings = absl::GetFlag(FLAGS_stop).values;
  for (const std::string& text : absl::GetFlag(FLAGS_stop_id).values) {
    absl::StatusOr<std::vector<int32_t>> ids = ParseIds(text, "--stop-id");
    if (!ids.ok()) return ids.status();
    params.stop_ids.insert(params.stop_ids.end(), ids->begin(), ids->end());
  }
  params.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  params.top_logprobs = absl::GetFlag(FLAGS_logprobs);
  return params;
}

worker::v1::ExecuteRequest ToExecuteRequest(const std::string& job_id,
                                            const GenerationParams& params) {
  worker::v1::ExecuteRequest request;
  request.set_job_id(job_id);
  worker::v1::SamplingParams* sampling = request.mutable_sampling();
  sampling->set_temperature(params.sampling.temperature);
  sampling->set_top_k(params.sampling.top_k);
  sampling->set_top_p(params.sampling.top_p);
  sampling->set_min_p(params.sampling.min_p);
  sampling->set_repetition_penalty(params.sampling.repetition_penalty);
  if (params.sampling.seed.has_value()) sampling->set_seed(*params.sampling.seed);
  request.set_max_tokens(params.max_tokens);
  for (const std::string& stop : params.stop_strings) request.add_stop(stop);
  for (int32_t id : params.stop_ids) request.add_stop_token_ids(id);
  request.set_logprobs(params.top_logprobs);
  request.set_ignore_eos(params.ignore_eos);
  return request;
}

std::unique_ptr<worker::v1::Worker::Stub> WorkerStub(const std::string& address) {
  return worker::v1::Worker::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
}

std::string NewJobId() { return absl::StrCat("cli-", getpid(), "-", std::random_device{}()); }

cli::FlagSpec SchedulerFlag() { return cli::FlagSpec("scheduler").Value("HOST:PORT"); }

std::vector<cli::FlagSpec> ConnectionFlags() {
  return {cli::FlagSpec("tls_ca").Value("FILE"), cli::FlagSpec("tls_cert").Value("FILE"),
          cli::FlagSpec("tls_key").Value("FILE"), cli::FlagSpec("token_file").Value("FILE")};
}

std::vector<cli::FlagSpec> CallFlags() {
  return {cli::FlagSpec("format").Reads("call_format").Value("text|json"),
          cli::FlagSpec("timeout").Reads("call_timeout").Value("SECONDS").Above(0).AtMost(1e9)};
}

namespace {

// The token of --token-file, its errors named by the flag.
absl::StatusOr<std::string> ReadToken(const std::string& path) {
  absl::StatusOr<std::string> token = ReadBearerToken(path);
  if (!token.ok()) {
    return absl::Status(token.status().code(),
                        absl::StrCat("--token-file: ", token.status().message()));
  }
  return token;
}

void DropGrpcLog(gpr_log_func_args* /*args*/) {}

}  // namespace

void Connection::Prepare(grpc::ClientContext* context, double timeout_seconds) const {
  const auto timeout = std::chrono::duration<double>(timeout_seconds);
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::duration_cast<std::chrono::milliseconds>(timeout));
  // Metadata rather than call credentials: gRPC sends those over TLS only,
  // and a token on a plaintext loopback is still worth sending.
  if (!token.empty()) context->AddMetadata("authorization", BearerAuthorization(token));
}

absl::StatusOr<Connection> Connect(const std::string& address) {
  // gRPC logs failed handshakes and the like on stderr, while the call's
  // status already says the same in the one error line; GRPC_VERBOSITY
  // brings its log back for debugging.
  if (getenv("GRPC_VERBOSITY") == nullptr) gpr_set_log_function(DropGrpcLog);
  TlsFiles files{absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
                 absl::GetFlag(FLAGS_tls_ca)};
  // Without a CA the channel is plaintext and would silently drop the identity.
  if (files.ca.empty() && !(files.cert.empty() && files.key.empty())) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key need --tls-ca");
  }
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      MakeChannelCredentials(files);
  if (!credentials.ok()) return credentials.status();
  Connection connection;
  connection.address = address;
  connection.channel = grpc::CreateChannel(address, *credentials);
  if (const std::string path = absl::GetFlag(FLAGS_token_file); !path.empty()) {
    absl::StatusOr<std::string> token = ReadToken(path);
    if (!token.ok()) return token.status();
    connection.token = *std::move(token);
  }
  return connection;
}

absl::StatusOr<Target> WorkerOrScheduler() {
  const std::string worker = absl::GetFlag(FLAGS_worker);
  const std::string scheduler = absl::GetFlag(FLAGS_scheduler);
  if (worker.empty() == scheduler.empty()) {
    return absl::InvalidArgumentError("give exactly one of --worker and --scheduler");
  }
  return worker.empty() ? Target{scheduler, true} : Target{worker, false};
}

absl::StatusOr<Connection> ConnectScheduler() {
  const std::string address = absl::GetFlag(FLAGS_scheduler);
  if (address.empty()) return absl::InvalidArgumentError("--scheduler is required");
  return Connect(address);
}

absl::Status RpcError(const std::string& address, const grpc::Status& status) {
  const auto code = static_cast<absl::StatusCode>(status.error_code());
  return absl::Status(code, absl::StrCat(address, ": ", absl::StatusCodeToString(code), ": ",
                                         status.error_message()));
}

absl::StatusOr<bool> JsonFormat() {
  const std::string format = absl::GetFlag(FLAGS_call_format);
  if (format != "text" && format != "json") {
    return absl::InvalidArgumentError(absl::StrCat("--format must be text or json, got ", format));
  }
  return format == "json";
}

double CallTimeout() { return absl::GetFlag(FLAGS_call_timeout); }

absl::Status PrintSchedulerAnswer(
    absl::FunctionRef<grpc::Status(::llorch::v1::Scheduler::Stub&, grpc::ClientContext*)> call,
    absl::FunctionRef<json()> as_json, absl::FunctionRef<std::string()> as_table) {
  absl::StatusOr<bool> json_format = JsonFormat();
  if (!json_format.ok()) return json_format.status();
  absl::StatusOr<Connection> server = ConnectScheduler();
  if (!server.ok()) return server.status();
  grpc::ClientContext context;
  server->Prepare(&context, CallTimeout());
  grpc::Status status = call(*::llorch::v1::Scheduler::NewStub(server->channel), &context);
  if (!status.ok()) return RpcError(server->address, status);
  std::cout << (*json_format ? Dump(as_json()) + "\n" : as_table());
  return absl::OkStatus();
}

std::string Table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()));
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      absl::StrAppend(&line, row[i], std::string(widths[i] - row[i].size() + 2, ' '));
    }
    absl::StrAppend(&out, absl::StripTrailingAsciiWhitespace(line), "\n");
  }
  return out;
}

std::vector<std::string> BareArgumentAsFlag(std::vector<std::string> args,
                                            const std::string& subcommand,
                                            const std::string& flag) {
  if (args.empty() || args[0] != subcommand) return args;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h") continue;
    if (absl::StartsWith(arg, "-")) {
      if (!absl::StrContains(arg, '=')) ++i;  // skips the flag's value
      continue;
    }
    args.insert(args.begin() + i, absl::StrCat("--", flag));
    return args;
  }
  return args;
}

}  // namespace tool
}  // namespace llorch
