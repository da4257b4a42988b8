#include "tests/support/scheduler_process.h"

#include <fstream>
#include <sstream>
#include <utility>

#include <grpcpp/support/client_interceptor.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace llorch::testing {
namespace {

// Whether the last --metrics_port (or --metrics-port, with "=" or a separate
// value) in `args` turns metrics off.
bool MetricsOff(const std::vector<std::string>& args) {
  bool off = false;
  for (size_t i = 0; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    if (!absl::ConsumePrefix(&arg, "--metrics_port") &&
        !absl::ConsumePrefix(&arg, "--metrics-port")) {
      continue;
    }
    if (absl::ConsumePrefix(&arg, "=")) {
      off = arg == "-1";
    } else if (arg.empty() && i + 1 < args.size()) {
      off = args[++i] == "-1";
    }
  }
  return off;
}

absl::StatusOr<std::string> ReadFile(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", what, " ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// Adds "authorization: Bearer <token>" to every call's initial metadata.
class BearerTokenInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit BearerTokenInterceptor(std::string value) : value_(std::move(value)) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({"authorization", value_});
    }
    methods->Proceed();
  }

 private:
  std::string value_;
};

class BearerTokenInterceptorFactory
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerTokenInterceptorFactory(std::string token)
      : value_(absl::StrCat("Bearer ", token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* /*info*/) override {
    return new BearerTokenInterceptor(value_);
  }

 private:
  std::string value_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::Channel>> SchedulerProcess::MakeChannel(
    const std::string& address, const SchedulerClientOptions& client) {
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (client.tls_ca.empty()) {
    credentials = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    absl::StatusOr<std::string> ca = ReadFile(client.tls_ca, "the CA file");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
    if (!client.tls_cert.empty()) {
      absl::StatusOr<std::string> cert = ReadFile(client.tls_cert, "the client certificate");
      if (!cert.ok()) return cert.status();
      absl::StatusOr<std::string> key = ReadFile(client.tls_key, "the client key");
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *cert;
      ssl.pem_private_key = *key;
    }
    credentials = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments arguments;
  // Each channel its own connection: tests compare channels that differ only
  // in credentials or tokens.
  arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  if (client.bearer_token.empty()) {
    return grpc::CreateCustomChannel(address, credentials, arguments);
  }
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> factories;
  factories.push_back(std::make_unique<BearerTokenInterceptorFactory>(client.bearer_token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(address, credentials, arguments,
                                                                 std::move(factories));
}

absl::StatusOr<std::unique_ptr<SchedulerProcess>> SchedulerProcess::Start(
    const std::string& binary, std::vector<std::string> extra_args,
    const SchedulerClientOptions& client) {
  const bool metrics_off = MetricsOff(extra_args);
  std::vector<std::string> args = {binary, "--listen", "127.0.0.1:0", "--metrics_host",
                                   "127.0.0.1", "--metrics_port", "0"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  absl::StatusOr<std::unique_ptr<ChildProcess>> child =
      ChildProcess::Start(std::move(args), "scheduler");
  if (!child.ok()) return child.status();
  std::unique_ptr<SchedulerProcess> process(new SchedulerProcess());
  process->child_ = *std::move(child);

  absl::StatusOr<int> grpc_port = process->child_->WaitForPort("grpc listening on port ");
  if (!grpc_port.ok()) return grpc_port.status();
  process->grpc_port_ = *grpc_port;
  if (!metrics_off) {
    absl::StatusOr<int> metrics_port = process->child_->WaitForPort("metrics listening on port ");
    if (!metrics_port.ok()) return metrics_port.status();
    process->metrics_port_ = *metrics_port;
  }
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      MakeChannel(process->address(), client);
  if (!channel.ok()) return channel.status();
  process->channel_ = *channel;
  process->stub_ = v1::Scheduler::NewStub(process->channel_);
  return process;
}

SchedulerProcess::~SchedulerProcess() = default;

absl::Status SchedulerProcess::WaitServing(std::chrono::seconds timeout) {
  return WaitForLog("llorch-scheduler: serving", timeout);
}

}  // namespace llorch::testing
