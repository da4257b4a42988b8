// llorch bench: prompt and decode throughput on random prompt ids, greedy,
// EOS ignored; the same measurement tools/bench/llamacpp_bench makes for
// llama.cpp. One JSON object on stdout.
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <memory>
#include <random>
#include <vector>

#include "absl/flags/flag.h"
#include "tools/llorch/common.h"

ABSL_FLAG(int32_t, prompt_tokens, 512, "random prompt ids per repetition");
ABSL_FLAG(int32_t, gen_tokens, 128, "tokens generated per repetition");
ABSL_FLAG(int32_t, reps, 3, "repetitions; the medians are reported");

namespace llorch {
namespace tool {
namespace {

constexpr char kUsage[] = "llorch bench --model PATH [flags]";

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

double Max(const std::vector<double>& values) {
  return *std::max_element(values.begin(), values.end());
}

// Prompt and decode tokens per second of one greedy job on random ids.
absl::Status Measure(const ServedModel& loaded, std::mt19937* rng, double* prompt_rate,
                     double* decode_rate) {
  const int32_t prompt_tokens = absl::GetFlag(FLAGS_prompt_tokens);
  std::uniform_int_distribution<int32_t> dist(0,
                                              static_cast<int32_t>(loaded.config.vocab_size) - 1);
  std::vector<int32_t> prompt(prompt_tokens);
  for (int32_t& id : prompt) id = dist(*rng);
  GenerationParams params;
  params.max_tokens = absl::GetFlag(FLAGS_gen_tokens);
  params.ignore_eos = true;
  params.sampling.temperature = 0;
  absl::StatusOr<std::unique_ptr<Job>> job =
      Job::Create("bench", prompt, params, loaded.model.get(), loaded.tokenizer.get());
  if (!job.ok()) return job.status();
  if (absl::Status s = RunJob(*loaded.model, **job, 512, [](const TokenEvent&) {}); !s.ok()) {
    return s;
  }
  *prompt_rate = prompt_tokens / ((*job)->ttft_ms() / 1000.0);
  *decode_rate = (*job)->decode_tokens_per_s();
  return absl::OkStatus();
}

absl::Status Bench() {
  const auto load_start = std::chrono::steady_clock::now();
  absl::StatusOr<ServedModel> loaded = LoadModel(LoadRequest());
  if (!loaded.ok()) return loaded.status();
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  if (absl::Status s = WarmUp(*loaded->model); !s.ok()) return s;
  std::mt19937 rng(1);
  const int32_t reps = absl::GetFlag(FLAGS_reps);
  std::vector<double> prompt_rates(reps), decode_rates(reps);
  for (int32_t rep = 0; rep < reps; ++rep) {
    if (absl::Status s = Measure(*loaded, &rng, &prompt_rates[rep], &decode_rates[rep]); !s.ok()) {
      return s;
    }
  }
  json out = {{"engine", "llorch"},
              {"model", absl::GetFlag(FLAGS_model)},
              {"n_params", loaded->model->num_parameters()},
              {"threads", at::get_num_threads()},
              {"prompt_tokens", absl::GetFlag(FLAGS_prompt_tokens)},
              {"gen_tokens", absl::GetFlag(FLAGS_gen_tokens)},
              {"reps", reps},
              {"load_s", load_s},
              {"prompt_tok_s", Median(prompt_rates)},
              {"decode_tok_s", Median(decode_rates)},
              {"prompt_tok_s_best", Max(prompt_rates)},
              {"decode_tok_s_best", Max(decode_rates)},
              {"prompt_tok_s_all", prompt_rates},
              {"decode_tok_s_all", decode_rates}};
  std::cout << Dump(out) << "\n";
  return absl::OkStatus();
}

}  // namespace

cli::Subcommand BenchCommand() {
  return MakeSubcommand("bench", "prompt and decode tok/s on random prompt ids (JSON)", kUsage,
                        {{ModelFlag(), cli::FlagSpec("prompt_tokens").AtLeast(1),
                          cli::FlagSpec("gen_tokens").AtLeast(2), cli::FlagSpec("reps").AtLeast(1)},
                         LoadFlags()},
                        &Bench);
}

}  // namespace tool
}  // namespace llorch
