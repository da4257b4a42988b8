#include "tests/support/scheduler_process.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <fstream>
#include <sstream>
#include <thread>
#include <utility>

#include <grpcpp/support/client_interceptor.h>
#include <httplib.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace llorch::testing {
namespace {

// The number after `prefix` on the log's first line containing it.
bool FindPort(const std::string& log, const std::string& prefix, int* port) {
  const size_t at = log.find(prefix);
  if (at == std::string::npos) return false;
  size_t end = at + prefix.size();
  while (end < log.size() && isdigit(static_cast<unsigned char>(log[end]))) ++end;
  return absl::SimpleAtoi(log.substr(at + prefix.size(), end - at - prefix.size()), port);
}

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
  std::unique_ptr<SchedulerProcess> process(new SchedulerProcess());
  char log_template[] = "/tmp/llorch-scheduler-test-XXXXXX";
  const int log_fd = mkstemp(log_template);
  if (log_fd < 0) return absl::InternalError("mkstemp failed");
  process->log_path_ = log_template;

  const bool metrics_off = MetricsOff(extra_args);
  std::vector<std::string> args = {binary, "--listen", "127.0.0.1:0", "--metrics_host",
                                   "127.0.0.1", "--metrics_port", "0"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    close(log_fd);
    return absl::InternalError("fork failed");
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    dup2(log_fd, STDERR_FILENO);
    dup2(log_fd, STDOUT_FILENO);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(log_fd);
  process->pid_ = pid;

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (true) {
    const std::string log = process->Log();
    if (FindPort(log, "grpc listening on port ", &process->grpc_port_) &&
        (metrics_off || FindPort(log, "metrics listening on port ", &process->metrics_port_))) {
      break;
    }
    if (!process->Alive()) {
      return absl::FailedPreconditionError(absl::StrCat("scheduler exited at start:\n", log));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("scheduler did not listen:\n", log));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (metrics_off) process->metrics_port_ = -1;
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      MakeChannel(process->address(), client);
  if (!channel.ok()) return channel.status();
  process->channel_ = *channel;
  process->stub_ = v1::Scheduler::NewStub(process->channel_);
  return process;
}

SchedulerProcess::~SchedulerProcess() {
  Kill();
  if (!log_path_.empty()) unlink(log_path_.c_str());
}

std::string SchedulerProcess::Log() const {
  std::ifstream in(log_path_);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

bool SchedulerProcess::Alive() {
  if (exited_) return false;
  int status = 0;
  const pid_t done = waitpid(pid_, &status, WNOHANG);
  if (done == pid_) exited_ = true;
  return !exited_;
}

void SchedulerProcess::Kill() {
  if (pid_ <= 0 || exited_) return;
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  exited_ = true;
}

absl::Status SchedulerProcess::WaitForLog(const std::string& text,
                                          std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!absl::StrContains(Log(), text)) {
    if (!Alive()) {
      return absl::FailedPreconditionError(
          absl::StrCat("scheduler exited before logging '", text, "':\n", Log()));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("scheduler did not log '", text, "':\n", Log()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return absl::OkStatus();
}

absl::Status SchedulerProcess::WaitServing(std::chrono::seconds timeout) {
  return WaitForLog("llorch-scheduler: serving", timeout);
}

absl::StatusOr<int> SchedulerProcess::Stop(int signal_number, std::chrono::seconds timeout) {
  if (exited_) return absl::FailedPreconditionError("already reaped");
  if (signal_number != 0) kill(pid_, signal_number);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    int status = 0;
    const pid_t done = waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      exited_ = true;
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      return 128 + WTERMSIG(status);
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::DeadlineExceededError("scheduler did not exit in time");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

absl::StatusOr<std::string> SchedulerProcess::Metrics() const {
  if (metrics_port_ < 0) return absl::FailedPreconditionError("metrics are off");
  httplib::Client client("127.0.0.1", metrics_port_);
  client.set_read_timeout(5, 0);
  httplib::Result result = client.Get("/metrics");
  if (!result || result->status != 200) return absl::UnavailableError("GET /metrics failed");
  return result->body;
}

absl::StatusOr<double> SchedulerProcess::MetricValue(const std::string& name) const {
  absl::StatusOr<std::string> text = Metrics();
  if (!text.ok()) return text.status();
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    if (absl::ConsumePrefix(&line, name + " ")) {
      double value = 0;
      if (absl::SimpleAtod(line, &value)) return value;
    }
  }
  return absl::NotFoundError(absl::StrCat(name, " not in /metrics"));
}

}  // namespace llorch::testing
