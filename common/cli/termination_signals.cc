#include "common/cli/termination_signals.h"

#include <poll.h>
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

// Waits in poll(), not read(): ThreadSanitizer defers a signal that lands on
// a thread outside a call it knows to block, until that thread next leaves an
// intercepted call; a read() restarted by SA_RESTART never left, so the
// scheduler slept through SIGTERM. poll() is such a blocking call, and its
// timeout bounds any other deferral to a second.
int WaitForTerminationSignal() {
  pollfd readable{g_pipe[0], POLLIN, 0};
  while (true) {
    if (poll(&readable, 1, /*timeout_ms=*/1000) != 1) continue;
    unsigned char signal_number = 0;
    if (read(g_pipe[0], &signal_number, 1) == 1) return signal_number;
  }
}

}  // namespace llorch::cli
