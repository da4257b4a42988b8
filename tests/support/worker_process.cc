#include "tests/support/worker_process.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

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

}  // namespace

absl::StatusOr<std::unique_ptr<WorkerProcess>> WorkerProcess::Start(
    const std::string& binary, const std::string& model, std::vector<std::string> extra_args) {
  std::unique_ptr<WorkerProcess> process(new WorkerProcess());
  char log_template[] = "/tmp/llorch-worker-test-XXXXXX";
  const int log_fd = mkstemp(log_template);
  if (log_fd < 0) return absl::InternalError("mkstemp failed");
  process->log_path_ = log_template;

  std::vector<std::string> args = {binary, "--model", model, "--listen", "127.0.0.1:0",
                                   "--metrics_host", "127.0.0.1", "--metrics_port", "0"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
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
        FindPort(log, "metrics listening on port ", &process->metrics_port_)) {
      break;
    }
    if (!process->Alive()) {
      return absl::FailedPreconditionError(absl::StrCat("worker exited at start:\n", log));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("worker did not listen:\n", log));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  process->channel_ =
      grpc::CreateChannel(process->address(), grpc::InsecureChannelCredentials());
  process->stub_ = worker::v1::Worker::NewStub(process->channel_);
  return process;
}

WorkerProcess::~WorkerProcess() {
  if (Alive()) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (!log_path_.empty()) unlink(log_path_.c_str());
}

std::string WorkerProcess::Log() const {
  std::ifstream in(log_path_);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

bool WorkerProcess::Alive() {
  if (exited_) return false;
  int status = 0;
  const pid_t done = waitpid(pid_, &status, WNOHANG);
  if (done == pid_) exited_ = true;
  return !exited_;
}

absl::Status WorkerProcess::WaitServing(std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!absl::StrContains(Log(), "llorch-worker: serving")) {
    if (!Alive()) return absl::FailedPreconditionError(absl::StrCat("worker exited:\n", Log()));
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("worker not serving:\n", Log()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> WorkerProcess::Stop(int signal_number, std::chrono::seconds timeout) {
  if (exited_) return absl::FailedPreconditionError("already reaped");
  kill(pid_, signal_number);
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
      return absl::DeadlineExceededError("worker did not exit in time");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

absl::StatusOr<int64_t> WorkerProcess::RssBytes() const {
  std::ifstream in(absl::StrCat("/proc/", pid_, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "VmRSS:")) {
      std::vector<std::string> parts =
          absl::StrSplit(line, ' ', absl::SkipWhitespace());  // VmRSS: N kB
      int64_t kb = 0;
      if (parts.size() >= 2 && absl::SimpleAtoi(parts[1], &kb)) return kb * 1024;
    }
  }
  return absl::NotFoundError("no VmRSS");
}

absl::StatusOr<std::string> WorkerProcess::Metrics() const {
  httplib::Client client("127.0.0.1", metrics_port_);
  client.set_read_timeout(5, 0);
  httplib::Result result = client.Get("/metrics");
  if (!result || result->status != 200) return absl::UnavailableError("GET /metrics failed");
  return result->body;
}

absl::StatusOr<double> WorkerProcess::MetricValue(const std::string& name) const {
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
