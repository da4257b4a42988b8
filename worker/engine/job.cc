#include "worker/engine/job.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <utility>

#include <ATen/Parallel.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace llorch {

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone: return "none";
    case FinishReason::kEos: return "eos";
    case FinishReason::kLength: return "length";
    case FinishReason::kStop: return "stop";
    case FinishReason::kCancelled: return "cancelled";
  }
  return "none";
}

absl::Status ValidateGenerationParams(const GenerationParams& params, int32_t vocab_size) {
  if (absl::Status s = ValidateSamplingParams(params.sampling); !s.ok()) return s;
  if (params.max_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens must be at least 1, got ", params.max_tokens));
  }
  if (params.top_logprobs < 0 || params.top_logprobs > 20) {
    return absl::InvalidArgumentError(
        absl::StrCat("logprobs must be in [0, 20], got ", params.top_logprobs));
  }
  for (int32_t id : params.stop_ids) {
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "stop_token_ids: id ", id, " is outside the vocabulary [0, ", vocab_size, ")"));
    }
  }
  for (const std::string& s : params.stop_strings) {
    if (s.empty()) return absl::InvalidArgumentError("stop strings must not be empty");
  }
  return absl::OkStatus();
}

int64_t Job::CacheCapacity(const ModelConfig& config, int64_t num_prompt, int32_t max_tokens) {
  return std::max<int64_t>(num_prompt,
                           std::min<int64_t>(config.context_length, num_prompt + max_tokens - 1));
}

absl::Status Job::Validate(const std::vector<int32_t>& prompt, const GenerationParams& params,
                           const ModelConfig& config) {
  const int32_t vocab_size = static_cast<int32_t>(config.vocab_size);
  if (absl::Status s = ValidateGenerationParams(params, vocab_size); !s.ok()) return s;
  if (prompt.empty()) return absl::InvalidArgumentError("prompt is empty");
  for (int32_t id : prompt) {
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token_ids: prompt token id ", id, " is outside the vocabulary [0, ", vocab_size, ")"));
    }
  }
  const int64_t num_prompt = static_cast<int64_t>(prompt.size());
  if (num_prompt >= config.context_length) {
    return absl::InvalidArgumentError(absl::StrCat("prompt of ", num_prompt,
                                                   " tokens does not fit the context length ",
                                                   config.context_length));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Job>> Job::Create(std::string job_id, std::vector<int32_t> prompt,
                                                 GenerationParams params, const LlamaModel* model,
                                                 const Tokenizer* tokenizer,
                                                 std::unique_ptr<KvCache> cache) {
  const ModelConfig& config = model->config();
  if (absl::Status s = Validate(prompt, params, config); !s.ok()) return s;
  const int64_t num_prompt = static_cast<int64_t>(prompt.size());
  std::unique_ptr<Job> job(new Job());
  job->job_id_ = std::move(job_id);
  job->params_ = std::move(params);
  job->model_ = model;
  job->tokenizer_ = tokenizer;
  job->tokens_ = std::move(prompt);
  job->num_prompt_tokens_ = static_cast<int32_t>(num_prompt);
  job->max_positions_ = CacheCapacity(config, num_prompt, job->params_.max_tokens);
  job->cache_ = cache != nullptr ? std::move(cache) : model->NewCache(job->max_positions_);
  job->sampler_ = std::make_unique<Sampler>(job->params_.sampling);
  job->detokenizer_ = std::make_unique<IncrementalDetokenizer>(tokenizer, job->tokens_);
  job->stop_matcher_ = std::make_unique<StopMatcher>(job->params_.stop_strings);
  job->start_time_ = std::chrono::steady_clock::now();
  return job;
}

absl::Span<const int32_t> Job::NextInput(int64_t max_tokens) const {
  if (finished()) return {};
  const int64_t begin = cache_->num_tokens();
  int64_t end = std::min<int64_t>(static_cast<int64_t>(tokens_.size()), begin + max_tokens);
  if (begin < num_prompt_tokens_) end = std::min<int64_t>(end, num_prompt_tokens_);
  return absl::MakeConstSpan(tokens_).subspan(begin, end - begin);
}

bool Job::ready_to_sample() const {
  return !finished() && cache_->num_tokens() == static_cast<int64_t>(tokens_.size());
}

TokenEvent Job::Accept(const float* logits) { return Accept(Choose(logits)); }

TokenChoice Job::Choose(const float* logits) {
  const int32_t vocab_size = static_cast<int32_t>(model_->config().vocab_size);
  TokenChoice choice;
  choice.id = sampler_->Sample(logits, vocab_size, tokens_);
  choice.logprob = LogProbOf(logits, vocab_size, choice.id);
  if (params_.top_logprobs > 0) {
    choice.top_logprobs = TopLogProbs(logits, vocab_size, params_.top_logprobs);
  }
  return choice;
}

TokenEvent Job::Accept(TokenChoice choice) {
  TokenEvent event;
  event.index = completion_tokens();
  event.id = choice.id;
  event.logprob = choice.logprob;
  event.top_logprobs = std::move(choice.top_logprobs);
  tokens_.push_back(event.id);
  const auto now = std::chrono::steady_clock::now();
  if (event.index == 0) first_token_time_ = now;
  last_token_time_ = now;

  const bool is_eos = !params_.ignore_eos && tokenizer_->IsEog(event.id);
  const bool is_stop_id = std::find(params_.stop_ids.begin(), params_.stop_ids.end(),
                                    event.id) != params_.stop_ids.end();
  if (!is_eos && !is_stop_id) {
    event.text = stop_matcher_->Push(detokenizer_->Push(event.id));
  }
  if (stop_matcher_->stopped() || is_stop_id) {
    finish_ = FinishReason::kStop;
  } else if (is_eos) {
    finish_ = FinishReason::kEos;
  } else if (completion_tokens() >= params_.max_tokens ||
             static_cast<int64_t>(tokens_.size()) > max_positions_) {
    // The cache cannot take this token: the context (or max_tokens) is used up.
    finish_ = FinishReason::kLength;
  }
  if (finish_ != FinishReason::kNone && finish_ != FinishReason::kStop) {
    // Release text held back for an incomplete character or a possible stop
    // string that never completed.
    event.text += stop_matcher_->Push(detokenizer_->Flush());
    if (!stop_matcher_->stopped()) event.text += stop_matcher_->Flush();
  } else if (finish_ == FinishReason::kStop && is_stop_id) {
    event.text += stop_matcher_->Push(detokenizer_->Flush());
    if (!stop_matcher_->stopped()) event.text += stop_matcher_->Flush();
  }
  event.finish = finish_;
  return event;
}

std::vector<TokenChoice> ChooseAll(absl::Span<Job* const> jobs,
                                   absl::Span<const float* const> logits,
                                   std::vector<std::exception_ptr>* errors) {
  const int64_t num_jobs = static_cast<int64_t>(jobs.size());
  std::vector<TokenChoice> choices(num_jobs);
  errors->assign(num_jobs, nullptr);
  // A draw is a few passes over the vocabulary: one job per task.
  at::parallel_for(0, num_jobs, /*grain_size=*/1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      try {
        choices[i] = jobs[i]->Choose(logits[i]);
      } catch (...) {
        (*errors)[i] = std::current_exception();
      }
    }
  });
  return choices;
}

absl::Status WarmUp(const LlamaModel& model) {
  std::unique_ptr<KvCache> cache = model.NewCache(2);
  const std::vector<int32_t> tokens = {0, 1};
  absl::StatusOr<at::Tensor> logits = model.Forward(tokens, 0, cache.get(), false);
  return logits.status();
}

double Job::ttft_ms() const {
  if (completion_tokens() == 0) return 0;
  return std::chrono::duration<double, std::milli>(first_token_time_ - start_time_).count();
}

double Job::decode_tokens_per_s() const {
  const int32_t n = completion_tokens();
  if (n < 2) return 0;
  const double seconds = std::chrono::duration<double>(last_token_time_ - first_token_time_).count();
  return seconds > 0 ? (n - 1) / seconds : 0;
}

}  // namespace llorch
