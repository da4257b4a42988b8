// FloatMatmul and FloatGemm: the AVX2 kernels give the portable code's bits; every output
// is within the float error bound of a double-precision dot product; results
// do not depend on how many activation rows share a call or how the weight
// rows are split between threads; F16 and BF16 weights are widened exactly.
// Bf16Matmul and Bf16Gemm (BF16 activations): vdpbf16ps, the AVX2 code and
// the portable code give the same bits, denormals included, on real threads.
#include "worker/model/float_matmul.h"
#include "worker/model/float_gemm.h"

#include "worker/model/bf16_matmul.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <random>
#include <thread>
#include <vector>

#include "common/float_bits.h"
#include "gtest/gtest.h"

namespace llorch {
namespace {

using float_matmul_internal::FloatMatmulPortable;

bool bf16_avx512_supported() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
}

// IEEE binary16 -> double from the definition (sign, exponent, fraction).
double HalfValue(uint16_t h) {
  const int sign = (h & 0x8000) ? -1 : 1;
  const int exponent = (h >> 10) & 0x1f, fraction = h & 0x3ff;
  if (exponent == 0) return sign * std::ldexp(fraction, -24);
  return sign * std::ldexp(1024 + fraction, exponent - 25);
}

uint16_t FloatToBFloat16(float f) {  // truncation: any bf16 value will do
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return static_cast<uint16_t>(bits >> 16);
}

double BFloat16Value(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Random weights of `type` (their exact values in `values`) and activations.
struct Problem {
  GgmlType type;
  int64_t rows, in, n;
  std::vector<uint8_t> weight;
  std::vector<double> values;  // [rows, in]
  std::vector<float> x;        // [n, in]
};

Problem MakeProblem(GgmlType type, int64_t rows, int64_t in, int64_t n, uint32_t seed) {
  Problem p{type, rows, in, n, {}, {}, {}};
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const size_t element = type == GgmlType::kF32 ? 4 : 2;
  p.weight.resize(rows * in * element);
  p.values.resize(rows * in);
  for (int64_t i = 0; i < rows * in; ++i) {
    const float v = normal(rng);
    if (type == GgmlType::kF32) {
      std::memcpy(&p.weight[i * 4], &v, 4);
      p.values[i] = v;
    } else if (type == GgmlType::kF16) {
      // A random half around 1: sign, exponent 12..17 (1/8 .. 4), fraction.
      const uint16_t h = static_cast<uint16_t>((v < 0 ? 0x8000 : 0) | ((12 + rng() % 6) << 10) |
                                               (rng() & 0x3ff));
      std::memcpy(&p.weight[i * 2], &h, 2);
      p.values[i] = HalfValue(h);
    } else {
      const uint16_t b = FloatToBFloat16(v);
      std::memcpy(&p.weight[i * 2], &b, 2);
      p.values[i] = BFloat16Value(b);
    }
  }
  p.x.resize(n * in);
  for (float& v : p.x) v = normal(rng);
  return p;
}

std::vector<float> Multiply(const Problem& p, const ParallelFor& parallel_for = SerialFor) {
  std::vector<float> out(p.n * p.rows, std::numeric_limits<float>::quiet_NaN());
  FloatMatmul(p.type, p.weight.data(), p.rows, p.in, p.x.data(), p.n, out.data(), parallel_for);
  return out;
}

// A float dot product of `in` terms errs by at most in * eps * sum |terms|:
// every output of `out` ([n, rows]) against p's exact products.
void ExpectWithinErrorBound(const Problem& p, const std::vector<float>& out) {
  for (int64_t t = 0; t < p.n; ++t) {
    for (int64_t r = 0; r < p.rows; ++r) {
      double exact = 0, magnitude = 0;
      for (int64_t k = 0; k < p.in; ++k) {
        exact += p.values[r * p.in + k] * p.x[t * p.in + k];
        magnitude += std::abs(p.values[r * p.in + k] * p.x[t * p.in + k]);
      }
      const double bound = p.in * std::numeric_limits<float>::epsilon() * magnitude;
      ASSERT_LE(std::abs(out[t * p.rows + r] - exact), bound) << "row " << r << " t " << t;
    }
  }
}

class FloatMatmulTest : public ::testing::TestWithParam<GgmlType> {};

TEST_P(FloatMatmulTest, Avx2EqualsPortableAndBothAreWithinTheErrorBound) {
  if (!float_matmul_internal::UsesAvx2()) GTEST_SKIP() << "built without AVX2";
  for (int64_t in : {1, 15, 16, 17, 31, 64, 100, 576, 2053}) {
    for (int64_t n : {1, 2, 3, 4, 5, 9}) {
      SCOPED_TRACE(::testing::Message() << "in " << in << " n " << n);
      const Problem p = MakeProblem(GetParam(), 37, in, n, static_cast<uint32_t>(in * 31 + n));
      const std::vector<float> fast = Multiply(p);
      std::vector<float> portable(p.n * p.rows);
      FloatMatmulPortable(p.type, p.weight.data(), p.rows, p.in, p.x.data(), p.n,
                          portable.data());
      ASSERT_EQ(std::memcmp(fast.data(), portable.data(), fast.size() * 4), 0);
      ASSERT_NO_FATAL_FAILURE(ExpectWithinErrorBound(p, fast));
    }
  }
}

TEST_P(FloatMatmulTest, RowsOfABatchEqualRowsAloneWhateverTheSplit) {
  const Problem p = MakeProblem(GetParam(), 101, 300, 7, 11);
  const std::vector<float> batched = Multiply(p);
  for (int64_t t = 0; t < p.n; ++t) {
    Problem alone = p;
    alone.n = 1;
    alone.x.assign(p.x.begin() + t * p.in, p.x.begin() + (t + 1) * p.in);
    const std::vector<float> out = Multiply(alone);
    ASSERT_EQ(std::memcmp(out.data(), batched.data() + t * p.rows, p.rows * 4), 0) << "row " << t;
  }
  // Uneven splits, as a thread pool may cut [0, rows).
  const std::vector<float> split = Multiply(p, [](int64_t begin, int64_t end, const RangeFn& body) {
    for (int64_t b = begin; b < end; b += 7) body(b, std::min(end, b + 7));
  });
  EXPECT_EQ(std::memcmp(split.data(), batched.data(), split.size() * 4), 0);
}

std::vector<float> Gemm(const Problem& p, const ParallelFor& parallel_for = SerialFor) {
  std::vector<float> out(p.n * p.rows, std::numeric_limits<float>::quiet_NaN());
  FloatGemm(p.type, p.weight.data(), p.rows, p.in, p.x.data(), p.n, out.data(), parallel_for);
  return out;
}

// With the AVX-512 panels where the CPU has them, and the AVX2 ones; 40 rows
// make a whole 32-row panel and a partial one, in = 300 two depth blocks.
TEST_P(FloatMatmulTest, GemmAvx2EqualsPortableAndIsWithinTheErrorBound) {
  if (!float_gemm_internal::UsesAvx2()) GTEST_SKIP() << "built without AVX2";
  std::vector<bool> avx512 = {false};
  if (float_gemm_internal::UsesAvx512()) avx512.push_back(true);
  for (bool allow : avx512) {
  float_gemm_internal::AllowAvx512(allow);
  for (int64_t rows : {1, 6, 13, 40}) {
    for (int64_t in : {1, 17, 100, 300, 576}) {
      for (int64_t n : {1, 7, 8, 9, 15, 16, 17, 33, 64, 65, 130}) {
        SCOPED_TRACE(::testing::Message() << "avx512 " << allow << " rows " << rows << " in "
                                          << in << " n " << n);
        const Problem p = MakeProblem(GetParam(), rows, in, n, static_cast<uint32_t>(rows + in + n));
        const std::vector<float> fast = Gemm(p);
        std::vector<float> portable(p.n * p.rows);
        float_gemm_internal::FloatGemmPortable(p.type, p.weight.data(), p.rows, p.in, p.x.data(),
                                               p.n, portable.data());
        ASSERT_EQ(std::memcmp(fast.data(), portable.data(), fast.size() * 4), 0);
        ASSERT_NO_FATAL_FAILURE(ExpectWithinErrorBound(p, fast));
      }
    }
  }
  }
  float_gemm_internal::AllowAvx512(true);
}

// A prompt row gives the same bits alone, in any chunk of rows, and
// whatever the threads' split of the weight rows.
TEST_P(FloatMatmulTest, GemmRowsEqualRowsAloneInAnyChunk) {
  const Problem p = MakeProblem(GetParam(), 29, 130, 70, 5);
  const std::vector<float> all = Gemm(p);
  for (auto [first, count] : std::vector<std::pair<int64_t, int64_t>>{
           {0, 1}, {3, 1}, {69, 1}, {5, 13}, {16, 48}, {1, 69}, {40, 30}}) {
    Problem part = p;
    part.n = count;
    part.x.assign(p.x.begin() + first * p.in, p.x.begin() + (first + count) * p.in);
    const std::vector<float> out = Gemm(part);
    ASSERT_EQ(std::memcmp(out.data(), all.data() + first * p.rows, out.size() * 4), 0)
        << "rows " << first << " + " << count;
  }
  const std::vector<float> split = Gemm(p, [](int64_t begin, int64_t end, const RangeFn& body) {
    for (int64_t b = begin; b < end; b += 2) body(b, std::min(end, b + 2));
  });
  EXPECT_EQ(std::memcmp(split.data(), all.data(), split.size() * 4), 0);
}

INSTANTIATE_TEST_SUITE_P(Types, FloatMatmulTest,
                         ::testing::Values(GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16),
                         [](const ::testing::TestParamInfo<GgmlType>& info) {
                           return std::string(GgmlTypeName(info.param));
                         });

// BF16 weights and activations on the BF16 grid; `wide`: magnitudes down to
// the denormal range (products and sums that flush) and up to large ones.
Problem MakeBf16Problem(int64_t rows, int64_t in, int64_t n, uint32_t seed, bool wide) {
  Problem p = MakeProblem(GgmlType::kBF16, rows, in, n, seed);
  std::mt19937 rng(seed * 7 + 1);
  if (!wide) {  // activations on the BF16 grid, as the model rounds them
    for (float& v : p.x) v = static_cast<float>(BFloat16Value(FloatToBFloat16(v)));
    return p;
  }
  auto scale = [&](int64_t i) { return std::ldexp(1.0f, -static_cast<int>(i * 7919 % 140)); };
  for (int64_t i = 0; i < rows * in; ++i) {
    uint16_t b;
    std::memcpy(&b, &p.weight[i * 2], 2);
    const uint16_t scaled = FloatToBFloat16(static_cast<float>(BFloat16Value(b)) * scale(i % 97));
    std::memcpy(&p.weight[i * 2], &scaled, 2);
    p.values[i] = BFloat16Value(scaled);
  }
  for (int64_t i = 0; i < n * in; ++i) {
    p.x[i] = static_cast<float>(BFloat16Value(FloatToBFloat16(p.x[i] * scale(i % 89 + rng() % 3))));
  }
  return p;
}

// BF16's orders computed by vdpbf16ps (where this CPU has AVX512-BF16), by
// the AVX2 emulation under MXCSR's flush modes and by the portable code's
// hand flushing: the same bits, denormal ranges included, for decode
// (FloatMatmul) and prompt (FloatGemm) shapes, tails and odd sizes.
TEST(FloatMatmulBf16, EveryKernelGivesThePortableBits) {
  std::vector<bool> kernels = {false};
  if (bf16_avx512_supported()) kernels.push_back(true);
  for (bool avx512 : kernels) {
    bf16_matmul_internal::AllowAvx512(avx512);
    for (int64_t in : {2, 30, 32, 64, 96, 100, 576, 2048, 2048 + 34, 2048 + 64, 63}) {
      for (int64_t n : {1, 2, 5, 33, 70, 130}) {
        SCOPED_TRACE(::testing::Message() << "avx512 " << avx512 << " in " << in << " n " << n);
        for (bool wide : {false, true}) {
          const uint32_t seed = static_cast<uint32_t>(in * 131 + n + wide);
          const Problem p = MakeBf16Problem(11, in, n, seed, wide);
          std::vector<float> portable(p.n * p.rows), fast(p.n * p.rows);
          if (n <= 5) {
            bf16_matmul_internal::Bf16MatmulPortable(p.weight.data(), p.rows, p.in, p.x.data(),
                                                      p.n, portable.data());
            Bf16Matmul(p.weight.data(), p.rows, p.in, p.x.data(), p.n, fast.data());
            ASSERT_EQ(std::memcmp(fast.data(), portable.data(), fast.size() * 4), 0) << "decode";
          }
          bf16_matmul_internal::Bf16GemmPortable(p.weight.data(), p.rows, p.in, p.x.data(), p.n,
                                                portable.data());
          Bf16Gemm(p.weight.data(), p.rows, p.in, p.x.data(), p.n, fast.data());
          ASSERT_EQ(std::memcmp(fast.data(), portable.data(), fast.size() * 4), 0) << "prompt";
          if (!wide) {  // and within the float error bound of the exact products
            ASSERT_NO_FATAL_FAILURE(ExpectWithinErrorBound(p, fast));
          }
        }
      }
    }
  }
  bf16_matmul_internal::AllowAvx512(true);
}

// Split between real threads (the kernels' per-call buffers belong to the
// calling thread), every kernel gives the serial bits.
TEST(FloatMatmulBf16, ThreadsGiveTheSerialBits) {
  const ParallelFor two_threads = [](int64_t begin, int64_t end, const RangeFn& body) {
    const int64_t mid = begin + (end - begin) / 2;
    std::thread other([&] { body(mid, end); });
    body(begin, mid);
    other.join();
  };
  std::vector<bool> kernels = {false};
  if (bf16_avx512_supported()) kernels.push_back(true);
  for (bool avx512 : kernels) {
    bf16_matmul_internal::AllowAvx512(avx512);
    for (int64_t n : {1, 3, 70}) {
      const Problem p = MakeBf16Problem(41, 192, n, 9, false);
      std::vector<float> serial(p.n * p.rows), threaded(p.n * p.rows);
      if (n <= 3) {
        Bf16Matmul(p.weight.data(), p.rows, p.in, p.x.data(), p.n, serial.data());
        Bf16Matmul(p.weight.data(), p.rows, p.in, p.x.data(), p.n, threaded.data(), two_threads);
        ASSERT_EQ(std::memcmp(serial.data(), threaded.data(), serial.size() * 4), 0) << n;
      }
      Bf16Gemm(p.weight.data(), p.rows, p.in, p.x.data(), p.n, serial.data());
      Bf16Gemm(p.weight.data(), p.rows, p.in, p.x.data(), p.n, threaded.data(), two_threads);
      ASSERT_EQ(std::memcmp(serial.data(), threaded.data(), serial.size() * 4), 0) << n;
    }
  }
  bf16_matmul_internal::AllowAvx512(true);
}

// The flushing is real: a product below FLT_MIN added to zero gives zero,
// in both orders, as vdpbf16ps computes it.
TEST(FloatMatmulBf16, DenormalResultsFlushToZero) {
  uint16_t w[32] = {FloatToBFloat16(std::ldexp(1.0f, -70))};
  float x[32] = {std::ldexp(1.0f, -70)};
  float decode = -1.0f, prompt = -1.0f;
  Bf16Matmul(w, 1, 32, x, 1, &decode);
  Bf16Gemm(w, 1, 32, x, 1, &prompt);
  EXPECT_EQ(prompt, 0.0f);
  // Decode adds the in % 64 tail's products in double without flushing.
  EXPECT_EQ(decode, std::ldexp(1.0f, -140));
}

// Every finite F16 value, as the one nonzero weight of a row against x = e0,
// comes out as its value: the widening (F16C or the portable code) is exact.
TEST(FloatMatmulWidening, EveryFiniteHalfIsExact) {
  constexpr int64_t kIn = 16;
  std::vector<uint16_t> weight;
  std::vector<double> expected;
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if (((h >> 10) & 0x1f) == 0x1f) continue;  // inf and NaN
    std::vector<uint16_t> row(kIn, 0);
    row[0] = static_cast<uint16_t>(h);
    weight.insert(weight.end(), row.begin(), row.end());
    expected.push_back(HalfValue(static_cast<uint16_t>(h)));
  }
  std::vector<float> x(kIn, 0.0f);
  x[0] = 1.0f;
  const int64_t rows = static_cast<int64_t>(expected.size());
  std::vector<float> out(rows), portable(rows);
  FloatMatmul(GgmlType::kF16, weight.data(), rows, kIn, x.data(), 1, out.data());
  FloatMatmulPortable(GgmlType::kF16, weight.data(), rows, kIn, x.data(), 1, portable.data());
  for (int64_t r = 0; r < rows; ++r) {
    ASSERT_EQ(out[r], expected[r]) << "row " << r;
    ASSERT_EQ(portable[r], expected[r]) << "row " << r;
  }
}

// WidenToFloat (prompts' GEMM input): every finite half and every bf16 bit
// pattern of a finite float widens to its exact value, split over threads,
// with a tail that is not a multiple of the vector width.
TEST(FloatMatmulWidening, WidenToFloatIsExactForEveryHalfAndBFloat16) {
  const ParallelFor two_parts = [](int64_t begin, int64_t end, const RangeFn& body) {
    const int64_t mid = begin + (end - begin) / 2;
    if (begin < mid) body(begin, mid);
    if (mid < end) body(mid, end);
  };
  for (GgmlType type : {GgmlType::kF16, GgmlType::kBF16}) {
    std::vector<uint16_t> bits;
    std::vector<double> expected;
    for (uint32_t b = 0; b < 0x10000; ++b) {
      const uint16_t v = static_cast<uint16_t>(b);
      const bool finite = type == GgmlType::kF16 ? ((v >> 10) & 0x1f) != 0x1f
                                                 : ((v >> 7) & 0xff) != 0xff;
      if (!finite) continue;
      bits.push_back(v);
      expected.push_back(type == GgmlType::kF16 ? HalfValue(v) : BFloat16Value(v));
    }
    bits.resize(bits.size() - 3);  // a tail of 8k + 5 elements
    expected.resize(bits.size());
    std::vector<float> out(bits.size(), std::numeric_limits<float>::quiet_NaN());
    WidenToFloat(type, bits.data(), static_cast<int64_t>(bits.size()), out.data(), two_parts);
    for (size_t i = 0; i < bits.size(); ++i) {
      ASSERT_EQ(out[i], expected[i]) << GgmlTypeName(type) << " bits " << bits[i];
    }
  }
}

// NarrowRowFromFloat (KV rows): every finite half and bf16 value comes back
// as itself; the midpoint of two neighbours goes to the even one and the
// floats just beside it to the nearer one; past the largest half, infinity.
// Expected values from each format's value in double, not from a conversion.
TEST(FloatMatmulNarrowing, RoundsToTheNearestValueTiesToEven) {
  for (GgmlType type : {GgmlType::kF16, GgmlType::kBF16}) {
    const bool half = type == GgmlType::kF16;
    const auto value = [&](uint16_t v) { return half ? HalfValue(v) : BFloat16Value(v); };
    const auto finite = [&](uint16_t v) {
      return half ? ((v >> 10) & 0x1f) != 0x1f : ((v >> 7) & 0xff) != 0xff;
    };
    std::vector<float> in;
    std::vector<uint16_t> want;
    if (half) {
      for (float big : {65520.0f, -65520.0f, 1e30f}) {  // 65520: the midpoint to 2^16
        in.push_back(big);
        want.push_back(big < 0 ? 0xfc00 : 0x7c00);
      }
      in.push_back(std::nextafter(65520.0f, 0.0f));
      want.push_back(0x7bff);
    }
    for (uint32_t b = 0; b < 0x10000; ++b) {
      const auto v = static_cast<uint16_t>(b);
      if (!finite(v)) continue;
      in.push_back(static_cast<float>(value(v)));
      want.push_back(v);
      const auto next = static_cast<uint16_t>(v + 1);
      if ((v & 0x7fff) == 0x7fff || !finite(next)) continue;  // same sign, finite neighbour
      const double lo = value(v), hi = value(next);
      const auto mid = static_cast<float>((lo + hi) / 2);  // exact in float
      ASSERT_EQ(static_cast<double>(mid), (lo + hi) / 2);
      in.push_back(mid);
      want.push_back((v & 1) == 0 ? v : next);
      in.push_back(std::nextafter(mid, static_cast<float>(lo)));
      want.push_back(v);
      in.push_back(std::nextafter(mid, static_cast<float>(hi)));
      want.push_back(next);
    }
    in.resize(in.size() / 8 * 8 + 5);  // a tail after the vector loop
    want.resize(in.size());
    std::vector<uint16_t> out(in.size());
    NarrowRowFromFloat(type, in.data(), static_cast<int64_t>(in.size()), out.data());
    for (size_t i = 0; i < in.size(); ++i) {
      ASSERT_EQ(out[i], want[i]) << GgmlTypeName(type) << " of " << in[i];
      // The portable conversion (NarrowRowFromFloat's tail) alone.
      ASSERT_EQ(half ? FloatToHalf(in[i]) : FloatToBfloat16(in[i]), want[i])
          << GgmlTypeName(type) << " of " << in[i];
    }
    const float nan = std::numeric_limits<float>::quiet_NaN();
    uint16_t nan_out = 0;
    NarrowRowFromFloat(type, &nan, 1, &nan_out);
    EXPECT_FALSE(finite(nan_out)) << GgmlTypeName(type);
    EXPECT_NE(nan_out & (half ? 0x3ff : 0x7f), 0) << GgmlTypeName(type) << ": a NaN";
  }
}

}  // namespace
}  // namespace llorch
