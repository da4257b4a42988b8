// llorch tokenize: prompt text to token ids, a JSON array on stdout.
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "tools/llorch/common.h"

ABSL_FLAG(std::string, text, "", "the text to tokenize (required)");
ABSL_FLAG(bool, no_bos, false, "leave out the BOS token the model would add");

namespace llorch {
namespace tool {
namespace {

constexpr char kUsage[] = "llorch tokenize --model PATH --text TEXT [--no-bos]";

absl::Status Tokenize() {
  if (!cli::WasGiven(FLAGS_text)) return absl::InvalidArgumentError("--text is required");
  LoadRequest request;
  request.weights = false;
  absl::StatusOr<ServedModel> loaded = LoadModel(request);
  if (!loaded.ok()) return loaded.status();
  const bool add_bos = !absl::GetFlag(FLAGS_no_bos);
  std::vector<int32_t> ids = loaded->tokenizer->Encode(
      absl::GetFlag(FLAGS_text), /*add_special=*/add_bos, /*parse_special=*/true);
  std::cout << json(ids).dump() << "\n";
  return absl::OkStatus();
}

}  // namespace

cli::Subcommand TokenizeCommand() {
  return MakeSubcommand("tokenize", "prompt text to token ids (JSON)", kUsage,
                        {{ModelFlag(), "text", "no_bos"}}, &Tokenize);
}

}  // namespace tool
}  // namespace llorch
