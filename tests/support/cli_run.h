// `llorch run --format jsonl`: the reference the worker and scheduler
// process tests compare their streams against.
#ifndef LLORCH_TESTS_SUPPORT_CLI_RUN_H_
#define LLORCH_TESTS_SUPPORT_CLI_RUN_H_

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace llorch::testing {

// What one run printed.
struct CliRun {
  std::vector<nlohmann::json> tokens;  // the "token" events, in order
  nlohmann::json finished;             // the "finished" event
};

// Runs the shell command `command` (an `llorch run --format jsonl ...` line)
// and collects its events; the current test fails if it does not exit 0.
CliRun RunCliCommand(const std::string& command);

// A FinishReason as `llorch run` spells it: "eos", "length", ... Takes the
// worker's or the scheduler's enum; their numbers are the same (checked by
// SharedMessages.EqualToTheWorkers).
const char* CliReasonName(int reason);

}  // namespace llorch::testing

#endif  // LLORCH_TESTS_SUPPORT_CLI_RUN_H_
