#include "common/cli/termination_signals.h"

#include <signal.h>
#include <unistd.h>

namespace llorch::cli {
namespace {

int g_pipe[2] = {-1, -1};

void OnSignal(int signal_number) {
  const unsigned char byte = static_cast<unsigned char>(signal_number);
  const ssize_t written = write(g_pipe[1], &byte, 1);
  (void)written;
}

}  // namespace

absl::Status CatchTerminationSignals() {
  if (pipe(g_pipe) != 0) return absl::InternalError("cannot create the signal pipe");
  struct sigaction action = {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  return absl::OkStatus();
}

int WaitForTerminationSignal() {
  unsigned char signal_number = 0;
  while (read(g_pipe[0], &signal_number, 1) != 1) {
  }
  return signal_number;
}

}  // namespace llorch::cli
