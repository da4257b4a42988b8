// Everything that belongs to one request: its tokens, its own KV cache and
// position, its sampler and RNG, its detokeniser and stop state. The model is
// shared and immutable; a Job is touched by one thread at a time.
#ifndef LLORCH_WORKER_ENGINE_JOB_H_
#define LLORCH_WORKER_ENGINE_JOB_H_

#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/model/kv_cache.h"
#include "worker/model/llama_model.h"
#include "worker/sampling/generation_defaults.h"
#include "worker/sampling/sampler.h"
#include "worker/sampling/stop_matcher.h"
#include "worker/tokenizer/tokenizer.h"

namespace llorch {

// Defaults: generation_defaults.h (shared with the CLI and the worker's API).
struct GenerationParams {
  SamplingParams sampling;
  int32_t max_tokens = kDefaultMaxTokens;  // >= 1
  std::vector<std::string> stop_strings;   // matched on decoded text, not emitted
  std::vector<int32_t> stop_ids;           // extra ids that end generation
  int32_t top_logprobs = 0;                // how many alternatives per token, 0..20
  bool ignore_eos = false;
};

// InvalidArgument naming the field.
absl::Status ValidateGenerationParams(const GenerationParams& params, int32_t vocab_size);

enum class FinishReason { kNone, kEos, kLength, kStop, kCancelled };
const char* FinishReasonName(FinishReason reason);  // "eos", "length", ...

// What a job draws from its logits: the token and its log-probabilities.
// Computing it reads the whole vocabulary but touches only the job's own
// sampler, so several jobs' choices can run on different threads.
struct TokenChoice {
  int32_t id = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top_logprobs;
};

struct TokenEvent {
  int32_t index = 0;  // 0-based position in the completion
  int32_t id = 0;
  std::string text;   // newly safe text (may be empty: held for UTF-8 or a stop string)
  float logprob = 0;  // log-softmax of the raw logits
  std::vector<std::pair<int32_t, float>> top_logprobs;
  FinishReason finish = FinishReason::kNone;  // set on the job's last token
};

class Job {
 public:
  // Validates and takes `cache`, or without one allocates a contiguous
  // cache of max_positions() (prompt + max_tokens, capped by the context
  // length). A given cache grows by blocks as its owner adds them.
  static absl::StatusOr<std::unique_ptr<Job>> Create(std::string job_id,
                                                     std::vector<int32_t> prompt,
                                                     GenerationParams params,
                                                     const LlamaModel* model,
                                                     const Tokenizer* tokenizer,
                                                     std::unique_ptr<KvCache> cache = nullptr);

  // KV positions a job needs: prompt + max_tokens - 1 (the last generated
  // token is never fed back), capped by the context length.
  static int64_t CacheCapacity(const ModelConfig& config, int64_t num_prompt, int32_t max_tokens);
  // Checks everything Create checks without allocating.
  static absl::Status Validate(const std::vector<int32_t>& prompt, const GenerationParams& params,
                               const ModelConfig& config);

  const std::string& job_id() const { return job_id_; }
  // The seed the job samples with: the requested one, else the random one
  // drawn at Create. The same prompt and params with it replay the job.
  uint64_t seed() const { return *sampler_->params().seed; }
  int32_t prompt_tokens() const { return num_prompt_tokens_; }
  // Positions the job may ever hold in its cache (CacheCapacity).
  int64_t max_positions() const { return max_positions_; }
  // Past the prompt: the next input is a generated token (ForwardItem::decode).
  bool decoding() const { return next_pos() >= num_prompt_tokens_; }
  // Prompt followed by the generated ids.
  const std::vector<int32_t>& tokens() const { return tokens_; }
  // Generated tokens whose keys and values are not in the cache beyond the
  // one fed next (a preempted job being recomputed).
  bool replaying() const {
    return decoding() && next_pos() + 1 < static_cast<int64_t>(tokens_.size());
  }
  int32_t completion_tokens() const { return static_cast<int32_t>(tokens_.size()) - num_prompt_tokens_; }
  KvCache* cache() { return cache_.get(); }
  bool finished() const { return finish_ != FinishReason::kNone; }
  FinishReason finish_reason() const { return finish_; }

  // Tokens not yet in the cache, at most `max_tokens` of them, starting at
  // absolute position next_pos(), never prompt and generated tokens
  // together. Empty when the job is finished.
  absl::Span<const int32_t> NextInput(int64_t max_tokens) const;
  int64_t next_pos() const { return cache_->num_tokens(); }
  // True once the cache holds every token: the last forward's logits predict
  // the next token, and Accept must be called with them.
  bool ready_to_sample() const;

  // Samples from `logits` (raw, `vocab` floats for the last position),
  // appends the token and updates the stop state: Accept(Choose(logits)).
  TokenEvent Accept(const float* logits);
  // The draw alone (the sampler's state advances; nothing else changes).
  TokenChoice Choose(const float* logits);
  // Appends a choice this job made and updates the stop state.
  TokenEvent Accept(TokenChoice choice);
  void Cancel() { finish_ = FinishReason::kCancelled; }
  // Forgets the cache's contents (its blocks were given back): the job
  // computes its prompt and the tokens it generated again, samples nothing
  // until it has caught up, and streams on from where it stopped.
  void Preempt() { cache_->Reset(); }

  double ttft_ms() const;
  double decode_tokens_per_s() const;

 private:
  Job() = default;

  std::string job_id_;
  GenerationParams params_;
  const LlamaModel* model_ = nullptr;
  const Tokenizer* tokenizer_ = nullptr;
  std::vector<int32_t> tokens_;  // prompt followed by generated ids
  int32_t num_prompt_tokens_ = 0;
  int64_t max_positions_ = 0;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<Sampler> sampler_;
  std::unique_ptr<IncrementalDetokenizer> detokenizer_;
  std::unique_ptr<StopMatcher> stop_matcher_;
  FinishReason finish_ = FinishReason::kNone;
  std::chrono::steady_clock::time_point start_time_, first_token_time_, last_token_time_;
};

// jobs[i]->Choose(logits[i]) for every job, the jobs spread over the
// intra-op threads. A draw that throws leaves its exception in errors[i]
// (errors is resized to the jobs; null where the draw succeeded).
std::vector<TokenChoice> ChooseAll(absl::Span<Job* const> jobs,
                                   absl::Span<const float* const> logits,
                                   std::vector<std::exception_ptr>* errors);

// Runs the model once on a throwaway job with its own cache, so that the first
// real request does not pay for lazy initialisation. Nothing is shared with
// later jobs.
absl::Status WarmUp(const LlamaModel& model);

// Runs a job alone until it finishes: chunked prefill (at most
// `prefill_chunk` tokens per forward), then one-token decode steps.
// `on_token` sees every token; the last one carries the finish reason.
template <typename Callback>
absl::Status RunJob(const LlamaModel& model, Job& job, int64_t prefill_chunk, Callback on_token) {
  while (!job.finished()) {
    absl::Span<const int32_t> input = job.NextInput(prefill_chunk);
    absl::StatusOr<at::Tensor> logits =
        model.Forward(input, job.next_pos(), job.cache(), false, job.decoding());
    if (!logits.ok()) return logits.status();
    if (job.ready_to_sample()) on_token(job.Accept(logits->template data_ptr<float>()));
  }
  return absl::OkStatus();
}

}  // namespace llorch

#endif  // LLORCH_WORKER_ENGINE_JOB_H_
