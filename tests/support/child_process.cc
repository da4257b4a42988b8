#include "tests/support/child_process.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
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
#include "common/memory/library_pages.h"

namespace llorch::testing {

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Start(std::vector<std::string> argv,
                                                                  const std::string& name) {
  std::unique_ptr<ChildProcess> process(new ChildProcess());
  process->name_ = name;
  std::string log_template = absl::StrCat("/tmp/llorch-", name, "-test-XXXXXX");
  const int log_fd = mkstemp(log_template.data());
  if (log_fd < 0) return absl::InternalError("mkstemp failed");
  process->log_path_ = log_template;  // from here the destructor removes it

  // Built before fork: the child of a threaded parent may only make
  // async-signal-safe calls.
  std::vector<char*> args;
  for (std::string& a : argv) args.push_back(a.data());
  args.push_back(nullptr);

  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) {
    // Die with the test, even when it crashes; the check covers a parent that
    // died before prctl.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    dup2(log_fd, STDERR_FILENO);
    dup2(log_fd, STDOUT_FILENO);
    execv(args[0], args.data());
    _exit(127);
  }
  close(log_fd);
  if (pid < 0) return absl::InternalError("fork failed");
  process->pid_ = pid;
  return process;
}

ChildProcess::~ChildProcess() {
  Kill();
  if (!log_path_.empty()) unlink(log_path_.c_str());
}

std::string ChildProcess::Log() const {
  std::ifstream in(log_path_);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

bool ChildProcess::Alive() {
  if (exited_) return false;
  if (waitpid(pid_, nullptr, WNOHANG) == pid_) exited_ = true;
  return !exited_;
}

void ChildProcess::Kill() {
  if (pid_ <= 0 || exited_) return;
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  exited_ = true;
}

absl::Status ChildProcess::Poll(const std::string& what, std::chrono::milliseconds timeout,
                                absl::FunctionRef<bool(const std::string&)> done) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    // Alive() before reading the log so that a child that logs and exits
    // still counts as done.
    const bool alive = Alive();
    const std::string log = Log();
    if (done(log)) return absl::OkStatus();
    if (!alive) {
      return absl::FailedPreconditionError(
          absl::StrCat(name_, " exited before logging '", what, "':\n", log));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat(name_, " did not log '", what, "':\n", log));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

absl::Status ChildProcess::WaitForLog(const std::string& text,
                                      std::chrono::milliseconds timeout) {
  return Poll(text, timeout, [&](const std::string& log) { return absl::StrContains(log, text); });
}

absl::StatusOr<int> ChildProcess::WaitForPort(const std::string& prefix,
                                              std::chrono::milliseconds timeout) {
  int port = 0;
  absl::Status status = Poll(prefix, timeout, [&](const std::string& log) {
    const size_t at = log.find(prefix);
    if (at == std::string::npos) return false;
    const size_t begin = at + prefix.size();
    size_t end = begin;
    while (end < log.size() && isdigit(static_cast<unsigned char>(log[end]))) ++end;
    // A number cut short by a write still in progress ends at the log's end.
    return end < log.size() && absl::SimpleAtoi(log.substr(begin, end - begin), &port);
  });
  if (!status.ok()) return status;
  return port;
}

absl::StatusOr<int> ChildProcess::Stop(int signal_number, std::chrono::milliseconds timeout) {
  if (exited_) return absl::FailedPreconditionError("already reaped");
  if (signal_number != 0) kill(pid_, signal_number);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      exited_ = true;
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      return 128 + WTERMSIG(status);
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(name_, " did not exit in time"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

absl::StatusOr<int64_t> ChildProcess::RssBytes() const {
  return memory::StatusBytes(std::to_string(pid_), "VmRSS");
}

absl::StatusOr<int64_t> ChildProcess::PeakRssBytes() const {
  return memory::StatusBytes(std::to_string(pid_), "VmHWM");
}

absl::StatusOr<std::string> ChildProcess::Metrics(int port) {
  if (port < 0) return absl::FailedPreconditionError("metrics are off");
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(5, 0);
  httplib::Result result = client.Get("/metrics");
  if (!result || result->status != 200) return absl::UnavailableError("GET /metrics failed");
  return result->body;
}

absl::StatusOr<double> ChildProcess::MetricValue(int port, const std::string& name) {
  absl::StatusOr<std::string> text = Metrics(port);
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
