#include "worker/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace llorch {
namespace {

// The expected values in these tests come from direct definitions (sorts,
// double-precision softmax) written independently of sampler.cc's partial
// sorts and chunked nucleus search.

std::vector<float> RandomLogits(int32_t vocab_size, uint64_t seed,
                                float stddev = 3.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> logits(vocab_size);
  for (float& l : logits) l = normal(rng);
  return logits;
}

std::vector<double> Softmax(const std::vector<float>& logits, double temperature) {
  const double max_logit = *std::max_element(logits.begin(), logits.end());
  std::vector<double> probs(logits.size());
  double total = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) {
    probs[i] = std::exp((logits[i] - max_logit) / temperature);
    total += probs[i];
  }
  for (double& p : probs) p /= total;
  return probs;
}

// Ids sorted by descending logit, ties by lower id (full sort).
std::vector<int32_t> RankedIds(const std::vector<float>& logits) {
  std::vector<int32_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  return ids;
}

std::vector<int32_t> Draw(Sampler& sampler, const std::vector<float>& logits,
                          int n, const std::vector<int32_t>& history = {}) {
  std::vector<int32_t> ids;
  ids.reserve(n);
  for (int i = 0; i < n; ++i) {
    ids.push_back(sampler.Sample(logits.data(), logits.size(), history));
  }
  return ids;
}

// Pearson chi-square statistic of observed counts against expected
// probabilities (categories with expected count 0 must have no draws).
double ChiSquare(const std::vector<int>& counts, const std::vector<double>& probs,
                 int draws) {
  double chi2 = 0.0;
  for (size_t i = 0; i < counts.size(); ++i) {
    const double expected = probs[i] * draws;
    if (expected == 0.0) {
      EXPECT_EQ(counts[i], 0) << "id " << i;
      continue;
    }
    chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  return chi2;
}

// Chi-square critical value at p = 1e-6 for up to 15 degrees of freedom is
// below 50; a correct sampler with a fixed seed stays far under it, a wrong
// distribution (e.g. temperature applied twice) lands in the thousands.
constexpr double kChiSquareLimit = 50.0;

TEST(ValidateSamplingParamsTest, AcceptsDefaultsAndEdges) {
  EXPECT_TRUE(ValidateSamplingParams(SamplingParams{}).ok());
  SamplingParams edges;
  edges.temperature = 0.0f;
  edges.top_k = 0;
  edges.top_p = 1.0f;
  edges.min_p = 1.0f;
  edges.repetition_penalty = 0.5f;
  EXPECT_TRUE(ValidateSamplingParams(edges).ok());
}

TEST(ValidateSamplingParamsTest, RejectsEachFieldByName) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  auto expect_invalid = [](const SamplingParams& params, const char* field) {
    const absl::Status status = ValidateSamplingParams(params);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_NE(status.message().find(field), absl::string_view::npos)
        << status.message();
  };
  for (float bad : {-0.1f, nan, inf}) {
    SamplingParams p;
    p.temperature = bad;
    expect_invalid(p, "temperature");
  }
  {
    SamplingParams p;
    p.top_k = -1;
    expect_invalid(p, "top_k");
  }
  for (float bad : {0.0f, -0.5f, 1.01f, nan}) {
    SamplingParams p;
    p.top_p = bad;
    expect_invalid(p, "top_p");
  }
  for (float bad : {-0.01f, 1.5f, nan}) {
    SamplingParams p;
    p.min_p = bad;
    expect_invalid(p, "min_p");
  }
  for (float bad : {0.0f, -1.0f, nan, inf}) {
    SamplingParams p;
    p.repetition_penalty = bad;
    expect_invalid(p, "repetition_penalty");
  }
}

TEST(ValidateSamplingParamsTest, MessageNamesTheValue) {
  SamplingParams p;
  p.top_p = 1.5f;
  EXPECT_NE(ValidateSamplingParams(p).message().find("1.5"),
            absl::string_view::npos);
}

TEST(SamplerTest, GreedyIsArgmax) {
  SamplingParams params;
  params.temperature = 0.0f;
  Sampler sampler(params);
  for (uint64_t seed = 0; seed < 50; ++seed) {
    const std::vector<float> logits = RandomLogits(5000, seed);
    const int32_t expected =
        std::max_element(logits.begin(), logits.end()) - logits.begin();
    EXPECT_EQ(sampler.Sample(logits.data(), logits.size(), {}), expected);
  }
}

TEST(SamplerTest, GreedyTiesGoToLowestId) {
  SamplingParams params;
  params.temperature = 0.0f;
  Sampler sampler(params);
  const std::vector<float> logits = {0.0f, 3.0f, -1.0f, 3.0f, 3.0f};
  EXPECT_EQ(sampler.Sample(logits.data(), logits.size(), {}), 1);
}

TEST(SamplerTest, DefaultsAreTheSharedGenerationDefaults) {
  const SamplingParams params;
  EXPECT_EQ(params.temperature, kDefaultTemperature);
  EXPECT_EQ(params.top_k, kDefaultTopK);
  EXPECT_EQ(params.top_p, kDefaultTopP);
  EXPECT_EQ(params.min_p, kDefaultMinP);
  EXPECT_EQ(params.repetition_penalty, kDefaultRepetitionPenalty);
  EXPECT_FALSE(params.seed.has_value());
}

// No seed: each sampler draws its own and exposes it; that seed replays it.
TEST(SamplerTest, UnseededSamplersDrawAReplayableSeed) {
  const std::vector<float> logits = RandomLogits(1000, 5, 0.1f);
  Sampler first{SamplingParams()}, second{SamplingParams()};
  ASSERT_TRUE(first.params().seed.has_value());
  ASSERT_TRUE(second.params().seed.has_value());
  EXPECT_NE(*first.params().seed, *second.params().seed);
  SamplingParams replay;
  replay.seed = first.params().seed;
  Sampler replayed(replay);
  const std::vector<int32_t> draws = Draw(first, logits, 50);
  EXPECT_EQ(Draw(replayed, logits, 50), draws);
  EXPECT_NE(Draw(second, logits, 50), draws);
}

TEST(SamplerTest, TopKOneIsGreedyAtAnyTemperature) {
  for (float temperature : {0.1f, 1.0f, 10.0f, 1000.0f}) {
    SamplingParams params;
    params.temperature = temperature;
    params.top_k = 1;
    params.seed = 7;
    Sampler sampler(params);
    for (uint64_t seed = 0; seed < 20; ++seed) {
      const std::vector<float> logits = RandomLogits(3000, 100 + seed);
      const int32_t expected =
          std::max_element(logits.begin(), logits.end()) - logits.begin();
      EXPECT_EQ(sampler.Sample(logits.data(), logits.size(), {}), expected)
          << "temperature " << temperature;
    }
  }
}

TEST(SamplerTest, TopKStaysWithinTheKBestAndMatchesRenormalisedSoftmax) {
  const std::vector<float> logits = RandomLogits(2000, 11, 1.0f);
  constexpr int kTopK = 12;
  const std::vector<int32_t> ranked = RankedIds(logits);
  const std::set<int32_t> best(ranked.begin(), ranked.begin() + kTopK);

  SamplingParams params;
  params.temperature = 1.5f;
  params.top_k = kTopK;
  params.seed = 3;
  Sampler sampler(params);
  constexpr int kDraws = 60000;
  std::vector<int> counts(logits.size(), 0);
  for (int32_t id : Draw(sampler, logits, kDraws)) {
    ASSERT_TRUE(best.count(id)) << "id " << id << " outside the top " << kTopK;
    ++counts[id];
  }
  // Expected: softmax(logit / T) restricted to the k best.
  std::vector<float> masked(logits.size(), -std::numeric_limits<float>::infinity());
  for (int32_t id : best) masked[id] = logits[id];
  EXPECT_LT(ChiSquare(counts, Softmax(masked, params.temperature), kDraws),
            kChiSquareLimit);
}

TEST(SamplerTest, TopKTiesGoToLowestIds) {
  // 1000 equal logits: the k best are ids 0..k-1. k = 5 takes the heap
  // selection, k = 400 the nth_element path.
  const std::vector<float> logits(1000, 0.5f);
  for (int32_t top_k : {5, 400}) {
    SamplingParams params;
    params.top_k = top_k;
    Sampler sampler(params);
    std::set<int32_t> seen;
    for (int32_t id : Draw(sampler, logits, 20 * top_k)) {
      ASSERT_LT(id, top_k);
      seen.insert(id);
    }
    EXPECT_GT(seen.size(), static_cast<size_t>(top_k) * 9 / 10);
  }
}

TEST(SamplerTest, TopKLargerThanVocabIsNoFilter) {
  const std::vector<float> logits = {1.0f, 0.5f, 0.0f};
  SamplingParams params;
  params.top_k = 100;
  params.seed = 5;
  Sampler sampler(params);
  constexpr int kDraws = 30000;
  std::vector<int> counts(logits.size(), 0);
  for (int32_t id : Draw(sampler, logits, kDraws)) ++counts[id];
  EXPECT_LT(ChiSquare(counts, Softmax(logits, 1.0), kDraws), kChiSquareLimit);
}

TEST(SamplerTest, TopPKeepsOnlyTheNucleus) {
  // Probabilities 0.4, 0.3, 0.2, 0.1: the nucleus for p = 0.65 is the first
  // two (0.4 < 0.65 <= 0.7), for p = 0.75 the first three.
  const std::vector<float> logits = {std::log(0.2f), std::log(0.4f),
                                     std::log(0.1f), std::log(0.3f)};
  for (float top_p : {0.65f, 0.75f, 0.3f}) {
    // Nucleus from the definition: smallest prefix of the ranking whose
    // cumulative probability reaches p.
    const std::vector<double> probs = Softmax(logits, 1.0);
    const std::vector<int32_t> ranked = RankedIds(logits);
    std::vector<float> masked(logits.size(), -std::numeric_limits<float>::infinity());
    double cumulative = 0.0;
    for (int32_t id : ranked) {
      masked[id] = logits[id];
      cumulative += probs[id];
      if (cumulative >= top_p) break;
    }
    SamplingParams params;
    params.top_p = top_p;
    params.temperature = 0.8f;
    params.seed = 17;
    Sampler sampler(params);
    constexpr int kDraws = 40000;
    std::vector<int> counts(logits.size(), 0);
    for (int32_t id : Draw(sampler, logits, kDraws)) ++counts[id];
    EXPECT_LT(ChiSquare(counts, Softmax(masked, params.temperature), kDraws),
              kChiSquareLimit)
        << "top_p " << top_p;
  }
}

TEST(SamplerTest, TopPOnLargeVocabularyStaysInNucleus) {
  // A flat-ish 150k vocabulary: the nucleus spans tens of thousands of tokens,
  // which exercises the chunked partial sort well past its first chunk.
  const std::vector<float> logits = RandomLogits(150000, 21, 1.0f);
  const std::vector<double> probs = Softmax(logits, 1.0);
  const std::vector<int32_t> ranked = RankedIds(logits);
  for (float top_p : {0.01f, 0.3f, 0.9f}) {
    double cumulative = 0.0;
    size_t nucleus_size = 0;
    while (cumulative < top_p) cumulative += probs[ranked[nucleus_size++]];
    const float threshold_logit = logits[ranked[nucleus_size - 1]];

    SamplingParams params;
    params.top_p = top_p;
    params.temperature = 5.0f;  // flattens the draw so rare members show up
    params.seed = 99;
    Sampler sampler(params);
    float lowest_drawn = std::numeric_limits<float>::infinity();
    for (int32_t id : Draw(sampler, logits, 400)) {
      ASSERT_GE(logits[id], threshold_logit) << "top_p " << top_p;
      lowest_drawn = std::min(lowest_drawn, logits[id]);
    }
    // The filter is not trivially tighter than the nucleus: draws reach the
    // bottom part of it.
    const float median_nucleus_logit = logits[ranked[nucleus_size / 2]];
    EXPECT_LE(lowest_drawn, median_nucleus_logit) << "top_p " << top_p;
  }
}

TEST(SamplerTest, TinyTopPIsGreedy) {
  SamplingParams params;
  params.top_p = 1e-6f;
  params.temperature = 100.0f;
  Sampler sampler(params);
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const std::vector<float> logits = RandomLogits(1000, 300 + seed);
    const int32_t expected =
        std::max_element(logits.begin(), logits.end()) - logits.begin();
    EXPECT_EQ(sampler.Sample(logits.data(), logits.size(), {}), expected);
  }
}

TEST(SamplerTest, MinPDropsTokensBelowFractionOfMaxProb) {
  const std::vector<float> logits = RandomLogits(500, 31, 1.5f);
  const std::vector<double> probs = Softmax(logits, 1.0);
  const double max_prob = *std::max_element(probs.begin(), probs.end());
  // top_p just below 1 keeps every min-p survivor here but takes the general
  // path instead of the min-p-only prefilter.
  for (float top_p : {1.0f, 0.99999f})
  for (float min_p : {0.05f, 0.3f, 0.9f}) {
    std::vector<float> masked(logits.size(), -std::numeric_limits<float>::infinity());
    for (size_t i = 0; i < logits.size(); ++i) {
      if (probs[i] >= min_p * max_prob) masked[i] = logits[i];
    }
    SamplingParams params;
    params.min_p = min_p;
    params.top_p = top_p;
    params.temperature = 2.0f;
    params.seed = 8;
    Sampler sampler(params);
    constexpr int kDraws = 40000;
    std::vector<int> counts(logits.size(), 0);
    for (int32_t id : Draw(sampler, logits, kDraws)) ++counts[id];
    // ChiSquare also fails on any draw of a dropped token.
    std::vector<double> expected = Softmax(masked, params.temperature);
    int categories = 0;
    for (double p : expected) categories += p > 0.0;
    // Many small categories: compare per degree of freedom.
    EXPECT_LT(ChiSquare(counts, expected, kDraws) / std::max(categories - 1, 1),
              3.0)
        << "min_p " << min_p << " top_p " << top_p << " kept " << categories;
  }
}

TEST(SamplerTest, MinPOneIsGreedy) {
  SamplingParams params;
  params.min_p = 1.0f;
  params.temperature = 50.0f;
  Sampler sampler(params);
  const std::vector<float> logits = RandomLogits(1000, 41);
  const int32_t expected =
      std::max_element(logits.begin(), logits.end()) - logits.begin();
  for (int32_t id : Draw(sampler, logits, 200)) EXPECT_EQ(id, expected);
}

TEST(SamplerTest, RepetitionPenaltyDividesPositiveAndMultipliesNegative) {
  SamplingParams params;
  params.temperature = 0.0f;
  params.repetition_penalty = 1.5f;
  Sampler sampler(params);
  {
    // Positive: 2.0 / 1.5 = 1.33 < 1.4, so the repeated token loses.
    const std::vector<float> logits = {2.0f, 1.4f, 0.0f};
    EXPECT_EQ(sampler.Sample(logits.data(), logits.size(), {}), 0);
    EXPECT_EQ(sampler.Sample(logits.data(), logits.size(), {0}), 1);
    // ... but wins against 1.3.
    const std::vector<float> close = {2.0f, 1.3f, 0.0f};
    EXPECT_EQ(sampler.Sample(close.data(), close.size(), {0}), 0);
  }
  {
    // Negative: -1.0 * 1.5 = -1.5 < -1.4. Dividing would make it -0.67 and
    // keep it on top.
    const std::vector<float> logits = {-1.0f, -1.4f, -3.0f};
    EXPECT_EQ(sampler.Sample(logits.data(), logits.size(), {}), 0);
    EXPECT_EQ(sampler.Sample(logits.data(), logits.size(), {0}), 1);
  }
}

TEST(SamplerTest, RepetitionPenaltyAppliesOncePerDistinctId) {
  SamplingParams params;
  params.temperature = 0.0f;
  params.repetition_penalty = 1.5f;
  Sampler sampler(params);
  // Once: 2.0 / 1.5 = 1.33 > 1.2. Twice would be 0.89 < 1.2.
  const std::vector<float> logits = {2.0f, 1.2f};
  EXPECT_EQ(sampler.Sample(logits.data(), logits.size(), {0, 0, 0}), 0);
  // Out-of-range ids in the history are ignored.
  EXPECT_EQ(sampler.Sample(logits.data(), logits.size(), {-1, 7}), 0);
}

TEST(SamplerTest, RepetitionPenaltyShiftsSampledFrequencies) {
  const std::vector<float> logits = {1.0f, 0.5f, -0.5f, 2.0f};
  const std::vector<int32_t> history = {3, 2, 3};
  SamplingParams params;
  params.repetition_penalty = 1.3f;
  params.temperature = 0.7f;
  params.seed = 1234;
  Sampler sampler(params);
  std::vector<float> penalized = logits;
  penalized[3] = 2.0f / 1.3f;
  penalized[2] = -0.5f * 1.3f;
  constexpr int kDraws = 40000;
  std::vector<int> counts(logits.size(), 0);
  for (int32_t id : Draw(sampler, logits, kDraws, history)) ++counts[id];
  EXPECT_LT(ChiSquare(counts, Softmax(penalized, params.temperature), kDraws),
            kChiSquareLimit);
}

TEST(SamplerTest, TemperatureMatchesSoftmaxFrequencies) {
  const std::vector<float> logits = {0.3f, -1.2f, 2.0f, 0.9f, 0.0f, -0.4f, 1.5f, -2.5f};
  for (float temperature : {0.25f, 0.7f, 1.0f, 2.5f}) {
    SamplingParams params;
    params.temperature = temperature;
    params.seed = 42;
    Sampler sampler(params);
    constexpr int kDraws = 100000;
    std::vector<int> counts(logits.size(), 0);
    for (int32_t id : Draw(sampler, logits, kDraws)) ++counts[id];
    const std::vector<double> expected = Softmax(logits, temperature);
    EXPECT_LT(ChiSquare(counts, expected, kDraws), kChiSquareLimit)
        << "temperature " << temperature;
    // A wrong temperature is far off: the same counts against T^2 fail.
    EXPECT_GT(ChiSquare(counts, Softmax(logits, temperature * temperature + 0.5),
                        kDraws),
              kChiSquareLimit);
  }
}

TEST(SamplerTest, FiltersUseUntemperedLogits) {
  // llama.cpp order: top-p on the raw distribution {0.6, 0.3, 0.1} with
  // p = 0.5 keeps only token 0, however flat the temperature makes the draw.
  // (Temperature first, as Hugging Face does, would keep all three.)
  const std::vector<float> logits = {std::log(0.6f), std::log(0.3f), std::log(0.1f)};
  SamplingParams params;
  params.top_p = 0.5f;
  params.temperature = 1000.0f;
  Sampler sampler(params);
  for (int32_t id : Draw(sampler, logits, 500)) EXPECT_EQ(id, 0);
}

TEST(SamplerTest, TopKThenTopPRenormalisesOverTopK) {
  // Raw probabilities ~ {0.3, 0.25, 0.2, 0.15, 0.1}. After top-k = 2 the
  // renormalised pair is {0.545, 0.455}: top-p = 0.5 keeps only token 0.
  // Over the full vocabulary it would keep tokens 0 and 1 (0.3 < 0.5 <= 0.55).
  const std::vector<float> logits = {std::log(0.3f), std::log(0.25f), std::log(0.2f),
                                     std::log(0.15f), std::log(0.1f)};
  SamplingParams params;
  params.top_k = 2;
  params.top_p = 0.5f;
  Sampler sampler(params);
  for (int32_t id : Draw(sampler, logits, 500)) EXPECT_EQ(id, 0);
}

TEST(SamplerTest, MaskedTokensAreNeverDrawn) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const std::vector<float> logits = {neg_inf, 0.0f, neg_inf, 0.0f, neg_inf};
  SamplingParams params;
  params.temperature = 3.0f;
  Sampler sampler(params);
  std::set<int32_t> seen;
  for (int32_t id : Draw(sampler, logits, 1000)) seen.insert(id);
  EXPECT_EQ(seen, (std::set<int32_t>{1, 3}));
}

TEST(SamplerTest, SameSeedSameSequenceDifferentSeedDifferent) {
  const std::vector<float> logits = RandomLogits(1000, 51, 1.0f);
  SamplingParams params;
  params.top_k = 50;
  params.top_p = 0.95f;
  params.seed = 2024;
  Sampler first(params);
  Sampler second(params);
  const std::vector<int32_t> a = Draw(first, logits, 200);
  const std::vector<int32_t> b = Draw(second, logits, 200);
  EXPECT_EQ(a, b);
  params.seed = 2025;
  Sampler other(params);
  EXPECT_NE(Draw(other, logits, 200), a);
}

TEST(LogProbTest, MatchesDirectLogSoftmax) {
  const std::vector<float> logits = RandomLogits(4000, 61);
  const std::vector<double> probs = Softmax(logits, 1.0);
  for (int32_t id : {0, 17, 1999, 3999}) {
    EXPECT_NEAR(LogProbOf(logits.data(), logits.size(), id), std::log(probs[id]),
                1e-5);
  }
}

TEST(LogProbTest, StableForHugeLogits) {
  // exp(1000) overflows float and double without max subtraction.
  const std::vector<float> logits = {1000.0f, 999.0f, 990.0f};
  const double log_sum = std::log(1.0 + std::exp(-1.0) + std::exp(-10.0));
  EXPECT_NEAR(LogProbOf(logits.data(), 3, 0), -log_sum, 1e-6);
  EXPECT_NEAR(LogProbOf(logits.data(), 3, 2), -10.0 - log_sum, 1e-5);
  const std::vector<float> negative = {-1000.0f, -1001.0f};
  EXPECT_NEAR(LogProbOf(negative.data(), 2, 1),
              -1.0 - std::log(1.0 + std::exp(-1.0)), 1e-6);
}

TEST(LogProbTest, TopLogProbsSortedWithTiesByLowerId) {
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f, 0.5f};
  const auto top = TopLogProbs(logits.data(), logits.size(), 4);
  ASSERT_EQ(top.size(), 4u);
  const std::vector<int32_t> ranked = RankedIds(logits);  // stable: lower id first
  for (size_t i = 0; i < top.size(); ++i) {
    EXPECT_EQ(top[i].first, ranked[i]);
    EXPECT_FLOAT_EQ(top[i].second,
                    LogProbOf(logits.data(), logits.size(), top[i].first));
  }
  EXPECT_EQ(TopLogProbs(logits.data(), logits.size(), 100).size(), logits.size());
  EXPECT_TRUE(TopLogProbs(logits.data(), logits.size(), 0).empty());
}

TEST(LogProbTest, TopLogProbsSumToOneOverVocabulary) {
  const std::vector<float> logits = RandomLogits(3000, 71);
  const auto all = TopLogProbs(logits.data(), logits.size(), logits.size());
  double total = 0.0;
  for (const auto& [id, logprob] : all) total += std::exp(static_cast<double>(logprob));
  EXPECT_NEAR(total, 1.0, 1e-5);
  const std::vector<int32_t> ranked = RankedIds(logits);
  for (size_t i = 0; i < 100; ++i) EXPECT_EQ(all[i].first, ranked[i]);
}

}  // namespace
}  // namespace llorch
