#include "worker/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "worker/sampling/log_sum_exp.h"

namespace llorch {
namespace {

using Candidate = std::pair<float, int32_t>;  // (logit, token id)

// Higher logit first; among equal logits the lower id, so every ordering in
// this file is deterministic.
bool Better(const Candidate& a, const Candidate& b) {
  if (a.first != b.first) return a.first > b.first;
  return a.second < b.second;
}

// NaN logits would break the strict weak ordering above; treat them as masked.
float Sanitize(float logit) {
  return std::isnan(logit) ? -std::numeric_limits<float>::infinity() : logit;
}

// A uniform double in [0, 1) from the top 53 bits, so the same seed gives the
// same draws with any standard library (std::uniform_real_distribution's
// algorithm is implementation-defined).
double UniformUnit(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

// Sorts candidates[begin, end) so that its first min(count, end - begin)
// elements are the best of that range, in order.
void SortBestPrefix(std::vector<Candidate>& candidates, size_t begin,
                    size_t count) {
  const auto first = candidates.begin() + begin;
  const size_t size = candidates.size() - begin;
  if (count >= size) {
    std::sort(first, candidates.end(), Better);
    return;
  }
  std::nth_element(first, first + count, candidates.end(), Better);
  std::sort(first, first + count, Better);
}

// exp((logit - max_logit) / T) in float: ~3x faster than double exp over a
// 150k vocabulary, and 1e-7 relative error is far below sampling noise. Sums
// of these are accumulated in double.
double RelativeProb(float logit, double max_logit, double inv_temperature = 1.0) {
  return std::exp(static_cast<float>((logit - max_logit) * inv_temperature));
}

absl::Status InvalidField(const char* field, const char* requirement,
                          double value) {
  return absl::InvalidArgumentError(absl::StrCat(
      "sampling parameter ", field, " must be ", requirement, ", got ", value));
}

// Every (logit, id), NaN logits masked.
void CollectAll(const float* logits, int32_t vocab_size,
                std::vector<Candidate>& candidates) {
  candidates.resize(vocab_size);
  for (int32_t i = 0; i < vocab_size; ++i) {
    candidates[i] = {Sanitize(logits[i]), i};
  }
}

// The (logit, id) whose probability is at least min_p times the largest;
// empty when no logit reaches the threshold (the max is +-inf).
void CollectAboveMinP(const float* logits, int32_t vocab_size, float min_p,
                      std::vector<Candidate>& candidates) {
  float max_logit = -std::numeric_limits<float>::infinity();
  for (int32_t i = 0; i < vocab_size; ++i) {
    max_logit = std::max(max_logit, Sanitize(logits[i]));
  }
  const double threshold = max_logit + std::log(double{min_p});
  candidates.clear();
  for (int32_t i = 0; i < vocab_size; ++i) {
    if (logits[i] >= threshold) candidates.emplace_back(logits[i], i);
  }
}

double MaxCandidateLogit(const std::vector<Candidate>& candidates) {
  double max_logit = -std::numeric_limits<double>::infinity();
  for (const Candidate& c : candidates) {
    max_logit = std::max<double>(max_logit, c.first);
  }
  return max_logit;
}

// prob / max_prob = exp(logit - max_logit) >= min_p, in logit space; the
// max candidate always survives since min_p <= 1.
void RemoveBelowMinP(std::vector<Candidate>& candidates, double max_logit,
                     float min_p) {
  const double threshold = max_logit + std::log(double{min_p});
  auto below = [&](const Candidate& c) { return c.first < threshold; };
  candidates.erase(
      std::remove_if(candidates.begin(), candidates.end(), below),
      candidates.end());
}

}  // namespace

absl::Status ValidateSamplingParams(const SamplingParams& params) {
  // Comparisons are written so that NaN fails them.
  if (!(std::isfinite(params.temperature) && params.temperature >= 0.0f)) {
    return InvalidField("temperature", "finite and >= 0", params.temperature);
  }
  if (params.top_k < 0) {
    return InvalidField("top_k", ">= 0 (0 = off)", params.top_k);
  }
  if (!(params.top_p > 0.0f && params.top_p <= 1.0f)) {
    return InvalidField("top_p", "in (0, 1]", params.top_p);
  }
  if (!(params.min_p >= 0.0f && params.min_p <= 1.0f)) {
    return InvalidField("min_p", "in [0, 1]", params.min_p);
  }
  if (!(std::isfinite(params.repetition_penalty) &&
        params.repetition_penalty > 0.0f)) {
    return InvalidField("repetition_penalty", "finite and > 0",
                        params.repetition_penalty);
  }
  return absl::OkStatus();
}

uint64_t RandomSeed() {
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ device();
}

Sampler::Sampler(const SamplingParams& params) : params_(params) {
  if (!params_.seed.has_value()) params_.seed = RandomSeed();
  rng_.seed(*params_.seed);
}

const float* Sampler::ApplyRepetitionPenalty(
    const float* logits, int32_t vocab_size,
    const std::vector<int32_t>& history) {
  if (params_.repetition_penalty == 1.0f || history.empty()) return logits;
  penalized_.assign(logits, logits + vocab_size);
  distinct_history_.assign(history.begin(), history.end());
  std::sort(distinct_history_.begin(), distinct_history_.end());
  distinct_history_.erase(
      std::unique(distinct_history_.begin(), distinct_history_.end()),
      distinct_history_.end());
  const float penalty = params_.repetition_penalty;
  for (int32_t id : distinct_history_) {
    if (id < 0 || id >= vocab_size) continue;
    float& logit = penalized_[id];
    logit = logit > 0.0f ? logit / penalty : logit * penalty;
  }
  return penalized_.data();
}

void Sampler::SelectTopK(const float* logits, int32_t vocab_size,
                         int32_t k) {
  // Heap of the best k so far with the worst on top. Ids arrive in increasing
  // order, so a newcomer beats the top only with a strictly larger logit
  // (an equal logit with a higher id ranks lower). For random-order logits
  // only O(k log(V/k)) elements enter the heap.
  scratch_.clear();
  for (int32_t i = 0; i < k; ++i) scratch_.emplace_back(Sanitize(logits[i]), i);
  std::make_heap(scratch_.begin(), scratch_.end(), Better);
  for (int32_t i = k; i < vocab_size; ++i) {
    if (logits[i] > scratch_.front().first) {  // false for NaN
      std::pop_heap(scratch_.begin(), scratch_.end(), Better);
      scratch_.back() = {logits[i], i};
      std::push_heap(scratch_.begin(), scratch_.end(), Better);
    }
  }
}

size_t Sampler::NucleusSize(double max_logit) {
  double total = 0.0;
  for (const Candidate& c : scratch_) total += RelativeProb(c.first, max_logit);
  const double target = static_cast<double>(params_.top_p) * total;
  // The nucleus is the shortest prefix of the ranking whose mass reaches
  // target. Find its end by selection on mass instead of sorting:
  // invariant: [0, lo) is the best lo candidates (unordered, mass
  // `cumulative` < target) and the boundary lies in [lo, hi). Chunks grow
  // while the boundary is beyond them (a peaked distribution resolves in the
  // first chunk of 256) and shrink once it is inside one.
  size_t lo = 0;
  size_t hi = scratch_.size();
  size_t chunk = 256;
  double cumulative = 0.0;
  const auto at = [this](size_t i) { return scratch_.begin() + i; };
  while (hi - lo > 256) {
    const size_t size = std::min(chunk, (hi - lo) / 2);
    std::nth_element(at(lo), at(lo + size), at(hi), Better);
    double mass = 0.0;
    for (size_t i = lo; i < lo + size; ++i) {
      mass += RelativeProb(scratch_[i].first, max_logit);
    }
    if (cumulative + mass < target) {
      cumulative += mass;
      lo += size;
      chunk *= 4;
    } else {
      hi = lo + size;
      chunk = std::max<size_t>(256, size / 4);
    }
  }
  std::sort(at(lo), at(hi), Better);
  for (size_t i = lo; i < hi; ++i) {
    cumulative += RelativeProb(scratch_[i].first, max_logit);
    if (cumulative >= target) return i + 1;
  }
  return hi;  // rounding: everything up to hi
}

bool Sampler::CollectCandidates(const float* logits, int32_t vocab_size) {
  // No filter needs the survivors in order: they are selected by heap or
  // nth_element, never by sorting the whole vocabulary.
  const bool top_k_active =
      params_.top_k > 0 && params_.top_k < vocab_size;
  if (top_k_active && params_.top_k <= vocab_size / 8) {
    SelectTopK(logits, vocab_size, params_.top_k);
  } else if (!top_k_active && params_.top_p == 1.0f && params_.min_p > 0.0f) {
    // min-p alone is a logit threshold relative to the maximum: apply it
    // while collecting, so the draw sees only the survivors.
    CollectAboveMinP(logits, vocab_size, params_.min_p, scratch_);
    if (scratch_.empty()) return false;  // max is +-inf
  } else {
    CollectAll(logits, vocab_size, scratch_);
    if (top_k_active) {
      std::nth_element(scratch_.begin(), scratch_.begin() + params_.top_k,
                       scratch_.end(), Better);
      scratch_.resize(params_.top_k);
    }
  }
  return true;
}

int32_t Sampler::DrawFromSurvivors(double max_logit) {
  const double inv_temperature = 1.0 / params_.temperature;
  double total = 0.0;
  weights_.resize(scratch_.size());
  for (size_t i = 0; i < scratch_.size(); ++i) {
    weights_[i] = RelativeProb(scratch_[i].first, max_logit, inv_temperature);
    total += weights_[i];
  }
  const double threshold = UniformUnit(rng_) * total;
  double cumulative = 0.0;
  for (size_t i = 0; i < scratch_.size(); ++i) {
    cumulative += weights_[i];
    if (threshold < cumulative) return scratch_[i].second;
  }
  // Rounding (or total == 0 after underflow): fall back to the best survivor.
  size_t best = 0;
  for (size_t i = 1; i < scratch_.size(); ++i) {
    if (Better(scratch_[i], scratch_[best])) best = i;
  }
  return scratch_[best].second;
}

int32_t Sampler::Sample(const float* raw_logits, int32_t vocab_size,
                        const std::vector<int32_t>& history) {
  if (vocab_size <= 0) return -1;
  const float* logits = ApplyRepetitionPenalty(raw_logits, vocab_size, history);
  if (params_.temperature == 0.0f) return ArgmaxLogit(logits, vocab_size);

  // Filter chain in llama.cpp's default order: top-k, top-p, min-p on the
  // untempered logits, then temperature, then the draw. Temperature therefore
  // changes only the shape of the final distribution, never which tokens
  // survive the filters (Hugging Face instead scales first, so its top-p/min-p
  // sets depend on the temperature).
  if (!CollectCandidates(logits, vocab_size)) {
    return ArgmaxLogit(logits, vocab_size);
  }
  const double max_logit = MaxCandidateLogit(scratch_);
  if (std::isinf(max_logit)) {
    // All candidates masked (-inf), or an infinite logit takes all the mass:
    // the best candidate is the only sensible answer.
    return std::min_element(scratch_.begin(), scratch_.end(), Better)->second;
  }
  if (params_.top_p < 1.0f) {
    scratch_.resize(NucleusSize(max_logit));
  }
  if (params_.min_p > 0.0f) {
    RemoveBelowMinP(scratch_, max_logit, params_.min_p);
  }
  return DrawFromSurvivors(max_logit);
}

namespace {

// max and log(sum(exp(logit - max))) of the raw logits.
std::pair<double, double> LogSumExpParts(const float* logits,
                                         int32_t vocab_size) {
  const float max_logit = MaxLogit(logits, vocab_size);
  if (!std::isfinite(max_logit)) return {max_logit, 0.0};
  return {max_logit, LogSumExp(logits, vocab_size, max_logit)};
}

}  // namespace

float LogProbOf(const float* logits, int32_t vocab_size, int32_t id) {
  if (id < 0 || id >= vocab_size) {
    return -std::numeric_limits<float>::infinity();
  }
  const auto [max_logit, log_sum] = LogSumExpParts(logits, vocab_size);
  return static_cast<float>(Sanitize(logits[id]) - max_logit - log_sum);
}

std::vector<std::pair<int32_t, float>> TopLogProbs(const float* logits,
                                                   int32_t vocab_size, int k) {
  std::vector<std::pair<int32_t, float>> top;
  if (k <= 0 || vocab_size <= 0) return top;
  const size_t count = std::min<size_t>(k, vocab_size);
  const auto [max_logit, log_sum] = LogSumExpParts(logits, vocab_size);
  std::vector<Candidate> candidates(vocab_size);
  for (int32_t i = 0; i < vocab_size; ++i) {
    candidates[i] = {Sanitize(logits[i]), i};
  }
  SortBestPrefix(candidates, 0, count);
  top.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    top.emplace_back(candidates[i].second,
                     static_cast<float>(candidates[i].first - max_logit - log_sum));
  }
  return top;
}

}  // namespace llorch
