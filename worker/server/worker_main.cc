// llorch-worker: serves one model over gRPC (llorch.worker.v1.Worker) with
// continuous batching, grpc.health.v1 and server reflection, and Prometheus
// metrics over HTTP. Lifecycle: listen (health NOT_SERVING) -> load the
// model -> warm up on a throwaway job -> SERVING -> on SIGTERM/SIGINT:
// NOT_SERVING, refuse new jobs, let running ones finish for --drain_timeout,
// cancel the rest, exit 0. With --scheduler it registers with the scheduler(s)
// once SERVING and heartbeats until it exits (through the drain too, so the
// scheduler sees Info.draining).
#include <ATen/Parallel.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/flags/flag.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "common/cli/flags.h"
#include "common/cli/termination_signals.h"
#include "common/grpc/bearer_tokens.h"
#include "common/grpc/tls.h"
#include "common/memory/heap_reuse.h"
#include "common/memory/library_pages.h"
#include "common/metrics/exposer.h"
#include "services/worker/worker_metrics.h"
#include "services/worker/worker_service.h"
#include "worker/engine/engine.h"
#include "worker/engine/served_model.h"
#include "worker/model/kv_cache.h"
#include "worker/server/scheduler_registration.h"
#include "worker/server/served_model_name.h"

ABSL_FLAG(std::string, model, "", "GGUF file or Hugging Face model directory (required)");
ABSL_FLAG(std::string, served_model_name, "",
          "the model's name in Info, the metrics' model label and schedulers (default: the "
          "model file's or directory's name without its extension)");
ABSL_FLAG(std::string, listen, "0.0.0.0:50061", "gRPC address host:port (port 0 picks one)");
ABSL_FLAG(int, metrics_port, 9464, "HTTP port for /metrics (0 picks one, -1 turns it off)");
ABSL_FLAG(std::string, metrics_host, "0.0.0.0", "address /metrics binds to");
ABSL_FLAG(std::string, kv_budget, "1GiB",
          "KV cache memory of all running jobs: bytes with an optional KiB/MiB/GiB suffix, "
          "or a number of token positions with the suffix 'tokens'");
ABSL_FLAG(bool, mmap, true,
          "multiply CPU weights straight from the model file's mapping where its rows are "
          "laid out as the kernels read them (fast load); false copies them (llama.cpp's "
          "--no-mmap)");
ABSL_FLAG(std::string, kv_type, "auto",
          "element type of the KV cache: auto | f32 | f16 | bf16 | q8_0 (auto: f32 where the "
          "CPU kernels run, else --dtype's type; 16 bits halve KV memory, q8_0 takes 0.27x, "
          "CPU only; attention still computes in f32 on the CPU)");
ABSL_FLAG(int, kv_block_size, 16,
          "positions per KV cache block (a multiple of 4): jobs hold whole blocks, and "
          "prefixes are shared and cached by whole blocks");
ABSL_FLAG(bool, prefix_cache, true,
          "keep full KV blocks after their job ends, and map them into later jobs whose "
          "prompts start with the same tokens (results are identical either way)");
ABSL_FLAG(bool, cache_answers, false,
          "with --prefix_cache: recompute each finished job's prompt and answer as prompt rows "
          "in the background (when no job waits), so a chat's next turn also finds the "
          "answer's blocks cached");
ABSL_FLAG(std::string, kv_admission, "paged",
          "paged: a job is admitted when its prompt's KV blocks fit and grows block by block "
          "(preempted and recomputed if the pool runs dry); reserve: it waits until prompt + "
          "max_tokens fit (the pre-paging policy, for comparisons)");
ABSL_FLAG(int, max_batch, 16, "jobs decoded together");
ABSL_FLAG(int, max_waiting, 256, "jobs queued for admission before RESOURCE_EXHAUSTED");
ABSL_FLAG(int, max_prefill_tokens, 512, "prompt tokens prefilled per engine step");
ABSL_FLAG(int, threads, 0, "CPU threads for the model (0: all cores)");
ABSL_FLAG(std::string, device, "cpu", "cpu | cuda | mps");
ABSL_FLAG(std::string, dtype, "auto",
          "weights and activations on the libtorch path: auto (bf16 on cuda, f16 on mps, the "
          "CPU's own kernels over the file's types on cpu) | f32 | f16 | bf16");
ABSL_FLAG(bool, cuda_graphs, true,
          "on CUDA below f32, replay each decode step's kernels as a CUDA graph captured once "
          "per batch shape (false: launch them one by one, as vLLM's --enforce-eager)");
ABSL_FLAG(bool, cuda_kernels, true,
          "on CUDA below f32, in builds with llorch's CUDA kernels (-DLLORCH_CUDA_KERNELS=ON): "
          "llorch's kernels for products of up to 8 jobs, norms, SiLU, RoPE and decode attention "
          "(false: libtorch's ops and cuBLAS)");
ABSL_FLAG(std::string, ggml_variant, "auto",
          "whose float order the CPU path follows: auto (LLORCH_GGML_VARIANT, else what "
          "llama.cpp's ggml picks on this CPU) | avx2 | avx512 | amx");
ABSL_FLAG(std::string, chat_template, "",
          "Jinja chat template file for `messages` requests (default: the model's own)");
ABSL_FLAG(std::string, worker_id, "", "name reported in Info (default: host:port)");
ABSL_FLAG(int, max_stream_buffer_events, 1024,
          "events queued for a client that does not read its stream before its job is "
          "cancelled with RESOURCE_EXHAUSTED (at least 1; 1 MiB is the other limit)");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(30),
          "on SIGTERM, how long running jobs may finish before they are cancelled");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain: serve gRPC over TLS (with --tls_key); also the client "
          "certificate shown to schedulers");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA certificates: clients must present a certificate signed by them (mutual TLS), "
          "and schedulers' certificates are verified against them");
ABSL_FLAG(llorch::cli::StringList, scheduler, {},
          "a llorch-scheduler to register with and heartbeat to; several: repeat the flag or "
          "separate them with commas");
ABSL_FLAG(std::string, scheduler_token_file, "",
          "file holding a bearer token sent with every registration and heartbeat (for a "
          "scheduler with --auth_tokens_file and no --tls_ca)");
ABSL_FLAG(absl::Duration, heartbeat_interval, absl::Seconds(1),
          "how often to heartbeat each --scheduler (until a scheduler answers with its own "
          "interval)");
ABSL_FLAG(std::string, advertise_address, "",
          "the HOST:PORT schedulers should call (default: ':' and the gRPC port: each scheduler "
          "uses the address the registration came from)");

namespace llorch {
namespace {

constexpr char kVersion[] = "0.1.0";
constexpr char kServiceName[] = "llorch.worker.v1.Worker";

struct ShutdownState {
  std::mutex mu;
  std::condition_variable cv;
  bool serving = false;
  bool requested = false;
};
ShutdownState g_shutdown;

void Log(const std::string& line) { std::cerr << "llorch-worker: " << line << std::endl; }

// --kv_type (auto: from --device and --dtype), its error naming the flag.
absl::StatusOr<KvType> KvTypeFromFlag() {
  LoadOptions options;
  options.device = absl::GetFlag(FLAGS_device);
  if (absl::StatusOr<LoadOptions::Dtype> dtype = ParseDtype(absl::GetFlag(FLAGS_dtype));
      dtype.ok()) {
    options.dtype = *dtype;  // a bad --dtype is reported by MakeLoadOptions
  }
  absl::StatusOr<KvType> kv_type = ParseKvTypeFor(absl::GetFlag(FLAGS_kv_type), options);
  if (!kv_type.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--kv_type: ", kv_type.status().message()));
  }
  return kv_type;
}

// "1GiB", "512MiB", "1000000" -> bytes; "8192tokens" -> positions x bytes per position.
absl::StatusOr<size_t> ParseKvBudget(std::string text, const ModelConfig& config,
                                     KvType kv_type) {
  text = std::string(absl::StripAsciiWhitespace(text));
  uint64_t value = 0;
  std::string number = text;
  uint64_t unit = 1;
  bool tokens = false;
  for (const auto& [suffix, scale] : {std::pair<const char*, uint64_t>{"GiB", 1ull << 30},
                                      {"MiB", 1ull << 20}, {"KiB", 1ull << 10}, {"B", 1}}) {
    if (absl::EndsWith(text, suffix)) {
      number = text.substr(0, text.size() - std::string(suffix).size());
      unit = scale;
      break;
    }
  }
  if (absl::EndsWith(text, "tokens")) {
    number = text.substr(0, text.size() - 6);
    tokens = true;
  }
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(number), &value) || value == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--kv_budget must be a positive size such as 1GiB, 512MiB or 8192tokens, got '", text,
        "'"));
  }
  if (tokens) return KvCache::BytesFor(config, static_cast<int64_t>(value), kv_type);
  return static_cast<size_t>(value * unit);
}

// --scheduler values: each occurrence may hold several, comma-separated.
std::vector<std::string> SchedulerAddresses() {
  std::vector<std::string> addresses;
  for (const std::string& value : absl::GetFlag(FLAGS_scheduler).values) {
    for (absl::string_view part : absl::StrSplit(value, ',')) {
      part = absl::StripAsciiWhitespace(part);
      if (!part.empty()) addresses.emplace_back(part);
    }
  }
  return addresses;
}

// What the flags checked before anything slow give the later steps.
struct StartupOptions {
  std::string model_path;
  std::string served_model_name;
  std::string device;
  TlsFiles tls_files;
  std::shared_ptr<grpc::ServerCredentials> server_credentials;
  std::vector<std::string> schedulers;
  // Set only with --scheduler.
  std::shared_ptr<grpc::ChannelCredentials> scheduler_credentials;
  std::string scheduler_token;  // --scheduler_token_file's
};

// --model, the TLS files and the schedulers: checked before anything slow.
absl::StatusOr<StartupOptions> ParseStartupOptions() {
  StartupOptions options;
  options.model_path = absl::GetFlag(FLAGS_model);
  if (options.model_path.empty()) return absl::InvalidArgumentError("--model is required");
  options.device = absl::GetFlag(FLAGS_device);
  options.served_model_name = absl::GetFlag(FLAGS_served_model_name);
  if (options.served_model_name.empty()) {
    options.served_model_name = DefaultServedModelName(options.model_path);
  }
  options.tls_files = TlsFiles{absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
                               absl::GetFlag(FLAGS_tls_ca)};
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> server_credentials =
      MakeServerCredentials(options.tls_files, ClientCerts::kRequire);
  if (!server_credentials.ok()) return server_credentials.status();
  options.server_credentials = std::move(*server_credentials);
  options.schedulers = SchedulerAddresses();
  if (!options.schedulers.empty()) {
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
        MakeChannelCredentials(options.tls_files);
    if (!credentials.ok()) return credentials.status();
    options.scheduler_credentials = std::move(*credentials);
    if (absl::GetFlag(FLAGS_heartbeat_interval) <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError("--heartbeat_interval must be positive");
    }
  }
  if (const std::string path = absl::GetFlag(FLAGS_scheduler_token_file); !path.empty()) {
    if (options.schedulers.empty()) {
      return absl::InvalidArgumentError("--scheduler_token_file needs --scheduler");
    }
    absl::StatusOr<std::string> token = ReadBearerToken(path);
    if (!token.ok()) {
      return absl::Status(token.status().code(),
                          absl::StrCat("--scheduler_token_file: ", token.status().message()));
    }
    options.scheduler_token = *std::move(token);
  }
  return options;
}

// One thread waits for SIGTERM/SIGINT. Before serving there is nothing to
// drain, so a signal then exits at once.
absl::Status InstallTerminationSignalThread() {
  if (absl::Status s = cli::CatchTerminationSignals(); !s.ok()) return s;
  std::thread([] {
    const int signal_number = cli::WaitForTerminationSignal();
    std::lock_guard<std::mutex> lock(g_shutdown.mu);
    if (!g_shutdown.serving) {
      Log(absl::StrCat("signal ", signal_number, " while starting: exiting"));
      std::_Exit(0);
    }
    Log(absl::StrCat("signal ", signal_number, ": draining"));
    g_shutdown.requested = true;
    g_shutdown.cv.notify_all();
  }).detach();
  return absl::OkStatus();
}

// Serves `registry` on --metrics_host:--metrics_port; null with
// --metrics_port=-1.
absl::StatusOr<std::unique_ptr<metrics::Exposer>> StartMetrics(
    std::shared_ptr<metrics::Registry> registry) {
  return metrics::ServeMetrics(absl::GetFlag(FLAGS_metrics_host), absl::GetFlag(FLAGS_metrics_port),
                               registry, Log);
}

// The model without its weights, and the KV budget it implies.
struct ModelHeader {
  ServedModel model;  // tokenizer and config
  size_t kv_budget_bytes = 0;
};

// The tokenizer and config first (fast), so the metrics labels and the KV
// budget are known; weights follow once the server is listening.
absl::StatusOr<ModelHeader> LoadModelHeader(const std::string& model_path) {
  absl::StatusOr<ServedModel> model = LoadServedModel(model_path, nullptr);
  if (!model.ok()) return model.status();
  if (model->tokenizer == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(model_path, ": no tokenizer in the model directory"));
  }
  // Checked before the weights load, so a bad file fails fast.
  if (const std::string chat_template = absl::GetFlag(FLAGS_chat_template);
      !chat_template.empty()) {
    if (absl::Status s = SetChatTemplateFile(&*model, chat_template); !s.ok()) return s;
  }
  absl::StatusOr<KvType> kv_type = KvTypeFromFlag();
  if (!kv_type.ok()) return kv_type.status();
  absl::StatusOr<size_t> kv_budget =
      ParseKvBudget(absl::GetFlag(FLAGS_kv_budget), model->config, *kv_type);
  if (!kv_budget.ok()) return kv_budget.status();
  return ModelHeader{std::move(*model), *kv_budget};
}

WorkerServiceOptions MakeServiceOptions(const StartupOptions& options, WorkerMetrics* metrics) {
  WorkerServiceOptions service_options;
  service_options.metrics = metrics;
  service_options.model_path = options.model_path;
  service_options.device = options.device;
  service_options.worker_id = absl::GetFlag(FLAGS_worker_id);
  service_options.served_model_name = options.served_model_name;
  service_options.max_stream_buffer_events =
      static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_max_stream_buffer_events)));
  return service_options;
}

struct GrpcServer {
  std::unique_ptr<grpc::Server> server;
  int port = 0;
};

// Listens on --listen with health NOT_SERVING (the model is not loaded yet),
// reflection on, and the worker id defaulted to host:port.
absl::StatusOr<GrpcServer> StartGrpcServer(const StartupOptions& options,
                                           WorkerService* service) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  const std::string listen = absl::GetFlag(FLAGS_listen);
  GrpcServer grpc_server;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen, options.server_credentials, &grpc_server.port);
  builder.RegisterService(service);
  grpc_server.server = builder.BuildAndStart();
  if (grpc_server.server == nullptr || grpc_server.port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", listen));
  }
  grpc::HealthCheckServiceInterface* health = grpc_server.server->GetHealthCheckService();
  health->SetServingStatus(false);
  health->SetServingStatus(kServiceName, false);
  Log(absl::StrCat("grpc listening on port ", grpc_server.port, " (",
                   DescribeServerTls(options.tls_files, ClientCerts::kRequire), ")"));
  if (absl::GetFlag(FLAGS_worker_id).empty()) {
    char host[256] = {0};
    gethostname(host, sizeof(host) - 1);
    // The service holds its own copy.
    service->SetWorkerId(absl::StrCat(host, ":", grpc_server.port));
  }
  return grpc_server;
}

// --device, --dtype, --cuda_graphs, --cuda_kernels, --ggml_variant, --kv_type and --mmap as LoadOptions.
absl::StatusOr<LoadOptions> MakeLoadOptions(const std::string& device) {
  LoadOptions load_options;
  load_options.device = device;
  absl::StatusOr<KvType> kv_type = KvTypeFromFlag();
  if (!kv_type.ok()) return kv_type.status();
  load_options.kv_type = *kv_type;
  absl::StatusOr<LoadOptions::Dtype> dtype = ParseDtype(absl::GetFlag(FLAGS_dtype));
  if (!dtype.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--dtype: ", dtype.status().message()));
  }
  load_options.dtype = *dtype;
  load_options.cuda_graphs = absl::GetFlag(FLAGS_cuda_graphs);
  load_options.cuda_kernels = absl::GetFlag(FLAGS_cuda_kernels);
  load_options.map_weights = absl::GetFlag(FLAGS_mmap);
  if (const std::string variant = absl::GetFlag(FLAGS_ggml_variant); variant != "auto") {
    absl::StatusOr<GgmlVariant> parsed = ParseGgmlVariant(variant);
    if (!parsed.ok()) {
      return absl::Status(parsed.status().code(),
                          absl::StrCat("--ggml_variant: ", parsed.status().message()));
    }
    load_options.ggml_variant = *parsed;
  }
  return load_options;
}

// The weights, with --chat_template, run once on a throwaway job so that the
// first request does not pay for lazy initialisation.
absl::StatusOr<ServedModel> LoadAndWarmUpModel(const StartupOptions& options,
                                               WorkerMetrics* metrics) {
  int threads = absl::GetFlag(FLAGS_threads);
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
  absl::StatusOr<LoadOptions> load_options = MakeLoadOptions(options.device);
  if (!load_options.ok()) return load_options.status();
  absl::StatusOr<ServedModel> served = LoadServedModel(options.model_path, &*load_options);
  if (!served.ok()) return served.status();
  const std::string chat_template = absl::GetFlag(FLAGS_chat_template);
  if (!chat_template.empty()) {
    if (absl::Status s = SetChatTemplateFile(&*served, chat_template); !s.ok()) return s;
  }
  Log(served->chat_template.has_value()
          ? absl::StrCat("chat template: ", chat_template.empty() ? "the model's own" : chat_template)
          : absl::StrCat("no chat template: ", served->chat_template_status.message()));
  metrics->SetModelLoadSeconds(served->load_seconds);
  const LlamaModel& model = *served->model;
  Log(absl::StrCat(
      "loaded ", options.served_model_name, " (", served->config.architecture, ", ",
      served->weight_type, ") on ", options.device, " in ", served->load_seconds, " s, ",
      model.cpu_kernels()
          ? absl::StrCat("float order of ggml's ", GgmlVariantName(model.ggml_variant()),
                         " CPU library, kernels up to ", CpuIsaName(CpuKernelIsa()))
          : absl::StrCat("libtorch's products in ", c10::toString(model.dtype()),
                         model.cuda_graphs() ? ", decode steps as CUDA graphs" : "",
                         model.cuda_kernels() ? ", llorch's CUDA kernels" : "")));
  if (absl::Status s = WarmUp(*served->model); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("warm-up failed: ", s.message()));
  }
  return served;
}

// The continuous-batching engine over `served`, reporting each step to
// `metrics`.
absl::StatusOr<std::unique_ptr<Engine>> StartEngine(const ServedModel& served,
                                                    size_t kv_budget_bytes,
                                                    WorkerMetrics* metrics) {
  EngineOptions engine_options;
  engine_options.kv_budget_bytes = kv_budget_bytes;
  engine_options.max_running = absl::GetFlag(FLAGS_max_batch);
  engine_options.max_waiting = absl::GetFlag(FLAGS_max_waiting);
  engine_options.max_prefill_tokens_per_step = absl::GetFlag(FLAGS_max_prefill_tokens);
  engine_options.kv_block_size = absl::GetFlag(FLAGS_kv_block_size);
  engine_options.prefix_cache = absl::GetFlag(FLAGS_prefix_cache);
  engine_options.cache_answers = absl::GetFlag(FLAGS_cache_answers);
  const std::string admission = absl::GetFlag(FLAGS_kv_admission);
  if (admission != "paged" && admission != "reserve") {
    return absl::InvalidArgumentError(
        absl::StrCat("--kv_admission must be paged or reserve, got '", admission, "'"));
  }
  engine_options.reserve_whole_jobs = admission == "reserve";
  if (engine_options.max_running < 1 || engine_options.max_waiting < 0 ||
      engine_options.max_prefill_tokens_per_step < 1) {
    return absl::InvalidArgumentError(
        "--max_batch and --max_prefill_tokens must be at least 1, --max_waiting at least 0");
  }
  if (engine_options.kv_block_size < 4 || engine_options.kv_block_size > 1024 ||
      engine_options.kv_block_size % 4 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--kv_block_size must be a multiple of 4 in [4, 1024], got ",
        engine_options.kv_block_size));
  }
  const size_t block_bytes = KvPool::BytesPerBlock(
      served.model->config(), engine_options.kv_block_size, served.model->kv_type());
  if (kv_budget_bytes < block_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--kv_budget of ", kv_budget_bytes, " bytes holds no KV block of ",
        engine_options.kv_block_size, " positions (", block_bytes, " bytes)"));
  }
  engine_options.on_step = [metrics](int32_t batch_size, const EngineStats& stats) {
    metrics->OnEngineStep(batch_size, stats);
  };
  auto engine = std::make_unique<Engine>(served.model.get(), served.tokenizer.get(),
                                         engine_options);
  metrics->OnEngineStep(0, engine->Stats());
  return engine;
}

// Attaches the model and engine to the service and turns health SERVING.
void StartServing(const ServedModel& served, Engine* engine, size_t kv_budget_bytes,
                  WorkerService* service, grpc::Server* server, WorkerMetrics* metrics) {
  service->Attach(engine, &served);
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus(true);
  health->SetServingStatus(kServiceName, true);
  metrics->SetServing(true);
  Log(absl::StrCat("serving (kv budget ", kv_budget_bytes, " bytes, max batch ",
                   engine->options().max_running, ")"));
}

// Registers with --scheduler and heartbeats until Stop; null without one.
std::unique_ptr<SchedulerRegistration> StartRegistration(const StartupOptions& options,
                                                         int port) {
  if (options.schedulers.empty()) return nullptr;
  SchedulerRegistrationOptions registration_options;
  registration_options.schedulers = options.schedulers;
  registration_options.advertise_address = absl::GetFlag(FLAGS_advertise_address);
  if (registration_options.advertise_address.empty()) {
    registration_options.advertise_address = absl::StrCat(":", port);
  }
  registration_options.model = options.served_model_name;
  registration_options.heartbeat_interval = absl::GetFlag(FLAGS_heartbeat_interval);
  registration_options.credentials = options.scheduler_credentials;
  registration_options.token = options.scheduler_token;
  registration_options.log = Log;
  Log(absl::StrCat("registering with ", absl::StrJoin(options.schedulers, ", "), " as ",
                   registration_options.advertise_address, " every ",
                   absl::FormatDuration(registration_options.heartbeat_interval),
                   options.tls_files.ca.empty() ? " (plaintext: no --tls_ca)" : " (tls)",
                   options.scheduler_token.empty() ? "" : " with a bearer token"));
  auto registration = std::make_unique<SchedulerRegistration>(std::move(registration_options));
  registration->Start();
  return registration;
}

// From here on a termination signal drains instead of exiting.
void ServeUntilShutdownRequested() {
  std::unique_lock<std::mutex> lock(g_shutdown.mu);
  g_shutdown.serving = true;
  g_shutdown.cv.wait(lock, [] { return g_shutdown.requested; });
}

// Unhealthy first so balancers stop sending, then refuse new jobs, let
// running ones finish, cancel what is left at --drain_timeout. Heartbeats go
// on until the end: schedulers see Info.draining.
void Drain(WorkerService* service, WorkerMetrics* metrics, std::unique_ptr<Engine> engine,
           std::unique_ptr<grpc::Server> server, SchedulerRegistration* registration) {
  service->SetDraining();
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus(false);
  health->SetServingStatus(kServiceName, false);
  metrics->SetServing(false);
  engine->StopAccepting();
  const auto drain_deadline = std::chrono::steady_clock::now() +
                              absl::ToChronoMilliseconds(absl::GetFlag(FLAGS_drain_timeout));
  auto idle = [&engine] {
    const EngineStats stats = engine->Stats();
    return stats.running == 0 && stats.waiting == 0;
  };
  while (!idle() && std::chrono::steady_clock::now() < drain_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!idle()) {
    const EngineStats stats = engine->Stats();
    Log(absl::StrCat("drain timeout: cancelling ", stats.running + stats.waiting, " jobs"));
  }
  // Streams of cancelled jobs end with Finished{CANCELLED}; give them a
  // moment to be written before the server cancels what remains.
  engine->CancelAll();
  if (registration != nullptr) registration->Stop();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  engine.reset();
  server.reset();
  Log("drained, exiting");
}

// A step that fails is logged and exits 2. Locals are declared in the order
// that makes the server go before the service, metrics and registry it uses.
int Run() {
  absl::StatusOr<StartupOptions> options = ParseStartupOptions();
  if (!options.ok()) {
    Log(std::string(options.status().message()));
    return 2;
  }
  if (absl::Status s = InstallTerminationSignalThread(); !s.ok()) {
    Log(std::string(s.message()));
    return 2;
  }
  auto registry = std::make_shared<metrics::Registry>();
  absl::StatusOr<std::unique_ptr<metrics::Exposer>> exposer = StartMetrics(registry);
  if (!exposer.ok()) {
    Log(absl::StrCat("metrics: ", exposer.status().message()));
    return 2;
  }
  absl::StatusOr<ModelHeader> header = LoadModelHeader(options->model_path);
  if (!header.ok()) {
    Log(std::string(header.status().message()));
    return 2;
  }
  WorkerMetrics worker_metrics(
      *registry, WorkerBuildInfo{kVersion, options->served_model_name,
                                 header->model.config.architecture, header->model.weight_type,
                                 options->device});
  worker_metrics.SetServing(false);
  WorkerService service(MakeServiceOptions(*options, &worker_metrics));
  absl::StatusOr<GrpcServer> grpc_server = StartGrpcServer(*options, &service);
  if (!grpc_server.ok()) {
    Log(std::string(grpc_server.status().message()));
    return 2;
  }
  // On a thread that ends: libgomp keeps an OpenMP team for every thread
  // that has run a parallel region until that thread exits, and once it
  // manages more threads than there are CPUs it stops spinning at barriers
  // (its "throttled" spin). With the loader's team alive beside the engine
  // thread's, every parallel region of a decode step slept and woke through
  // futexes: one stream 31 tok/s instead of 78-134 on 2 cores.
  absl::StatusOr<ServedModel> served = absl::InternalError("model not loaded");
  std::thread([&] { served = LoadAndWarmUpModel(*options, &worker_metrics); }).join();
  if (!served.ok()) {
    Log(std::string(served.status().message()));
    return 2;
  }
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      StartEngine(*served, header->kv_budget_bytes, &worker_metrics);
  if (!engine.ok()) {
    Log(std::string(engine.status().message()));
    return 2;
  }
  StartServing(*served, engine->get(), header->kv_budget_bytes, &service,
               grpc_server->server.get(), &worker_metrics);
  std::unique_ptr<SchedulerRegistration> registration =
      StartRegistration(*options, grpc_server->port);

  ServeUntilShutdownRequested();
  Drain(&service, &worker_metrics, std::move(*engine), std::move(grpc_server->server),
        registration.get());
  return 0;
}

// The worker's own flags (none of its libraries'), numbers range-checked;
// written with underscores as documented, --a-b works as --a_b.
cli::CommandSpec CommandLine() {
  cli::CommandSpec command;
  command.program = "llorch-worker";
  command.summary =
      "Serves one model over gRPC (llorch.worker.v1.Worker, health, reflection) with "
      "continuous batching, and Prometheus metrics over HTTP.";
  command.usage = "llorch-worker --model PATH [--listen HOST:PORT] [--scheduler HOST:PORT] [flags]";
  command.spelling = cli::Spelling::kUnderscores;
  command.flags = cli::FlagsOf(
      "worker/server/worker_main.cc",
      {cli::FlagSpec("model").Value("PATH"), cli::FlagSpec("served_model_name").Value("NAME"),
       cli::FlagSpec("listen").Value("HOST:PORT"),
       cli::FlagSpec("metrics_port").AtLeast(-1).AtMost(65535),
       cli::FlagSpec("metrics_host").Value("HOST"), cli::FlagSpec("kv_budget").Value("SIZE"),
       cli::FlagSpec("kv_type").Value("auto|f32|f16|bf16|q8_0"),
       cli::FlagSpec("kv_block_size").AtLeast(4).AtMost(1024), "prefix_cache", "cache_answers",
       cli::FlagSpec("kv_admission").Value("paged|reserve"),
       cli::FlagSpec("max_batch").AtLeast(1), cli::FlagSpec("max_waiting").AtLeast(0),
       cli::FlagSpec("max_prefill_tokens").AtLeast(1), cli::FlagSpec("threads").AtLeast(0),
       "device", cli::FlagSpec("dtype").Value("auto|f32|f16|bf16"), "cuda_graphs", "cuda_kernels", "ggml_variant", "mmap", cli::FlagSpec("chat_template").Value("PATH"), "worker_id",
       cli::FlagSpec("drain_timeout").Value("DURATION"),
       cli::FlagSpec("tls_cert").Value("PATH"), cli::FlagSpec("tls_key").Value("PATH"),
       cli::FlagSpec("tls_ca").Value("PATH"), cli::FlagSpec("scheduler").Value("HOST:PORT"),
       cli::FlagSpec("scheduler_token_file").Value("PATH"),
       cli::FlagSpec("heartbeat_interval").Value("DURATION"),
       cli::FlagSpec("advertise_address").Value("HOST:PORT")});
  return command;
}

}  // namespace
}  // namespace llorch

int main(int argc, char** argv) {
  // Before any thread starts: the libraries' startup pages, ~100 MiB.
  (void)llorch::memory::ReleaseLibraryPages();
  // A step's activations stay in the heap between ops instead of faulting in
  // anew (heap_reuse.h); advice only, as the pages above.
  (void)llorch::memory::KeepLargeBlocksInHeap();
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (int code = llorch::cli::ParseFlagsForMain(llorch::CommandLine(), args); code >= 0) {
    return code;
  }
  return llorch::Run();
}
