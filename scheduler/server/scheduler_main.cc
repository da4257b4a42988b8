// llorch-scheduler: the public front door (llorch.v1.Scheduler over gRPC,
// grpc.health.v1, server reflection, Prometheus metrics over HTTP). It owns
// no model: it admits Generate calls, queues them per model, places them on
// workers (--workers, DNS names re-resolved, and workers that register with
// `llorch-worker --scheduler`), relays their streams and retries a job whose
// worker dies before its first token. With --http_listen it also serves an
// OpenAI-compatible HTTP API that translates onto its own gRPC API
// (services/openai). On SIGTERM/SIGINT: NOT_SERVING, then running streams get
// --drain_timeout to finish, then exit 0.
#include <chrono>
#include <future>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "common/cli/flags.h"
#include "common/cli/termination_signals.h"
#include "common/grpc/bearer_tokens.h"
#include "common/grpc/tls.h"
#include "common/metrics/exposer.h"
#include "scheduler/scheduler_core.h"
#include "services/openai/http_server.h"
#include "services/scheduler/scheduler_metrics.h"
#include "services/scheduler/scheduler_service.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:50051", "gRPC address host:port (port 0 picks one)");
ABSL_FLAG(std::string, workers, "",
          "workers as HOST:PORT,...; a name that resolves to several addresses (a Kubernetes "
          "headless Service) adds each and is re-resolved every --dns_refresh");
ABSL_FLAG(int, metrics_port, 9465, "HTTP port for /metrics (0 picks one, -1 turns it off)");
ABSL_FLAG(std::string, metrics_host, "0.0.0.0", "address /metrics binds to");
ABSL_FLAG(int, max_queue, 256,
          "jobs of one model waiting for a worker before RESOURCE_EXHAUSTED");
ABSL_FLAG(absl::Duration, max_queue_wait, absl::Seconds(60),
          "how long a job may wait for a worker before RESOURCE_EXHAUSTED");
ABSL_FLAG(int, max_jobs_per_worker, 0,
          "jobs the scheduler runs on one worker at once (0: the worker's --max_batch)");
ABSL_FLAG(std::string, placement, "cache_aware",
          "how a job's worker is chosen: cache_aware (the worker holding most of the prompt in "
          "its prefix cache, asked through MatchPrefix, unless its load is too far above the "
          "least loaded one's) or least_loaded");
ABSL_FLAG(int, placement_max_imbalance, 4,
          "cache_aware: a worker holding more of the prompt may have at most this many more "
          "jobs than the least loaded one");
ABSL_FLAG(absl::Duration, prefix_probe_timeout, absl::Milliseconds(200),
          "cache_aware: how long a new job waits for the workers' MatchPrefix answers");
ABSL_FLAG(int, max_retries, 2,
          "other workers a job may move to when its worker fails before the first token");
ABSL_FLAG(absl::Duration, probe_interval, absl::Milliseconds(500),
          "how often every worker's Info is asked (load and liveness)");
ABSL_FLAG(absl::Duration, probe_timeout, absl::Seconds(1),
          "a worker that does not answer a probe this long is down");
ABSL_FLAG(absl::Duration, dns_refresh, absl::Seconds(5), "how often --workers names are resolved");
ABSL_FLAG(absl::Duration, heartbeat_interval, absl::Seconds(1),
          "how often registered workers are told to heartbeat");
ABSL_FLAG(absl::Duration, registration_ttl, absl::Seconds(60),
          "a registered worker silent this long (no heartbeat, probes failing) is forgotten");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate of the public port (TLS on with --tls_key)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA for mutual TLS with workers: workers must chain to it, and the scheduler "
          "presents --tls_cert/--tls_key to them (and registering workers present theirs)");
ABSL_FLAG(std::string, auth_tokens_file, "",
          "file of bearer tokens (one per line): clients must send `authorization: Bearer "
          "TOKEN` (health and reflection need none)");
ABSL_FLAG(int, max_stream_buffer_events, 64,
          "events of one stream read from its worker ahead of the client: beyond, the "
          "worker's stream waits (a client that stops reading is then cut off by the "
          "worker's own limit)");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(30),
          "on SIGTERM, how long running streams may finish before they are cancelled");
ABSL_FLAG(std::string, http_listen, "",
          "OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, /v1/models, "
          "/health) on HOST:PORT (port 0 picks one); empty: off. TLS and bearer tokens as the "
          "gRPC port's");
ABSL_FLAG(llorch::cli::StringList, http_cors_origins, {},
          "origins whose browser pages may call the HTTP API from another origin (CORS), "
          "e.g. https://app.example.com; '*' for any; empty: same origin only");
ABSL_FLAG(int, http_threads, 64,
          "HTTP requests served at once (a streaming answer holds one thread)");

namespace llorch {
namespace {

constexpr char kVersion[] = "0.1.0";
constexpr char kServiceName[] = "llorch.v1.Scheduler";

void Log(const std::string& line) { std::cerr << "llorch-scheduler: " << line << std::endl; }

std::chrono::steady_clock::duration ToChrono(absl::Duration d) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      absl::ToChronoNanoseconds(d));
}

absl::StatusOr<std::unique_ptr<metrics::Exposer>> StartMetrics(
    std::shared_ptr<metrics::Registry> registry) {
  return metrics::ServeMetrics(absl::GetFlag(FLAGS_metrics_host), absl::GetFlag(FLAGS_metrics_port),
                               registry, Log);
}

// --workers: "a:1,b:2" -> entries, each HOST:PORT.
absl::StatusOr<std::vector<std::string>> WorkerEntries() {
  std::vector<std::string> entries;
  for (absl::string_view part :
       absl::StrSplit(absl::GetFlag(FLAGS_workers), ',', absl::SkipWhitespace())) {
    const std::string entry(absl::StripAsciiWhitespace(part));
    const size_t colon = entry.rfind(':');
    int port = 0;
    if (colon == std::string::npos || colon == 0 ||
        !absl::SimpleAtoi(entry.substr(colon + 1), &port) || port <= 0 || port > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat("--workers: '", entry, "' is not HOST:PORT"));
    }
    entries.push_back(entry);
  }
  return entries;
}

// Channels to workers: mutual TLS with --tls_ca, reconnecting quickly after
// a worker restarts (gRPC's default backoff grows to two minutes).
std::function<std::shared_ptr<scheduler::WorkerStub>(const std::string&, const std::string&)>
StubMaker(std::shared_ptr<grpc::ChannelCredentials> credentials) {
  return [credentials](const std::string& address, const std::string& tls_name) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    args.SetInt(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, -1);
    // A stream's receive window stays 64 KiB (gRPC's bandwidth-delay probe
    // would grow it to megabytes): when the scheduler stops reading a stream
    // whose client stopped reading, at most this much waits here and the
    // worker's writes stall, so its --max_stream_buffer_events cuts the job.
    // Tokens are a few KiB/s; 64 KiB in flight is ample even over a WAN.
    args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 64 << 10);
    // A worker found through a DNS name is called by IP; its certificate
    // names the DNS name.
    if (!tls_name.empty()) args.SetSslTargetNameOverride(tls_name);
    std::shared_ptr<grpc::Channel> channel =
        grpc::CreateCustomChannel(address, credentials, args);
    return std::shared_ptr<scheduler::WorkerStub>(worker::v1::Worker::NewStub(channel));
  };
}

absl::StatusOr<scheduler::CoreOptions> CoreOptionsFromFlags() {
  scheduler::CoreOptions options;
  options.max_queue = static_cast<size_t>(absl::GetFlag(FLAGS_max_queue));
  options.max_queue_wait = ToChrono(absl::GetFlag(FLAGS_max_queue_wait));
  options.placement.max_jobs_per_worker = absl::GetFlag(FLAGS_max_jobs_per_worker);
  const std::string placement = absl::GetFlag(FLAGS_placement);
  if (placement == "cache_aware") {
    options.placement.policy = scheduler::PlacementPolicy::kCacheAware;
  } else if (placement == "least_loaded") {
    options.placement.policy = scheduler::PlacementPolicy::kLeastLoaded;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--placement must be cache_aware or least_loaded, got '", placement, "'"));
  }
  options.placement.max_load_imbalance = absl::GetFlag(FLAGS_placement_max_imbalance);
  options.prefix_probe_timeout = ToChrono(absl::GetFlag(FLAGS_prefix_probe_timeout));
  options.max_retries = absl::GetFlag(FLAGS_max_retries);
  options.probe_interval = ToChrono(absl::GetFlag(FLAGS_probe_interval));
  options.probe_timeout = ToChrono(absl::GetFlag(FLAGS_probe_timeout));
  options.dns_refresh = ToChrono(absl::GetFlag(FLAGS_dns_refresh));
  options.heartbeat_interval = ToChrono(absl::GetFlag(FLAGS_heartbeat_interval));
  options.registration_ttl = ToChrono(absl::GetFlag(FLAGS_registration_ttl));
  for (auto [name, value] : {std::pair<const char*, std::chrono::steady_clock::duration>{
                                 "--probe_interval", options.probe_interval},
                             {"--probe_timeout", options.probe_timeout},
                             {"--prefix_probe_timeout", options.prefix_probe_timeout},
                             {"--dns_refresh", options.dns_refresh},
                             {"--heartbeat_interval", options.heartbeat_interval}}) {
    if (value <= std::chrono::steady_clock::duration::zero()) {
      return absl::InvalidArgumentError(absl::StrCat(name, " must be positive"));
    }
  }
  TlsFiles worker_tls{absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
                      absl::GetFlag(FLAGS_tls_ca)};
  if (worker_tls.ca.empty()) {
    worker_tls = TlsFiles{};  // plaintext to workers
  } else if (worker_tls.cert.empty() || worker_tls.key.empty()) {
    return absl::InvalidArgumentError(
        "--tls_ca (mutual TLS with workers) needs --tls_cert and --tls_key: the scheduler's "
        "certificate, shown to clients and to workers");
  }
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      MakeChannelCredentials(worker_tls);
  if (!credentials.ok()) return credentials.status();
  options.make_stub = StubMaker(*credentials);
  return options;
}

// Waits for SIGTERM/SIGINT, then drains: NOT_SERVING first so balancers
// stop sending, then the server stops taking calls and waits for running
// streams until --drain_timeout.
void ServeUntilSignal(grpc::Server& server, SchedulerMetrics& metrics, openai::HttpServer* http) {
  const int signal_number = cli::WaitForTerminationSignal();
  Log(absl::StrCat("signal ", signal_number, ": draining"));
  grpc::HealthCheckServiceInterface* health = server.GetHealthCheckService();
  health->SetServingStatus(false);
  health->SetServingStatus(kServiceName, false);
  metrics.SetServing(false);
  const std::chrono::system_clock::time_point deadline =
      std::chrono::system_clock::now() +
      absl::ToChronoMilliseconds(absl::GetFlag(FLAGS_drain_timeout));
  if (http != nullptr) {
    // New HTTP completions get 503. Running ones call through the in-process
    // channel, which Shutdown closes at once: they finish first, within the
    // same deadline (gRPC calls meanwhile go on as they would).
    http->StartDrain();
    http->WaitIdle(deadline);
  }
  server.Shutdown(deadline);
}

// --http_listen: the OpenAI-compatible API, calling this server's own gRPC
// API in-process (null when the flag is empty).
absl::StatusOr<std::unique_ptr<openai::HttpServer>> StartHttp(
    grpc::Server& server, scheduler::SchedulerCore& core,
    const std::optional<BearerTokens>& tokens) {
  const std::string listen = absl::GetFlag(FLAGS_http_listen);
  if (listen.empty()) return std::unique_ptr<openai::HttpServer>();
  openai::HttpServerOptions options;
  options.listen = listen;
  options.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key = absl::GetFlag(FLAGS_tls_key);
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  options.channel = server.InProcessChannel(args);
  options.tokens = tokens ? &*tokens : nullptr;
  options.threads = absl::GetFlag(FLAGS_http_threads);
  for (const std::string& value : absl::GetFlag(FLAGS_http_cors_origins).values) {
    for (absl::string_view origin : absl::StrSplit(value, ',')) {
      origin = absl::StripAsciiWhitespace(origin);
      if (!origin.empty()) options.cors_origins.emplace_back(origin);
    }
  }
  options.log = Log;
  // /health needs no token: it asks the core, not ListWorkers.
  options.workers_up = [&core] {
    auto up = std::make_shared<std::promise<int>>();
    std::future<int> result = up->get_future();
    core.Snapshot([up](scheduler::CoreSnapshot snapshot) {
      int n = 0;
      for (const scheduler::WorkerRecord& w : snapshot.workers) {
        n += w.state == scheduler::WorkerState::kUp;
      }
      up->set_value(n);
    });
    return result.wait_for(std::chrono::seconds(5)) == std::future_status::ready ? result.get() : 0;
  };
  absl::StatusOr<std::unique_ptr<openai::HttpServer>> http =
      openai::HttpServer::Start(std::move(options));
  if (!http.ok()) return http.status();
  Log(absl::StrCat("http listening on port ", (*http)->port(), " (",
                   (*http)->tls() ? "tls on" : "tls off",
                   tokens ? absl::StrCat(", ", tokens->size(), " bearer tokens") : "",
                   "; OpenAI-compatible API at ", (*http)->tls() ? "https" : "http", "://",
                   listen.substr(0, listen.rfind(':')), ":", (*http)->port(), "/v1)"));
  return http;
}

// What Run takes from the flags, all checked before anything starts.
struct SchedulerConfig {
  std::vector<std::string> worker_entries;
  scheduler::CoreOptions core_options;
  TlsFiles public_tls;
  std::shared_ptr<grpc::ServerCredentials> server_credentials;
  std::optional<BearerTokens> tokens;  // --auth_tokens_file
};

// Registering workers may present a certificate (mutual TLS); clients
// need none.
ClientCerts PublicClientCerts(const TlsFiles& public_tls) {
  return public_tls.ca.empty() ? ClientCerts::kNone : ClientCerts::kVerifyIfPresented;
}

// The first error of --workers, the core's flags, then the public TLS files;
// the tokens file is read only when those are valid.
absl::StatusOr<SchedulerConfig> SchedulerConfigFromFlags() {
  absl::StatusOr<std::vector<std::string>> entries = WorkerEntries();
  absl::StatusOr<scheduler::CoreOptions> core_options = CoreOptionsFromFlags();
  const TlsFiles public_tls{absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
                            absl::GetFlag(FLAGS_tls_ca)};
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> server_credentials =
      MakeServerCredentials(public_tls, PublicClientCerts(public_tls));
  if (!entries.ok()) return entries.status();
  if (!core_options.ok()) return core_options.status();
  if (!server_credentials.ok()) return server_credentials.status();
  SchedulerConfig config{std::move(*entries), std::move(*core_options), public_tls,
                         std::move(*server_credentials), std::nullopt};
  if (!absl::GetFlag(FLAGS_auth_tokens_file).empty()) {
    absl::StatusOr<BearerTokens> loaded = BearerTokens::Load(absl::GetFlag(FLAGS_auth_tokens_file));
    if (!loaded.ok()) return loaded.status();
    config.tokens = std::move(*loaded);
  }
  return config;
}

SchedulerServiceOptions ServiceOptions(const SchedulerConfig& config,
                                       scheduler::SchedulerCore& core,
                                       SchedulerMetrics& scheduler_metrics) {
  SchedulerServiceOptions service_options;
  service_options.core = &core;
  service_options.metrics = &scheduler_metrics;
  service_options.tokens = config.tokens ? &*config.tokens : nullptr;
  service_options.workers_use_client_certs = !config.public_tls.ca.empty();
  service_options.max_buffered_events =
      static_cast<size_t>(absl::GetFlag(FLAGS_max_stream_buffer_events));
  return service_options;
}

// The gRPC server on --listen with health and reflection; null (logged) when
// it cannot listen.
std::unique_ptr<grpc::Server> StartGrpc(const SchedulerConfig& config, SchedulerService& service) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  const std::string listen = absl::GetFlag(FLAGS_listen);
  builder.AddListeningPort(listen, config.server_credentials, &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    Log(absl::StrCat("cannot listen on ", listen));
    return nullptr;
  }
  const std::optional<BearerTokens>& tokens = config.tokens;
  Log(absl::StrCat("grpc listening on port ", port, " (",
                   DescribeServerTls(config.public_tls, PublicClientCerts(config.public_tls)),
                   tokens ? absl::StrCat(", ", tokens->size(), " bearer tokens") : "", ")"));
  return server;
}

int Run() {
  if (absl::Status s = cli::CatchTerminationSignals(); !s.ok()) {
    Log(std::string(s.message()));
    return 2;
  }
  absl::StatusOr<SchedulerConfig> config = SchedulerConfigFromFlags();
  if (!config.ok()) {
    Log(std::string(config.status().message()));
    return 2;
  }

  auto registry = std::make_shared<metrics::Registry>();
  absl::StatusOr<std::unique_ptr<metrics::Exposer>> exposer = StartMetrics(registry);
  if (!exposer.ok()) {
    Log(absl::StrCat("metrics: ", exposer.status().message()));
    return 2;
  }
  SchedulerMetrics scheduler_metrics(*registry, kVersion, Log);
  config->core_options.observer = &scheduler_metrics;
  scheduler::SchedulerCore core(config->core_options);
  core.AddWorkerEntries(config->worker_entries);
  core.Start();
  SchedulerService service(ServiceOptions(*config, core, scheduler_metrics));

  std::unique_ptr<grpc::Server> server = StartGrpc(*config, service);
  if (server == nullptr) return 2;
  absl::StatusOr<std::unique_ptr<openai::HttpServer>> http =
      StartHttp(*server, core, config->tokens);
  if (!http.ok()) {
    Log(absl::StrCat("http: ", http.status().message()));
    return 2;
  }

  server->GetHealthCheckService()->SetServingStatus(true);
  server->GetHealthCheckService()->SetServingStatus(kServiceName, true);
  scheduler_metrics.SetServing(true);
  Log(absl::StrCat("serving (", config->worker_entries.size(), " --workers entries, max queue ",
                   config->core_options.max_queue, " per model)"));

  ServeUntilSignal(*server, scheduler_metrics, http->get());
  server->Wait();
  if (*http != nullptr) (*http)->Stop();
  Log("drained, exiting");
  return 0;
}

cli::CommandSpec CommandLine() {
  cli::CommandSpec command;
  command.program = "llorch-scheduler";
  command.summary =
      "Serves llorch.v1.Scheduler over gRPC (with health and reflection): queues Generate "
      "calls per model, places them on llorch-worker processes, relays their streams, "
      "retries on another worker when one dies before the first token.";
  command.usage = "llorch-scheduler [--listen HOST:PORT] [--workers HOST:PORT,...] [flags]";
  command.spelling = cli::Spelling::kUnderscores;
  command.flags = cli::FlagsOf(
      "scheduler/server/scheduler_main.cc",
      {cli::FlagSpec("listen").Value("HOST:PORT"), cli::FlagSpec("workers").Value("HOST:PORT,..."),
       cli::FlagSpec("metrics_port").AtLeast(-1).AtMost(65535),
       cli::FlagSpec("metrics_host").Value("HOST"), cli::FlagSpec("max_queue").AtLeast(0),
       cli::FlagSpec("max_queue_wait").Value("DURATION"),
       cli::FlagSpec("max_jobs_per_worker").AtLeast(0),
       cli::FlagSpec("placement").Value("cache_aware|least_loaded"),
       cli::FlagSpec("placement_max_imbalance").AtLeast(0),
       cli::FlagSpec("prefix_probe_timeout").Value("DURATION"),
       cli::FlagSpec("max_retries").AtLeast(0),
       cli::FlagSpec("probe_interval").Value("DURATION"),
       cli::FlagSpec("probe_timeout").Value("DURATION"),
       cli::FlagSpec("dns_refresh").Value("DURATION"),
       cli::FlagSpec("heartbeat_interval").Value("DURATION"),
       cli::FlagSpec("registration_ttl").Value("DURATION"),
       cli::FlagSpec("tls_cert").Value("PATH"), cli::FlagSpec("tls_key").Value("PATH"),
       cli::FlagSpec("tls_ca").Value("PATH"), cli::FlagSpec("auth_tokens_file").Value("PATH"),
       cli::FlagSpec("max_stream_buffer_events").AtLeast(1),
       cli::FlagSpec("drain_timeout").Value("DURATION"),
       cli::FlagSpec("http_listen").Value("HOST:PORT"), cli::FlagSpec("http_threads").AtLeast(1),
       cli::FlagSpec("http_cors_origins").Value("ORIGIN,...")});
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
