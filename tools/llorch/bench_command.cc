// llorch bench: prompt and decode throughput on random prompt ids, greedy,
// EOS ignored; the same measurement tools/bench/llamacpp_bench makes for
// llama.cpp. With --batch N, N jobs decode together in one forward per step
// (the worker's batching without gRPC). One JSON object on stdout.
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <iostream>
#include <memory>
#include <random>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/memory/library_pages.h"
#include "tools/llorch/common.h"

ABSL_FLAG(int32_t, prompt_tokens, 512, "random prompt ids per repetition");
ABSL_FLAG(int32_t, gen_tokens, 128, "tokens generated per repetition");
ABSL_FLAG(int32_t, reps, 3, "repetitions; the medians are reported");
ABSL_FLAG(int32_t, batch, 1,
          "jobs decoded together, one forward per step for all (each prefilled alone "
          "first); decode tok/s is then all jobs' tokens per second");

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

// A greedy job on `prompt_tokens` random ids, EOS ignored.
absl::StatusOr<std::unique_ptr<Job>> RandomJob(const ServedModel& loaded, std::mt19937* rng,
                                               int32_t index) {
  std::uniform_int_distribution<int32_t> dist(0,
                                              static_cast<int32_t>(loaded.config.vocab_size) - 1);
  std::vector<int32_t> prompt(absl::GetFlag(FLAGS_prompt_tokens));
  for (int32_t& id : prompt) id = dist(*rng);
  GenerationParams params;
  params.max_tokens = absl::GetFlag(FLAGS_gen_tokens);
  params.ignore_eos = true;
  params.sampling.temperature = 0;
  return Job::Create(absl::StrCat("bench-", index), prompt, params, loaded.model.get(),
                     loaded.tokenizer.get());
}

// Prefill in chunks of 512 until the job has sampled its first token.
absl::Status Prefill(const LlamaModel& model, Job& job) {
  while (job.completion_tokens() == 0 && !job.finished()) {
    absl::Span<const int32_t> input = job.NextInput(512);
    absl::StatusOr<at::Tensor> logits =
        model.Forward(input, job.next_pos(), job.cache(), false, job.decoding());
    if (!logits.ok()) return logits.status();
    if (job.ready_to_sample()) job.Accept(logits->data_ptr<float>());
  }
  return absl::OkStatus();
}

// Prompt and decode tokens per second of one greedy job on random ids.
absl::Status Measure(const ServedModel& loaded, std::mt19937* rng, double* prompt_rate,
                     double* decode_rate) {
  absl::StatusOr<std::unique_ptr<Job>> job = RandomJob(loaded, rng, 0);
  if (!job.ok()) return job.status();
  if (absl::Status s = RunJob(*loaded.model, **job, 512, [](const TokenEvent&) {}); !s.ok()) {
    return s;
  }
  *prompt_rate = absl::GetFlag(FLAGS_prompt_tokens) / ((*job)->ttft_ms() / 1000.0);
  *decode_rate = (*job)->decode_tokens_per_s();
  return absl::OkStatus();
}

// `batch` jobs, each prefilled alone, then decoded together: one ForwardBatch
// per step, as the worker's engine batches its running jobs. The prompt rate
// is the mean over the jobs' prefills; the decode rate counts every job's
// tokens after its first.
absl::Status MeasureBatch(const ServedModel& loaded, std::mt19937* rng, int32_t batch,
                          double* prompt_rate, double* decode_rate) {
  std::vector<std::unique_ptr<Job>> jobs;
  const auto prefill_start = std::chrono::steady_clock::now();
  for (int32_t i = 0; i < batch; ++i) {
    absl::StatusOr<std::unique_ptr<Job>> job = RandomJob(loaded, rng, i);
    if (!job.ok()) return job.status();
    if (absl::Status s = Prefill(*loaded.model, **job); !s.ok()) return s;
    jobs.push_back(*std::move(job));
  }
  const auto decode_start = std::chrono::steady_clock::now();
  *prompt_rate = batch * absl::GetFlag(FLAGS_prompt_tokens) /
                 std::chrono::duration<double>(decode_start - prefill_start).count();
  const int64_t vocab = loaded.config.vocab_size;
  int64_t generated = 0;
  while (true) {
    std::vector<ForwardItem> items;
    std::vector<Job*> running;
    for (const std::unique_ptr<Job>& job : jobs) {
      if (job->finished()) continue;
      items.push_back({job->NextInput(1), job->next_pos(), job->cache(), false, true});
      running.push_back(job.get());
    }
    if (items.empty()) break;
    absl::StatusOr<at::Tensor> logits = loaded.model->ForwardBatch(items);  // [jobs, vocab]
    if (!logits.ok()) return logits.status();
    // Each job's draw over the threads, then its token, as the engine does.
    std::vector<const float*> rows;
    for (size_t i = 0; i < running.size(); ++i) {
      rows.push_back(logits->data_ptr<float>() + i * vocab);
    }
    std::vector<std::exception_ptr> errors;
    std::vector<TokenChoice> choices = ChooseAll(running, rows, &errors);
    for (size_t i = 0; i < running.size(); ++i) {
      if (errors[i] != nullptr) std::rethrow_exception(errors[i]);
      running[i]->Accept(std::move(choices[i]));
      ++generated;
    }
  }
  *decode_rate = generated / std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                                           decode_start).count();
  return absl::OkStatus();
}

absl::Status Bench() {
  // What the process holds before the model: the baseline bench-local.sh
  // subtracts from the peak (libtorch's registry and what is left of its libraries).
  const absl::StatusOr<int64_t> resident_before_model = memory::ResidentBytes();
  if (!resident_before_model.ok()) return resident_before_model.status();
  const auto load_start = std::chrono::steady_clock::now();
  absl::StatusOr<ServedModel> loaded = LoadModel(LoadRequest());
  if (!loaded.ok()) return loaded.status();
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  if (absl::Status s = WarmUp(*loaded->model); !s.ok()) return s;
  std::mt19937 rng(1);
  const int32_t reps = absl::GetFlag(FLAGS_reps);
  std::vector<double> prompt_rates(reps), decode_rates(reps);
  const int32_t batch = absl::GetFlag(FLAGS_batch);
  for (int32_t rep = 0; rep < reps; ++rep) {
    absl::Status s = batch == 1 ? Measure(*loaded, &rng, &prompt_rates[rep], &decode_rates[rep])
                                : MeasureBatch(*loaded, &rng, batch, &prompt_rates[rep],
                                               &decode_rates[rep]);
    if (!s.ok()) return s;
  }
  json out = {{"engine", "llorch"},
              {"model", absl::GetFlag(FLAGS_model)},
              {"n_params", loaded->model->num_parameters()},
              {"threads", at::get_num_threads()},
              {"prompt_tokens", absl::GetFlag(FLAGS_prompt_tokens)},
              {"gen_tokens", absl::GetFlag(FLAGS_gen_tokens)},
              {"batch", batch},
              {"reps", reps},
              {"load_s", load_s},
              {"resident_before_model_bytes", *resident_before_model},
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
                          cli::FlagSpec("gen_tokens").AtLeast(2), cli::FlagSpec("reps").AtLeast(1),
                          cli::FlagSpec("batch").AtLeast(1)},
                         LoadFlags()},
                        &Bench);
}

}  // namespace tool
}  // namespace llorch
