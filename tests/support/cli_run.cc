#include "tests/support/cli_run.h"

#include <cstdio>

#include <gtest/gtest.h>

#include "llorch/worker/v1/worker.pb.h"

namespace llorch::testing {

CliRun RunCliCommand(const std::string& command) {
  CliRun run;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return run;
  std::string line;
  char buffer[4096];
  while (fgets(buffer, sizeof(buffer), pipe) != nullptr) {
    line += buffer;
    if (line.empty() || line.back() != '\n') continue;
    nlohmann::json event = nlohmann::json::parse(line);
    line.clear();
    if (event["event"] == "token") run.tokens.push_back(event);
    if (event["event"] == "finished") run.finished = event;
  }
  EXPECT_EQ(pclose(pipe), 0) << command;
  return run;
}

const char* CliReasonName(int reason) {
  namespace v1 = worker::v1;
  switch (reason) {
    case v1::FINISH_REASON_EOS: return "eos";
    case v1::FINISH_REASON_LENGTH: return "length";
    case v1::FINISH_REASON_STOP: return "stop";
    case v1::FINISH_REASON_CANCELLED: return "cancelled";
    default: return "unspecified";
  }
}

}  // namespace llorch::testing
