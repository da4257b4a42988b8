// SIGTERM and SIGINT for servers that drain: an async-signal-safe handler
// writes the signal's number to a pipe and a thread of the program reads it.
// (Libraries start threads before main, so masking the signals in one
// thread cannot route them to it.)
#ifndef LLORCH_COMMON_CLI_TERMINATION_SIGNALS_H_
#define LLORCH_COMMON_CLI_TERMINATION_SIGNALS_H_

#include "absl/status/status.h"

namespace llorch::cli {

// Installs the handler for SIGTERM and SIGINT; call once, early in main.
absl::Status CatchTerminationSignals();
// Blocks until one of them arrives; returns its number.
int WaitForTerminationSignal();

}  // namespace llorch::cli

#endif  // LLORCH_COMMON_CLI_TERMINATION_SIGNALS_H_
