// llorch score: teacher-forced log-probs (and raw logits) at every position
// of a token sequence, one JSON line per position.
#include <ATen/ATen.h>

#include <algorithm>
#include <iostream>
#include <memory>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "tools/llorch/common.h"
#include "worker/sampling/sampler.h"

// `logprobs` is run's and generate's flag too, with another default.
ABSL_FLAG(int32_t, score_logprobs, 5, "log-probs of the N most likely tokens at each position");
ABSL_FLAG(bool, logits, false, "also print the raw logits of every position");
ABSL_FLAG(bool, one_token, false,
          "one forward pass per position, summed as generated tokens are (llama.cpp's "
          "one-token order); otherwise prompt chunks");

namespace llorch {
namespace tool {
namespace {

constexpr char kUsage[] = "llorch score --model PATH --prompt-ids 1,2,3 [flags]";

// One JSON line per row of `logits` (positions begin .. begin + rows - 1).
void PrintRows(const at::Tensor& logits, const std::vector<int32_t>& ids, int64_t begin,
               int64_t rows, int32_t vocab) {
  const int64_t n = static_cast<int64_t>(ids.size());
  const int32_t top = absl::GetFlag(FLAGS_score_logprobs);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t pos = begin + r;
    const float* row = logits.data_ptr<float>() + r * vocab;
    json line = {{"pos", pos}, {"id", ids[pos]},
                 {"top_logprobs", TopLogProbsJson(TopLogProbs(row, vocab, top))}};
    line["next_logprob"] = pos + 1 < n ? json(LogProbOf(row, vocab, ids[pos + 1])) : json();
    if (absl::GetFlag(FLAGS_logits)) line["logits"] = std::vector<float>(row, row + vocab);
    std::cout << Dump(line) << "\n";
  }
}

absl::Status Score() {
  if (!cli::WasGiven(FLAGS_prompt_ids)) {
    return absl::InvalidArgumentError("--prompt-ids is required");
  }
  absl::StatusOr<std::vector<int32_t>> ids =
      ParseIds(absl::GetFlag(FLAGS_prompt_ids), "--prompt-ids");
  if (!ids.ok()) return ids.status();
  LoadRequest request;
  request.need_tokenizer = false;
  absl::StatusOr<ServedModel> loaded = LoadModel(request);
  if (!loaded.ok()) return loaded.status();
  const LlamaModel& model = *loaded->model;
  const int64_t n = static_cast<int64_t>(ids->size());
  if (n == 0) return absl::InvalidArgumentError("--prompt-ids is empty");
  if (n > loaded->config.context_length) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--prompt-ids: ", n, " tokens exceed the context length ", loaded->config.context_length));
  }
  std::unique_ptr<KvCache> cache = model.NewCache(n);
  const int32_t vocab = static_cast<int32_t>(loaded->config.vocab_size);
  const bool one_token = absl::GetFlag(FLAGS_one_token);
  const int64_t chunk = one_token ? 1 : 256;
  for (int64_t begin = 0; begin < n; begin += chunk) {
    const int64_t count = std::min(chunk, n - begin);
    absl::StatusOr<at::Tensor> logits = model.Forward(
        absl::MakeConstSpan(*ids).subspan(begin, count), begin, cache.get(), true, one_token);
    if (!logits.ok()) return logits.status();
    PrintRows(*logits, *ids, begin, count, vocab);
  }
  return absl::OkStatus();
}

}  // namespace

cli::Subcommand ScoreCommand() {
  return MakeSubcommand(
      "score", "teacher-forced log-probs (and raw logits) at every position of a token sequence",
      kUsage,
      {{ModelFlag(), cli::FlagSpec("prompt_ids").Value("IDS"),
        cli::FlagSpec("logprobs").Reads("score_logprobs").AtLeast(0), "logits", "one_token"},
       LoadFlags()},
      &Score);
}

}  // namespace tool
}  // namespace llorch
