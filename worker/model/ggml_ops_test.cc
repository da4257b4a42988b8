// Properties of the ggml-order float ops. Bit-exactness against llama.cpp
// itself is tests/conformance/llamacpp_bitexact.py (logits of a real model);
// here: accuracy against double-precision references, the vector and scalar
// paths giving the same bits, and the attention orders' invariants.
#include "worker/model/ggml_ops.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "common/float_bits.h"
#include "worker/model/prepared_scores.h"

namespace llorch {
namespace {

std::vector<float> RandomVector(std::mt19937& rng, size_t n, float scale = 1.0f) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

uint32_t Bits(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return bits;
}

constexpr GgmlVariant kVariants[] = {GgmlVariant::kAvx2, GgmlVariant::kAvx512};

TEST(GgmlOpsTest, ExpIsAccurateAndSaturatesInEachVariant) {
  for (GgmlVariant variant : kVariants) {
    SCOPED_TRACE(GgmlVariantName(variant));
    auto exp = [variant](float x) { return GgmlExpf(x, variant); };
    EXPECT_EQ(exp(0.0f), 1.0f);
    EXPECT_EQ(exp(-std::numeric_limits<float>::infinity()), 0.0f);
    EXPECT_EQ(exp(-200.0f), 0.0f);
    EXPECT_EQ(exp(200.0f), std::numeric_limits<float>::infinity());
    EXPECT_TRUE(std::isnan(exp(std::numeric_limits<float>::quiet_NaN())));
    // ggml documents at most 1.45 ulp + 0.5 over the normal range; allow 3 ulp.
    for (float x = -87.0f; x < 88.0f; x += 0.0137f) {
      const double exact = std::exp(static_cast<double>(x));
      const double ulp = std::ldexp(1.0, std::ilogb(exact) - 23);
      ASSERT_LE(std::abs(exp(x) - exact), 3 * ulp) << "x=" << x;
    }
    // Subnormal results: the AVX-512 exp rounds once (_mm512_scalef_ps), the
    // AVX2 one may round twice (one more subnormal ulp).
    const double extra = variant == GgmlVariant::kAvx512 ? 0.0 : std::ldexp(1.0, -149);
    for (float x = -103.0f; x < -87.0f; x += 0.01f) {
      const double exact = std::exp(static_cast<double>(x));
      ASSERT_LE(std::abs(exp(x) - exact), 2 * std::ldexp(1.0, -149) + extra + 3e-7 * exact) << x;
    }
  }
}

TEST(GgmlOpsTest, VariantsHaveDifferentExps) {
  // Not the same function under two names: they part in the last bit often.
  int differ = 0, total = 0;
  for (float x = -20.0f; x < 20.0f; x += 0.001f, ++total) {
    differ += GgmlExpf(x, GgmlVariant::kAvx2) != GgmlExpf(x, GgmlVariant::kAvx512);
  }
  EXPECT_GT(differ, total / 20) << differ << " of " << total;
}

TEST(GgmlOpsTest, VariantNamesRoundTrip) {
  for (GgmlVariant variant : kVariants) {
    absl::StatusOr<GgmlVariant> parsed = ParseGgmlVariant(GgmlVariantName(variant));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, variant);
  }
  EXPECT_FALSE(ParseGgmlVariant("avx").ok());
  EXPECT_FALSE(ParseGgmlVariant("").ok());
  absl::StatusOr<GgmlVariant> amx = ParseGgmlVariant("amx");
  ASSERT_TRUE(amx.ok());
  EXPECT_STREQ(GgmlVariantName(*amx), "amx");
}

// ggml's AMX library differs from its other AVX-512 ones only in the
// quantised products: its float loops are 16 lanes wide.
TEST(GgmlOpsTest, AmxVariantRunsTheAvx512FloatLoops) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  const int64_t n = 1000;
  std::vector<float> gate(n), up(n);
  for (int64_t i = 0; i < n; ++i) {
    gate[i] = normal(rng);
    up[i] = normal(rng);
  }
  std::vector<float> avx512(n), amx(n);
  GgmlSwiglu(gate.data(), up.data(), n, GgmlVariant::kAvx512, avx512.data());
  GgmlSwiglu(gate.data(), up.data(), n, GgmlVariant::kAmx, amx.data());
  EXPECT_EQ(0, std::memcmp(avx512.data(), amx.data(), n * sizeof(float)));
  for (float x : gate) {
    EXPECT_EQ(GgmlExpf(x, GgmlVariant::kAmx), GgmlExpf(x, GgmlVariant::kAvx512)) << x;
  }
}

TEST(GgmlOpsTest, SwigluVectorAndScalarPathsAgreeBitForBit) {
  // Register-wide chunks take the vector path (where built), the tail plain
  // expf; recomputing element by element with GgmlExpf must give the same
  // bits. n = 1532: a tail of 12 in the AVX-512 order, 4 in the AVX2 order.
  for (GgmlVariant variant : kVariants) {
    SCOPED_TRACE(GgmlVariantName(variant));
    std::mt19937 rng(1);
    const int64_t n = 1532, lanes = variant == GgmlVariant::kAvx512 ? 16 : 8;
    std::vector<float> gate = RandomVector(rng, n, 4.0f), up = RandomVector(rng, n);
    gate[3] = 90.0f;   // exp(-x) underflows to 0 in ggml's exp
    gate[5] = -95.0f;  // exp(-x) overflows to inf: silu = -0
    gate[6] = 88.0f;   // exp(-x) subnormal: the AVX2 exp's second path
    std::vector<float> out(n);
    GgmlSwiglu(gate.data(), up.data(), n, variant, out.data());
    for (int64_t i = 0; i < n; ++i) {
      const float e = i < n / lanes * lanes ? GgmlExpf(0.0f - gate[i], variant) : std::exp(-gate[i]);
      const float expected = (gate[i] / (1.0f + e)) * up[i];
      ASSERT_EQ(Bits(out[i]), Bits(expected)) << i;
      const double silu = gate[i] / (1.0 + std::exp(-static_cast<double>(gate[i])));
      ASSERT_NEAR(out[i], silu * up[i], 1e-5 * (1 + std::abs(silu * up[i]))) << i;
    }
  }
}

TEST(GgmlOpsTest, RmsNormMatchesDoubleReference) {
  std::mt19937 rng(2);
  const int64_t rows = 3, dim = 576;
  std::vector<float> x = RandomVector(rng, rows * dim, 3.0f), out(rows * dim);
  GgmlRmsNorm(x.data(), rows, dim, 1e-5f, out.data());
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0;
    for (int64_t i = 0; i < dim; ++i) sum += double(x[r * dim + i]) * x[r * dim + i];
    const double scale = 1.0 / std::sqrt(sum / dim + 1e-5);
    for (int64_t i = 0; i < dim; ++i) {
      ASSERT_NEAR(out[r * dim + i], x[r * dim + i] * scale, 1e-6 * (1 + std::abs(out[r * dim + i])));
    }
  }
}

TEST(GgmlOpsTest, RopeRotatesPairsInEitherLayoutAndCopiesTheRest) {
  std::mt19937 rng(3);
  const int64_t head_dim = 80, pairs = 16;  // partial rotary: 32 of 80 dimensions
  std::vector<float> x = RandomVector(rng, head_dim), cos(pairs), sin(pairs), out(head_dim);
  for (int64_t i = 0; i < pairs; ++i) {
    cos[i] = std::cos(0.3f * (i + 1));
    sin[i] = std::sin(0.3f * (i + 1));
  }
  for (bool adjacent : {true, false}) {
    GgmlRopeHead(x.data(), cos.data(), sin.data(), pairs, adjacent, head_dim, out.data());
    for (int64_t i = 0; i < pairs; ++i) {
      const int64_t a = adjacent ? 2 * i : i, b = adjacent ? 2 * i + 1 : i + pairs;
      EXPECT_NEAR(out[a], double(x[a]) * cos[i] - double(x[b]) * sin[i], 1e-6);
      EXPECT_NEAR(out[b], double(x[a]) * sin[i] + double(x[b]) * cos[i], 1e-6);
    }
    for (int64_t i = 2 * pairs; i < head_dim; ++i) EXPECT_EQ(out[i], x[i]);
  }
}

// Softmax attention of one query in double.
std::vector<double> ReferenceAttention(const std::vector<float>& q, const std::vector<float>& k,
                                       const std::vector<float>& v, int64_t head_dim,
                                       int64_t first, int64_t last, double scale) {
  std::vector<double> scores;
  double max_score = -INFINITY;
  for (int64_t j = first; j <= last; ++j) {
    double dot = 0;
    for (int64_t d = 0; d < head_dim; ++d) dot += double(q[d]) * k[j * head_dim + d];
    scores.push_back(dot * scale);
    max_score = std::max(max_score, scores.back());
  }
  double total = 0;
  for (double& s : scores) total += (s = std::exp(s - max_score));
  std::vector<double> out(head_dim, 0.0);
  for (int64_t j = first; j <= last; ++j) {
    for (int64_t d = 0; d < head_dim; ++d) {
      out[d] += scores[j - first] / total * v[j * head_dim + d];
    }
  }
  return out;
}

TEST(GgmlOpsTest, AttentionMatchesDoubleReferenceInBothOrdersOfEachVariant) {
  for (GgmlVariant variant : kVariants) {
    SCOPED_TRACE(GgmlVariantName(variant));
    const int64_t lanes = variant == GgmlVariant::kAvx512 ? 16 : 8;
    std::mt19937 rng(4);
    for (int64_t head_dim : {16, 64, 80}) {
      for (int64_t last : {0, 5, 7, 15, 16, 70, 300}) {
        for (int64_t first : {int64_t{0}, last / 3}) {
          const std::vector<float> q = RandomVector(rng, head_dim, 2.0f);
          const std::vector<float> k = RandomVector(rng, (last + 1) * head_dim);
          const std::vector<float> v = RandomVector(rng, (last + 1) * head_dim);
          const float scale = 1.0f / std::sqrt(float(head_dim));
          const std::vector<double> expected =
              ReferenceAttention(q, k, v, head_dim, first, last, scale);
          std::vector<float> batch(head_dim), one(head_dim), scratch(last + 1);
          GgmlAttendRow(q.data(), k.data(), v.data(), head_dim, first, last, scale, false,
                        variant, scratch.data(), batch.data());
          GgmlAttendRow(q.data(), k.data(), v.data(), head_dim, first, last, scale, true,
                        variant, scratch.data(), one.data());
          for (int64_t d = 0; d < head_dim; ++d) {
            ASSERT_NEAR(batch[d], expected[d], 2e-6) << head_dim << " " << first << ".." << last;
            ASSERT_NEAR(one[d], expected[d], 2e-6) << head_dim << " " << first << ".." << last;
            // Up to one register of keys each lane holds one product in
            // either order, and only the final reduction differs: with a
            // single visible key both give that key's value exactly.
            if (first == last) ASSERT_EQ(Bits(batch[d]), Bits(one[d]));
            if (last < lanes && variant == GgmlVariant::kAvx512) {
              ASSERT_EQ(Bits(batch[d]), Bits(one[d]));
            }
          }
        }
      }
    }
  }
}

// The AVX2 order's sums as the 8-lane registers of ggml's AVX2 library form
// them, written out here independently: scores by four 8-lane accumulators
// folded and hadd-reduced; softmax and tinyBLAS sums by halves, movehl,
// movehdup. A value-sum over 8 keys in batch order, checked element by
// element against that hand evaluation.
TEST(GgmlOpsTest, Avx2BatchOrderSumsEightKeysAsTinyBlasHsum) {
  std::mt19937 rng(5);
  const int64_t head_dim = 4, last = 7;
  const std::vector<float> q = RandomVector(rng, head_dim);
  const std::vector<float> k = RandomVector(rng, (last + 1) * head_dim);
  const std::vector<float> v = RandomVector(rng, (last + 1) * head_dim);
  std::vector<float> scratch(last + 1), out(head_dim);
  GgmlAttendRow(q.data(), k.data(), v.data(), head_dim, 0, last, 1.0f, false, GgmlVariant::kAvx2,
                scratch.data(), out.data());
  // scratch now holds the probabilities; each lane l holds p_l * v_l once.
  for (int64_t d = 0; d < head_dim; ++d) {
    float x[8];
    for (int l = 0; l < 8; ++l) x[l] = scratch[l] * v[l * head_dim + d];
    const float expected = ((x[0] + x[4]) + (x[2] + x[6])) + ((x[1] + x[5]) + (x[3] + x[7]));
    ASSERT_EQ(Bits(out[d]), Bits(expected)) << d;
  }
  GgmlAttendRow(q.data(), k.data(), v.data(), head_dim, 0, last, 1.0f, true, GgmlVariant::kAvx2,
                scratch.data(), out.data());
  for (int64_t d = 0; d < head_dim; ++d) {
    float x[8];
    for (int l = 0; l < 8; ++l) x[l] = scratch[l] * v[l * head_dim + d];
    const float expected = ((x[0] + x[4]) + (x[1] + x[5])) + ((x[2] + x[6]) + (x[3] + x[7]));
    ASSERT_EQ(Bits(out[d]), Bits(expected)) << d;
  }
}

// The register-blocked value sums (8 lanes; 16 lanes where the CPU has
// AVX-512; the one-token chains) give the scalar loop's bits: both orders of
// both variants, head sizes on the blocked paths, key ranges not aligned to
// the lanes.
TEST(GgmlOpsTest, RegisterPathsGiveTheScalarLoopsBits) {
  std::mt19937 rng(8);
  // Keys first..last: long, one, short, a window past the first period, and
  // whole 64-key periods (the one-token chains each take one key).
  const std::pair<int64_t, int64_t> ranges[] = {{3, 203}, {0, 0},   {0, 40},
                                                {70, 90}, {0, 63}, {64, 127}};
  for (int64_t head_dim : {16, 32, 64, 128}) {
    for (const auto& [first, last] : ranges) {
      const std::vector<float> q = RandomVector(rng, head_dim);
      const std::vector<float> k = RandomVector(rng, (last + 1) * head_dim);
      const std::vector<float> v = RandomVector(rng, (last + 1) * head_dim);
      for (GgmlVariant variant : kVariants) {
        for (bool one_token : {false, true}) {
          std::vector<float> scratch(last + 1), blocked(head_dim), scalar(head_dim);
          GgmlAttendRow(q.data(), k.data(), v.data(), head_dim, first, last, 0.3f, one_token,
                        variant, scratch.data(), blocked.data());
          ggml_ops_internal::UseRegisterPaths(false);
          GgmlAttendRow(q.data(), k.data(), v.data(), head_dim, first, last, 0.3f, one_token,
                        variant, scratch.data(), scalar.data());
          ggml_ops_internal::UseRegisterPaths(true);
          for (int64_t d = 0; d < head_dim; ++d) {
            ASSERT_EQ(Bits(blocked[d]), Bits(scalar[d]))
                << GgmlVariantName(variant) << " one_token " << one_token << " head_dim "
                << head_dim << " keys " << first << ".." << last << " d " << d;
          }
        }
      }
    }
  }
}

// Query heads that share a KV head, attended together, give each head's
// GgmlAttendRow bits: groups of 1-8 heads (chunks of 4 and their rests),
// every cache element, both variants and orders, head sizes on and off the
// grouped path (64, 128; 80), short and long key ranges through a block table.
TEST(GgmlOpsTest, HeadsAttendedTogetherGiveEachHeadsBits) {
  std::mt19937 rng(9);
  constexpr int64_t kBlockSize = 16;
  for (KvElement element : {KvElement::kF32, KvElement::kF16, KvElement::kBF16}) {
    for (int64_t head_dim : {64, 80, 128}) {
      for (const auto& [first, last] : {std::pair<int64_t, int64_t>{0, 0}, {0, 40}, {5, 150}}) {
        const int64_t blocks = last / kBlockSize + 1;
        std::vector<int32_t> table(blocks);
        for (int64_t b = 0; b < blocks; ++b) table[b] = static_cast<int32_t>(blocks - 1 - b);
        const int64_t elements = blocks * kBlockSize * head_dim;
        // Random cache rows in the element's format (F32 bits for F32).
        std::vector<float> k32 = RandomVector(rng, elements), v32 = RandomVector(rng, elements);
        std::vector<uint16_t> k16(elements), v16(elements);
        for (int64_t i = 0; i < elements; ++i) {
          k16[i] = element == KvElement::kF16 ? FloatToHalf(k32[i]) : FloatToBfloat16(k32[i]);
          v16[i] = element == KvElement::kF16 ? FloatToHalf(v32[i]) : FloatToBfloat16(v32[i]);
        }
        const void* keys = element == KvElement::kF32 ? static_cast<const void*>(k32.data())
                                                      : static_cast<const void*>(k16.data());
        const void* values = element == KvElement::kF32 ? static_cast<const void*>(v32.data())
                                                        : static_cast<const void*>(v16.data());
        for (int count = 1; count <= 8; ++count) {
          const std::vector<float> q = RandomVector(rng, count * head_dim, 2.0f);
          for (GgmlVariant variant : kVariants) {
            for (bool one_token : {false, true}) {
              SCOPED_TRACE(::testing::Message()
                           << "element " << static_cast<int>(element) << " head_dim " << head_dim
                           << " keys " << first << ".." << last << " heads " << count << " "
                           << GgmlVariantName(variant) << " one_token " << one_token);
              const int64_t stride = last + 3;
              std::vector<float> scratch(count * stride), together(count * head_dim);
              GgmlAttendHeads(q.data(), count, keys, values, element, head_dim, first, last, 0.2f,
                              one_token, variant, scratch.data(), stride, together.data(),
                              table.data(), kBlockSize);
              for (int c = 0; c < count; ++c) {
                std::vector<float> alone(head_dim);
                GgmlAttendRow(q.data() + c * head_dim, keys, values, element, head_dim, first,
                              last, 0.2f, one_token, variant, scratch.data(), alone.data(),
                              table.data(), kBlockSize);
                for (int64_t d = 0; d < head_dim; ++d) {
                  ASSERT_EQ(Bits(together[c * head_dim + d]), Bits(alone[d]))
                      << "head " << c << " d " << d;
                }
              }
            }
          }
        }
      }
    }
  }
}

// F16 and BF16 caches are widened as they are read: every output equals,
// bit for bit, attention over an F32 cache holding the same values, in both
// orders of both variants, with rows paged through a block table, for head
// sizes on and off the register paths (64, 128; 16, 80).
TEST(GgmlOpsTest, SixteenBitCachesGiveTheBitsOfAnF32CacheOfTheSameValues) {
  std::mt19937 rng(6);
  for (KvElement element : {KvElement::kF16, KvElement::kBF16}) {
    const bool half = element == KvElement::kF16;
    // A random finite value near 1 in the element's format, and its float.
    const auto random_bits = [&](float* value) {
      const uint32_t sign = rng() & 1, mantissa_bits = half ? 10 : 7;
      const uint32_t exponent = (half ? 12 : 124) + rng() % 5;
      const uint32_t mantissa = rng() & ((1u << mantissa_bits) - 1);
      const auto bits = static_cast<uint16_t>((sign << 15) | (exponent << mantissa_bits) | mantissa);
      *value = half ? HalfToFloat(bits) : BitsToFloat(static_cast<uint32_t>(bits) << 16);
      return bits;
    };
    for (GgmlVariant variant : kVariants) {
      for (int64_t head_dim : {16, 64, 80, 128}) {
        for (int64_t last : {0, 9, 63, 64, 200}) {
          constexpr int64_t kBlockSize = 16;
          const int64_t blocks = last / kBlockSize + 1;
          std::vector<int32_t> table(blocks);
          for (int64_t b = 0; b < blocks; ++b) table[b] = static_cast<int32_t>(blocks - 1 - b);
          const size_t elements = static_cast<size_t>(blocks * kBlockSize * head_dim);
          std::vector<uint16_t> k16(elements), v16(elements);
          std::vector<float> k32(elements), v32(elements);
          for (size_t i = 0; i < elements; ++i) {
            k16[i] = random_bits(&k32[i]);
            v16[i] = random_bits(&v32[i]);
          }
          const std::vector<float> q = RandomVector(rng, head_dim, 2.0f);
          const float scale = 1.0f / std::sqrt(float(head_dim));
          for (bool one_token : {false, true}) {
            SCOPED_TRACE(::testing::Message()
                         << (half ? "f16 " : "bf16 ") << GgmlVariantName(variant) << " head_dim "
                         << head_dim << " last " << last << " one_token " << one_token);
            std::vector<float> scratch(last + 1), from32(head_dim), from16(head_dim);
            GgmlAttendRow(q.data(), k32.data(), v32.data(), head_dim, 0, last, scale, one_token,
                          variant, scratch.data(), from32.data(), table.data(), kBlockSize);
            GgmlAttendRow(q.data(), k16.data(), v16.data(), element, head_dim, 0, last, scale,
                          one_token, variant, scratch.data(), from16.data(), table.data(),
                          kBlockSize);
            for (int64_t d = 0; d < head_dim; ++d) ASSERT_EQ(Bits(from16[d]), Bits(from32[d])) << d;
          }
        }
      }
    }
  }
}

// The prompt path over a prepared head (keys transposed, scores summed across
// keys) gives GgmlAttendRow's batch-order bits: every cache element type,
// both variants' orders, both register widths, paged rows, windows.
TEST(GgmlOpsTest, PreparedHeadsGiveTheBitsOfGgmlAttendRow) {
  std::mt19937 rng(7);
  std::vector<int> widths = {8};
  if (prepared_scores_avx512::Supported()) widths.push_back(16);  // LLORCH_MAX_CPU_ISA too
  ASSERT_TRUE(GgmlPreparedAttentionSupports(64));
  ASSERT_FALSE(GgmlPreparedAttentionSupports(80));
  for (KvElement element : {KvElement::kF32, KvElement::kF16, KvElement::kBF16}) {
    for (int64_t head_dim : {64, 128}) {
      constexpr int64_t kBlockSize = 16, kPositions = 200;
      const int64_t blocks = (kPositions + kBlockSize - 1) / kBlockSize;
      std::vector<int32_t> table(blocks);
      for (int64_t b = 0; b < blocks; ++b) table[b] = static_cast<int32_t>(blocks - 1 - b);
      const size_t elements = static_cast<size_t>(blocks * kBlockSize * head_dim);
      std::vector<float> k32 = RandomVector(rng, elements, 2.0f);
      std::vector<float> v32 = RandomVector(rng, elements, 2.0f);
      std::vector<uint16_t> k16(elements), v16(elements);
      // BF16: the floats' top halves; F16: random finite halves near 1.
      const auto half = [&] {
        return static_cast<uint16_t>(((rng() & 1) << 15) | ((12 + rng() % 5) << 10) |
                                     (rng() & 0x3FF));
      };
      for (size_t i = 0; i < elements; ++i) {
        k16[i] = element == KvElement::kF16 ? half()
                                            : static_cast<uint16_t>(FloatToBits(k32[i]) >> 16);
        v16[i] = element == KvElement::kF16 ? half()
                                            : static_cast<uint16_t>(FloatToBits(v32[i]) >> 16);
      }
      const void* keys = element == KvElement::kF32 ? static_cast<const void*>(k32.data())
                                                    : static_cast<const void*>(k16.data());
      const void* values = element == KvElement::kF32 ? static_cast<const void*>(v32.data())
                                                      : static_cast<const void*>(v16.data());
      for (int width : widths) {
        for (GgmlVariant variant : kVariants) {
          GgmlPreparedKv kv;
          GgmlPrepareKv(keys, values, element, head_dim, kPositions, table.data(), kBlockSize,
                        &kv, width, variant);
          for (auto [first, last] : std::vector<std::pair<int64_t, int64_t>>{
                   {0, 0}, {0, 9}, {0, 63}, {0, 64}, {0, 199}, {37, 150}, {190, 199}}) {
            SCOPED_TRACE(::testing::Message()
                         << "element " << static_cast<int>(element) << " head_dim " << head_dim
                         << " width " << width << " " << GgmlVariantName(variant) << " keys "
                         << first << ".." << last);
            const std::vector<float> q = RandomVector(rng, head_dim, 2.0f);
            const float scale = 1.0f / std::sqrt(float(head_dim));
            std::vector<float> scratch(last + 1), expected(head_dim), prepared(head_dim);
            GgmlAttendRow(q.data(), keys, values, element, head_dim, first, last, scale,
                          /*one_token_order=*/false, variant, scratch.data(), expected.data(),
                          table.data(), kBlockSize);
            GgmlAttendPromptRows(q.data(), head_dim, 1, &first, &last, kv, head_dim, scale,
                                 variant, scratch.data(), last + 1, prepared.data(), head_dim);
            for (int64_t d = 0; d < head_dim; ++d) {
              ASSERT_EQ(Bits(prepared[d]), Bits(expected[d])) << d;
            }
          }
        }
      }
    }
  }
}

// Several rows in one call (as CausalAttention's tasks pass them: causal
// rows with and without a window) give each row's own bits.
TEST(GgmlOpsTest, PreparedRowsTogetherGiveTheBitsOfEachRowAlone) {
  std::mt19937 rng(8);
  constexpr int64_t kHeadDim = 64, kPositions = 90;
  const std::vector<float> k = RandomVector(rng, kPositions * kHeadDim, 2.0f);
  const std::vector<float> v = RandomVector(rng, kPositions * kHeadDim, 2.0f);
  constexpr int kCount = 7;
  const std::vector<float> q = RandomVector(rng, kCount * kHeadDim, 2.0f);
  for (GgmlVariant variant : kVariants) {
    GgmlPreparedKv kv;
    GgmlPrepareKv(k.data(), v.data(), KvElement::kF32, kHeadDim, kPositions, nullptr, 0, &kv,
                  /*width=*/0, variant);
    for (int64_t window : {0, 20}) {
      int64_t first[kCount], last[kCount];
      for (int r = 0; r < kCount; ++r) {
        last[r] = 80 + r;
        first[r] = window > 0 ? last[r] - window + 1 : 0;
      }
      std::vector<float> scratch(kCount * kPositions), together(kCount * kHeadDim);
      GgmlAttendPromptRows(q.data(), kHeadDim, kCount, first, last, kv, kHeadDim, 0.125f, variant,
                           scratch.data(), kPositions, together.data(), kHeadDim);
      for (int r = 0; r < kCount; ++r) {
        std::vector<float> alone(kHeadDim), row_scratch(kPositions);
        GgmlAttendRow(q.data() + r * kHeadDim, k.data(), v.data(), kHeadDim, first[r], last[r],
                      0.125f, false, variant, row_scratch.data(), alone.data());
        for (int64_t d = 0; d < kHeadDim; ++d) {
          ASSERT_EQ(Bits(together[r * kHeadDim + d]), Bits(alone[d]))
              << GgmlVariantName(variant) << " window " << window << " row " << r << " d " << d;
        }
      }
    }
  }
}

// Long heads (value sums over several spans, rows starting in later spans
// under a window) and many rows (the 16-lane scores take up to 16 at once,
// the value sums 4): each row's own bits.
TEST(GgmlOpsTest, PreparedLongHeadsGiveEachRowsBits) {
  std::mt19937 rng(9);
  constexpr int64_t kPositions = 1100;
  for (int64_t head_dim : {64, 128}) {
    const std::vector<float> k = RandomVector(rng, kPositions * head_dim, 2.0f);
    const std::vector<float> v = RandomVector(rng, kPositions * head_dim, 2.0f);
    for (GgmlVariant variant : kVariants) {
      GgmlPreparedKv kv;
      GgmlPrepareKv(k.data(), v.data(), KvElement::kF32, head_dim, kPositions, nullptr, 0, &kv,
                    /*width=*/0, variant);
      for (int count : {5, 16, 17}) {
        for (int64_t window : {0, 37, 700}) {
          const std::vector<float> q = RandomVector(rng, count * head_dim, 2.0f);
          std::vector<int64_t> first(count), last(count);
          for (int r = 0; r < count; ++r) {
            last[r] = kPositions - count + r;
            first[r] = window > 0 ? last[r] - window + 1 : 0;
          }
          std::vector<float> scratch(count * kPositions), together(count * head_dim);
          GgmlAttendPromptRows(q.data(), head_dim, count, first.data(), last.data(), kv, head_dim,
                               0.1f, variant, scratch.data(), kPositions, together.data(),
                               head_dim);
          for (int r = 0; r < count; ++r) {
            std::vector<float> alone(head_dim), row_scratch(kPositions);
            GgmlAttendRow(q.data() + r * head_dim, k.data(), v.data(), head_dim, first[r],
                          last[r], 0.1f, false, variant, row_scratch.data(), alone.data());
            for (int64_t d = 0; d < head_dim; ++d) {
              ASSERT_EQ(Bits(together[r * head_dim + d]), Bits(alone[d]))
                  << GgmlVariantName(variant) << " head_dim " << head_dim << " rows " << count
                  << " window " << window << " row " << r << " d " << d;
            }
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace llorch
