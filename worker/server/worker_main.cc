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
#include "common/grpc/tls.h"
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
ABSL_FLAG(int, max_batch, 16, "jobs decoded together");
ABSL_FLAG(int, max_waiting, 256, "jobs queued for admission before RESOURCE_EXHAUSTED");
ABSL_FLAG(int, max_prefill_tokens, 512, "prompt tokens prefilled per engine step");
ABSL_FLAG(int, threads, 0, "CPU threads for the model (0: all cores)");
ABSL_FLAG(std::string, device, "cpu", "cpu | cuda | mps");
ABSL_FLAG(std::string, ggml_variant, "auto",
          "whose float order the CPU path follows: auto (LLORCH_GGML_VARIANT, else what "
          "llama.cpp's ggml picks on this CPU) | avx2 | avx512");
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

// "1GiB", "512MiB", "1000000" -> bytes; "8192tokens" -> positions x bytes per position.
absl::StatusOr<size_t> ParseKvBudget(std::string text, const ModelConfig& config) {
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
  if (tokens) return KvCache::BytesFor(config, static_cast<int64_t>(value));
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

int g_signal_pipe[2] = {-1, -1};

void OnTerminationSignal(int signal_number) {
  const unsigned char byte = static_cast<unsigned char>(signal_number);
  const ssize_t written = write(g_signal_pipe[1], &byte, 1);
  (void)written;
}

int Run() {
  const std::string model_path = absl::GetFlag(FLAGS_model);
  if (model_path.empty()) {
    Log("--model is required");
    return 2;
  }
  const std::string device = absl::GetFlag(FLAGS_device);
  std::string served_model_name = absl::GetFlag(FLAGS_served_model_name);
  if (served_model_name.empty()) served_model_name = DefaultServedModelName(model_path);

  // TLS files and schedulers are checked before anything slow.
  const TlsFiles tls_files{absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
                           absl::GetFlag(FLAGS_tls_ca)};
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> server_credentials =
      MakeServerCredentials(tls_files, ClientCerts::kRequire);
  if (!server_credentials.ok()) {
    Log(std::string(server_credentials.status().message()));
    return 2;
  }
  const std::vector<std::string> schedulers = SchedulerAddresses();
  std::shared_ptr<grpc::ChannelCredentials> scheduler_credentials;
  if (!schedulers.empty()) {
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
        MakeChannelCredentials(tls_files);
    if (!credentials.ok()) {
      Log(std::string(credentials.status().message()));
      return 2;
    }
    scheduler_credentials = std::move(*credentials);
    if (absl::GetFlag(FLAGS_heartbeat_interval) <= absl::ZeroDuration()) {
      Log("--heartbeat_interval must be positive");
      return 2;
    }
  }

  // SIGTERM/SIGINT are turned into bytes on a pipe by an async-signal-safe
  // handler (libraries start threads before main, so blocking the signals
  // in one thread cannot route them); one thread reads the pipe. Before
  // serving there is nothing to drain, so a signal then exits at once.
  if (pipe(g_signal_pipe) != 0) {
    Log("cannot create the signal pipe");
    return 2;
  }
  struct sigaction action = {};
  action.sa_handler = OnTerminationSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  std::thread([] {
    unsigned char signal_number = 0;
    while (read(g_signal_pipe[0], &signal_number, 1) != 1) {
    }
    std::lock_guard<std::mutex> lock(g_shutdown.mu);
    if (!g_shutdown.serving) {
      Log(absl::StrCat("signal ", signal_number, " while starting: exiting"));
      std::_Exit(0);
    }
    Log(absl::StrCat("signal ", signal_number, ": draining"));
    g_shutdown.requested = true;
    g_shutdown.cv.notify_all();
  }).detach();

  auto registry = std::make_shared<metrics::Registry>();
  std::unique_ptr<metrics::Exposer> exposer;
  const int metrics_port = absl::GetFlag(FLAGS_metrics_port);
  if (metrics_port >= 0) {
    const std::string host = absl::GetFlag(FLAGS_metrics_host);
    const std::string address = absl::StrCat(host.find(':') != std::string::npos ? "[" : "",
                                              host, host.find(':') != std::string::npos ? "]" : "",
                                              ":", metrics_port);
    absl::StatusOr<std::unique_ptr<metrics::Exposer>> created = metrics::Exposer::Create(address);
    if (!created.ok()) {
      Log(absl::StrCat("metrics: ", created.status().message()));
      return 2;
    }
    exposer = std::move(*created);
    exposer->RegisterCollectable(registry);
    const int port = exposer->GetListeningPorts()[0];
    Log(absl::StrCat("metrics listening on port ", port, " (http://", host, ":", port,
                     "/metrics)"));
  }

  // The tokenizer and config first (fast), so the metrics labels and the KV
  // budget are known; weights follow once the server is listening.
  absl::StatusOr<ServedModel> header = LoadServedModel(model_path, nullptr);
  if (!header.ok()) {
    Log(std::string(header.status().message()));
    return 2;
  }
  if (header->tokenizer == nullptr) {
    Log(absl::StrCat(model_path, ": no tokenizer in the model directory"));
    return 2;
  }
  const std::string chat_template = absl::GetFlag(FLAGS_chat_template);
  if (!chat_template.empty()) {
    // Checked before the weights load, so a bad file fails fast.
    if (absl::Status s = SetChatTemplateFile(&*header, chat_template); !s.ok()) {
      Log(std::string(s.message()));
      return 2;
    }
  }
  absl::StatusOr<size_t> kv_budget = ParseKvBudget(absl::GetFlag(FLAGS_kv_budget), header->config);
  if (!kv_budget.ok()) {
    Log(std::string(kv_budget.status().message()));
    return 2;
  }
  WorkerMetrics worker_metrics(*registry, WorkerBuildInfo{kVersion, served_model_name,
                                                          header->config.architecture,
                                                          header->weight_type, device});
  worker_metrics.SetServing(false);

  const std::string listen = absl::GetFlag(FLAGS_listen);
  WorkerServiceOptions service_options;
  service_options.metrics = &worker_metrics;
  service_options.model_path = model_path;
  service_options.device = device;
  service_options.worker_id = absl::GetFlag(FLAGS_worker_id);
  service_options.served_model_name = served_model_name;
  service_options.max_stream_buffer_events =
      static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_max_stream_buffer_events)));
  WorkerService service(service_options);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, *server_credentials, &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    Log(absl::StrCat("cannot listen on ", listen));
    return 2;
  }
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus(false);
  health->SetServingStatus(kServiceName, false);
  Log(absl::StrCat("grpc listening on port ", port, " (",
                   DescribeServerTls(tls_files, ClientCerts::kRequire), ")"));
  if (service_options.worker_id.empty()) {
    char host[256] = {0};
    gethostname(host, sizeof(host) - 1);
    service.SetWorkerId(absl::StrCat(host, ":", port));  // the service holds its own copy
  }

  int threads = absl::GetFlag(FLAGS_threads);
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
  LoadOptions load_options;
  load_options.device = device;
  if (const std::string variant = absl::GetFlag(FLAGS_ggml_variant); variant != "auto") {
    absl::StatusOr<GgmlVariant> parsed = ParseGgmlVariant(variant);
    if (!parsed.ok()) {
      Log(absl::StrCat("--ggml_variant: ", parsed.status().message()));
      return 2;
    }
    load_options.ggml_variant = *parsed;
  }
  absl::StatusOr<ServedModel> served = LoadServedModel(model_path, &load_options);
  if (!served.ok()) {
    Log(std::string(served.status().message()));
    return 2;
  }
  if (!chat_template.empty()) {
    if (absl::Status s = SetChatTemplateFile(&*served, chat_template); !s.ok()) {
      Log(std::string(s.message()));
      return 2;
    }
  }
  Log(served->chat_template.has_value()
          ? absl::StrCat("chat template: ", chat_template.empty() ? "the model's own" : chat_template)
          : absl::StrCat("no chat template: ", served->chat_template_status.message()));
  worker_metrics.SetModelLoadSeconds(served->load_seconds);
  Log(absl::StrCat("loaded ", served_model_name, " (", served->config.architecture, ", ",
                   served->weight_type, ") on ", device, " in ", served->load_seconds,
                   " s, float order of ggml's ", GgmlVariantName(served->model->ggml_variant()),
                   " CPU library"));
  if (absl::Status s = WarmUp(*served->model); !s.ok()) {
    Log(absl::StrCat("warm-up failed: ", s.message()));
    return 2;
  }

  EngineOptions engine_options;
  engine_options.kv_budget_bytes = *kv_budget;
  engine_options.max_running = absl::GetFlag(FLAGS_max_batch);
  engine_options.max_waiting = absl::GetFlag(FLAGS_max_waiting);
  engine_options.max_prefill_tokens_per_step = absl::GetFlag(FLAGS_max_prefill_tokens);
  if (engine_options.max_running < 1 || engine_options.max_waiting < 0 ||
      engine_options.max_prefill_tokens_per_step < 1) {
    Log("--max_batch and --max_prefill_tokens must be at least 1, --max_waiting at least 0");
    return 2;
  }
  engine_options.on_step = [&worker_metrics](int32_t batch_size, const EngineStats& stats) {
    worker_metrics.OnEngineStep(batch_size, stats);
  };
  auto engine = std::make_unique<Engine>(served->model.get(), served->tokenizer.get(),
                                         engine_options);
  worker_metrics.OnEngineStep(0, engine->Stats());

  service.Attach(engine.get(), &*served);
  health->SetServingStatus(true);
  health->SetServingStatus(kServiceName, true);
  worker_metrics.SetServing(true);
  Log(absl::StrCat("serving (kv budget ", *kv_budget, " bytes, max batch ",
                   engine_options.max_running, ")"));

  std::unique_ptr<SchedulerRegistration> registration;
  if (!schedulers.empty()) {
    SchedulerRegistrationOptions registration_options;
    registration_options.schedulers = schedulers;
    registration_options.advertise_address = absl::GetFlag(FLAGS_advertise_address);
    if (registration_options.advertise_address.empty()) {
      registration_options.advertise_address = absl::StrCat(":", port);
    }
    registration_options.model = served_model_name;
    registration_options.heartbeat_interval = absl::GetFlag(FLAGS_heartbeat_interval);
    registration_options.credentials = scheduler_credentials;
    registration_options.log = Log;
    Log(absl::StrCat("registering with ", absl::StrJoin(schedulers, ", "), " as ",
                     registration_options.advertise_address, " every ",
                     absl::FormatDuration(registration_options.heartbeat_interval),
                     tls_files.ca.empty() ? " (plaintext: no --tls_ca)" : " (tls)"));
    registration = std::make_unique<SchedulerRegistration>(std::move(registration_options));
    registration->Start();
  }

  {
    std::unique_lock<std::mutex> lock(g_shutdown.mu);
    g_shutdown.serving = true;
    g_shutdown.cv.wait(lock, [] { return g_shutdown.requested; });
  }

  // Drain: unhealthy first so balancers stop sending, then refuse new jobs,
  // let running ones finish, cancel what is left at the timeout. Heartbeats
  // go on: schedulers see Info.draining.
  service.SetDraining();
  health->SetServingStatus(false);
  health->SetServingStatus(kServiceName, false);
  worker_metrics.SetServing(false);
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
       cli::FlagSpec("max_batch").AtLeast(1), cli::FlagSpec("max_waiting").AtLeast(0),
       cli::FlagSpec("max_prefill_tokens").AtLeast(1), cli::FlagSpec("threads").AtLeast(0),
       "device", "ggml_variant", cli::FlagSpec("chat_template").Value("PATH"), "worker_id",
       cli::FlagSpec("drain_timeout").Value("DURATION"),
       cli::FlagSpec("tls_cert").Value("PATH"), cli::FlagSpec("tls_key").Value("PATH"),
       cli::FlagSpec("tls_ca").Value("PATH"), cli::FlagSpec("scheduler").Value("HOST:PORT"),
       cli::FlagSpec("heartbeat_interval").Value("DURATION"),
       cli::FlagSpec("advertise_address").Value("HOST:PORT")});
  return command;
}

}  // namespace
}  // namespace llorch

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (int code = llorch::cli::ParseFlagsForMain(llorch::CommandLine(), args); code >= 0) {
    return code;
  }
  return llorch::Run();
}
