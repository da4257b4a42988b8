#include "tools/llorch/interrupt.h"

#include <unistd.h>

#include <cerrno>
#include <iostream>

namespace llorch {
namespace tool {
namespace {

constexpr char kInterrupt = 'i';
constexpr char kQuit = 'q';

// The handler may only do async-signal-safe things: TryCancel takes locks,
// so it runs on the watcher thread, woken by a write to the pipe.
std::atomic<int> g_pipe_write{-1};

void OnInterrupt(int /*signal*/) {
  const int fd = g_pipe_write.load();
  if (fd >= 0) (void)!write(fd, &kInterrupt, 1);
}

}  // namespace

CancelOnInterrupt::CancelOnInterrupt(grpc::ClientContext* context) : context_(context) {
  if (pipe(pipe_) != 0) return;  // then Ctrl-C kills as it always did
  g_pipe_write.store(pipe_[1]);
  struct sigaction action = {};
  action.sa_handler = OnInterrupt;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, &previous_);
  watcher_ = std::thread([this] { Watch(); });
}

CancelOnInterrupt::~CancelOnInterrupt() {
  if (!watcher_.joinable()) return;
  sigaction(SIGINT, &previous_, nullptr);
  g_pipe_write.store(-1);
  (void)!write(pipe_[1], &kQuit, 1);
  watcher_.join();
  close(pipe_[0]);
  close(pipe_[1]);
}

void CancelOnInterrupt::Watch() {
  char byte = kQuit;
  while (read(pipe_[0], &byte, 1) < 0 && errno == EINTR) {
  }
  if (byte != kInterrupt) return;
  interrupted_.store(true);
  sigaction(SIGINT, &previous_, nullptr);  // a second Ctrl-C is not held up
  context_->TryCancel();
}

void CancelOnInterrupt::RaiseIfInterrupted() {
  if (!interrupted_.load()) return;
  std::cout << std::flush;
  std::cerr << "llorch: interrupted; the call was cancelled" << std::endl;
  signal(SIGINT, SIG_DFL);
  raise(SIGINT);
}

}  // namespace tool
}  // namespace llorch
