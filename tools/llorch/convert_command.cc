// llorch convert: a Hugging Face model directory (or a GGUF file) to a GGUF
// file llama.cpp loads.
#include <iostream>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "tools/llorch/common.h"
#include "worker/convert/convert.h"
#include "worker/convert/hf_checkpoint.h"
#include "worker/gguf/gguf.h"
#include "worker/model/model_config.h"

ABSL_FLAG(std::string, out, "", "the GGUF file to write (required)");
ABSL_FLAG(std::string, type, "f16", "weight type of the file");

namespace llorch {
namespace tool {
namespace {

constexpr char kUsage[] = "llorch convert --model HF_DIR --out FILE.gguf [--type f32|f16|q8_0]";

absl::Status Convert() {
  const std::string source = absl::GetFlag(FLAGS_model);
  const std::string out = absl::GetFlag(FLAGS_out);
  if (source.empty() || out.empty()) {
    return absl::InvalidArgumentError("--model and --out are required");
  }
  absl::StatusOr<ConvertType> type = ParseConvertType(absl::GetFlag(FLAGS_type));
  if (!type.ok()) return type.status();
  absl::StatusOr<std::unique_ptr<GgufFile>> gguf =
      IsDirectory(source) ? OpenHfCheckpoint(source) : GgufFile::Open(source);
  if (!gguf.ok()) return gguf.status();
  // Refuse what the engine could not load.
  if (absl::StatusOr<ModelConfig> config = ModelConfigFromGguf(**gguf); !config.ok()) {
    return config.status();
  }
  if (absl::Status s = ConvertToGguf(**gguf, *type, out); !s.ok()) return s;
  std::cerr << "llorch: wrote " << out << "\n";
  return absl::OkStatus();
}

}  // namespace

cli::Subcommand ConvertCommand() {
  return MakeSubcommand("convert", "a Hugging Face model directory to a GGUF file llama.cpp loads",
                        kUsage, {{ModelFlag(), cli::FlagSpec("out").Value("FILE.gguf"),
                          cli::FlagSpec("type").Value("f32|f16|q8_0")}}, &Convert);
}

}  // namespace tool
}  // namespace llorch
