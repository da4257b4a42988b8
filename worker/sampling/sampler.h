// Per-job token sampling: repetition penalty, temperature, top-k, top-p,
// min-p, then a draw from the job's own RNG (same seed, same tokens).
#ifndef LLORCH_WORKER_SAMPLING_SAMPLER_H_
#define LLORCH_WORKER_SAMPLING_SAMPLER_H_

#include <cstdint>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "worker/sampling/generation_defaults.h"

namespace llorch {

// Defaults and their rationale: generation_defaults.h.
struct SamplingParams {
  float temperature = kDefaultTemperature;  // 0 = greedy
  int32_t top_k = kDefaultTopK;             // 0 = off
  float top_p = kDefaultTopP;               // 1 = off
  float min_p = kDefaultMinP;               // 0 = off
  // 1 = off; HF semantics over prompt + output.
  float repetition_penalty = kDefaultRepetitionPenalty;
  // Absent: the Sampler draws a random one (RandomSeed), visible afterwards
  // in Sampler::params().seed, so the run can be replayed.
  std::optional<uint64_t> seed;
};

// A fresh seed from std::random_device (64 bits).
uint64_t RandomSeed();

// InvalidArgument naming the field for out-of-range values. Sampler assumes
// validated params.
absl::Status ValidateSamplingParams(const SamplingParams& params);

class Sampler {
 public:
  // Draws a random seed when `params` has none.
  explicit Sampler(const SamplingParams& params);

  // logits: raw model output for one position, `vocab_size` values.
  // history: prompt + generated ids so far (for the repetition penalty).
  // Order: repetition penalty; temperature 0 -> argmax (ties: lowest id);
  // otherwise top-k, top-p, min-p on the untempered logits, then temperature,
  // then a draw (llama.cpp's default chain; see sampler.cc).
  int32_t Sample(const float* logits, int32_t vocab_size,
                 const std::vector<int32_t>& history);

  // The params in use; `seed` is always set.
  const SamplingParams& params() const { return params_; }

 private:
  // Returns `logits` itself when no penalty applies, else penalized_.data().
  const float* ApplyRepetitionPenalty(const float* logits, int32_t vocab_size,
                                      const std::vector<int32_t>& history);

  // Fills scratch_ with the k best (logit, id), unordered.
  void SelectTopK(const float* logits, int32_t vocab_size, int32_t k);
  // Number of candidates top-p keeps; reorders scratch_ so that they come
  // first. max_logit: the largest logit in scratch_.
  size_t NucleusSize(double max_logit);
  // Fills scratch_ with the candidates top-p and min-p start from: top-k
  // applied, and min-p too when it is the only filter. False when none is
  // left (min-p alone and the max logit is +-inf).
  bool CollectCandidates(const float* logits, int32_t vocab_size);
  // Draws from softmax(logit / T) over scratch_ with rng_. max_logit: the
  // largest logit in scratch_.
  int32_t DrawFromSurvivors(double max_logit);

  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> scratch_;
  // Per-call buffers kept to avoid reallocating 150k-entry vectors per token.
  std::vector<float> penalized_;
  std::vector<int32_t> distinct_history_;
  std::vector<double> weights_;
};

// log-softmax of raw logits: the logprob of `id`, and the top `k` (id, logprob)
// pairs in descending order (ties by lower id).
float LogProbOf(const float* logits, int32_t vocab_size, int32_t id);
std::vector<std::pair<int32_t, float>> TopLogProbs(const float* logits,
                                                   int32_t vocab_size, int k);

}  // namespace llorch

#endif  // LLORCH_WORKER_SAMPLING_SAMPLER_H_
