#include "worker/sampling/log_sum_exp.h"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace llorch {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// The definition, in double throughout (the sampler's earlier code).
double ReferenceLogSumExp(const std::vector<float>& logits, double max_logit) {
  double sum = 0.0;
  for (float logit : logits) {
    if (!std::isnan(logit)) sum += std::exp(static_cast<double>(logit) - max_logit);
  }
  return std::log(sum);
}

std::vector<float> NormalLogits(size_t n, float stddev, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> logits(n);
  for (float& logit : logits) logit = normal(rng);
  return logits;
}

// Greedy's definition: the first logit strictly above all before it.
int32_t ReferenceArgmax(const std::vector<float>& logits) {
  int32_t best = 0;
  float best_logit = -kInf;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (logits[i] > best_logit) best_logit = logits[i], best = static_cast<int32_t>(i);
  }
  return best;
}

TEST(LogSumExpTest, ArgmaxIsTheFirstLargestLogit) {
  for (size_t n : {1u, 7u, 8u, 9u, 17u, 1000u, 49152u}) {
    std::vector<float> logits = NormalLogits(n, 3.0f, static_cast<uint32_t>(n) + 1);
    const int32_t id = ReferenceArgmax(logits);
    EXPECT_EQ(ArgmaxLogit(logits.data(), n), id) << n;
    // Ties keep the lowest id, in the vector part and in the tail alike.
    for (size_t tie : {size_t{0}, n / 2, n - 1}) {
      std::vector<float> tied = logits;
      tied[tie] = tied[id];
      EXPECT_EQ(ArgmaxLogit(tied.data(), n), ReferenceArgmax(tied)) << n << " tie at " << tie;
    }
    // NaN never wins, +inf does, an all -inf or NaN row gives 0.
    std::vector<float> odd = logits;
    odd[n / 3] = kNaN;
    odd[n - 1] = kNaN;
    EXPECT_EQ(ArgmaxLogit(odd.data(), n), ReferenceArgmax(odd)) << n;
    odd[n / 2] = kInf;
    EXPECT_EQ(ArgmaxLogit(odd.data(), n), ReferenceArgmax(odd)) << n;
    std::vector<float> masked(n, -kInf);
    masked[n - 1] = kNaN;
    EXPECT_EQ(ArgmaxLogit(masked.data(), n), 0) << n;
  }
}

TEST(LogSumExpTest, MatchesDoubleDefinitionOverVocabularySizes) {
  // Sizes around the vector width and real vocabularies (SmolLM2 49152,
  // Llama 2 32000, Qwen2 151936), spread-out and peaked rows.
  for (size_t n : {1u, 7u, 8u, 9u, 17u, 1000u, 32000u, 49152u, 151936u}) {
    for (float stddev : {0.5f, 3.0f, 20.0f}) {
      std::vector<float> logits = NormalLogits(n, stddev, static_cast<uint32_t>(n));
      logits[n / 2] += 30.0f;
      float max_logit = -kInf;
      for (float logit : logits) max_logit = std::max(max_logit, logit);
      ASSERT_EQ(MaxLogit(logits.data(), n), max_logit) << n;
      EXPECT_NEAR(LogSumExp(logits.data(), n, max_logit), ReferenceLogSumExp(logits, max_logit),
                  1e-7)
          << "n " << n << " stddev " << stddev;
    }
  }
}

TEST(LogSumExpTest, NaNIsMaskedAndInfinitiesHold) {
  std::vector<float> logits = NormalLogits(37, 2.0f, 5);
  logits[3] = kNaN;
  logits[20] = kNaN;
  logits[36] = kNaN;  // the scalar tail
  logits[10] = -kInf;
  logits[11] = 9.0f;
  EXPECT_EQ(MaxLogit(logits.data(), logits.size()), 9.0f);
  const double expected = ReferenceLogSumExp(logits, 9.0);
  EXPECT_NEAR(LogSumExp(logits.data(), logits.size(), 9.0f), expected, 1e-6);

  const std::vector<float> nan_first = {kNaN, kNaN, kNaN, kNaN, kNaN, kNaN, kNaN, kNaN, 1.0f};
  EXPECT_EQ(MaxLogit(nan_first.data(), nan_first.size()), 1.0f);
  const std::vector<float> all_nan(16, kNaN);
  EXPECT_EQ(MaxLogit(all_nan.data(), all_nan.size()), -kInf);
  EXPECT_EQ(MaxLogit(nullptr, 0), -kInf);
  std::vector<float> with_inf(24, 0.0f);
  with_inf[17] = kInf;
  EXPECT_EQ(MaxLogit(with_inf.data(), with_inf.size()), kInf);
}

TEST(LogSumExpTest, HugeLogitsDoNotOverflow) {
  std::vector<float> logits(40, 990.0f);
  logits[0] = 1000.0f;
  logits[39] = 999.0f;
  const double expected = std::log(1.0 + std::exp(-1.0) + 38 * std::exp(-10.0));
  EXPECT_NEAR(LogSumExp(logits.data(), logits.size(), 1000.0f), expected, 1e-7);
}

}  // namespace
}  // namespace llorch
