// llorch run: generate from a prompt in this process, streaming tokens.
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "tools/llorch/common.h"

ABSL_FLAG(int32_t, prefill_chunk, 512, "prompt tokens per forward pass while prefilling");

namespace llorch {
namespace tool {
namespace {

constexpr char kUsage[] =
    "llorch run --model PATH (--prompt TEXT | --prompt-ids 1,2,3 |\n"
    "           [--system TEXT] --chat [ROLE:]TEXT...) [flags]";

void PrintToken(const TokenEvent& e, bool jsonl, int32_t top_logprobs) {
  if (!jsonl) {
    std::cout << e.text << std::flush;
    return;
  }
  json line = {{"event", "token"}, {"index", e.index}, {"id", e.id},
               {"text", e.text},   {"logprob", e.logprob}};
  if (top_logprobs > 0) line["top_logprobs"] = TopLogProbsJson(e.top_logprobs);
  std::cout << Dump(line) << "\n" << std::flush;
}

void PrintFinished(Job& job, bool jsonl) {
  if (jsonl) {
    json done = {{"event", "finished"},
                 {"reason", FinishReasonName(job.finish_reason())},
                 {"prompt_tokens", job.prompt_tokens()},
                 {"completion_tokens", job.completion_tokens()},
                 {"ttft_ms", job.ttft_ms()},
                 {"decode_tokens_per_s", job.decode_tokens_per_s()},
                 {"kv_cache_bytes", job.cache()->num_bytes()}};
    std::cout << Dump(done) << "\n";
    return;
  }
  std::cout << "\n";
  std::cerr << absl::StrCat("[", job.prompt_tokens(), " prompt tokens, ", job.completion_tokens(),
                            " generated, finished: ", FinishReasonName(job.finish_reason()),
                            ", ttft ", static_cast<int>(job.ttft_ms()), " ms, ",
                            static_cast<int>(job.decode_tokens_per_s() * 10) / 10.0, " tok/s]")
            << std::endl;
}

absl::Status Run() {
  absl::StatusOr<GenerationParams> params = GenerationParamsFromFlags();
  if (!params.ok()) return params.status();
  absl::StatusOr<bool> jsonl = JsonlFormat();
  if (!jsonl.ok()) return jsonl.status();
  LoadRequest request;
  request.progress = true;
  absl::StatusOr<ServedModel> loaded = LoadModel(request);
  if (!loaded.ok()) return loaded.status();
  absl::StatusOr<std::vector<int32_t>> prompt = PromptIds(*loaded);
  if (!prompt.ok()) return prompt.status();
  if (absl::Status s = WarmUp(*loaded->model); !s.ok()) return s;

  absl::StatusOr<std::unique_ptr<Job>> job =
      Job::Create("cli", *prompt, *params, loaded->model.get(), loaded->tokenizer.get());
  if (!job.ok()) return job.status();
  absl::Status status =
      RunJob(*loaded->model, **job, absl::GetFlag(FLAGS_prefill_chunk),
             [&](const TokenEvent& e) { PrintToken(e, *jsonl, params->top_logprobs); });
  if (!status.ok()) return status;
  PrintFinished(**job, *jsonl);
  return absl::OkStatus();
}

}  // namespace

cli::Subcommand RunCommand() {
  return MakeSubcommand(
      "run", "generate from a prompt (text, ids or chat) in this process, streaming tokens",
      kUsage,
      {{ModelFlag()}, PromptFlags(), SamplingFlags(), {FormatFlag()}, LoadFlags(),
       {cli::FlagSpec("prefill_chunk").AtLeast(1)}},
      &Run);
}

}  // namespace tool
}  // namespace llorch
