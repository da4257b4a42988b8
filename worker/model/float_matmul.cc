#include "worker/model/float_matmul.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/float_bits.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define LLORCH_FLOAT_MATMUL_AVX2 1
#include <immintrin.h>

#include "worker/model/avx2_helpers.h"
#endif

namespace llorch {
namespace {

// Weight rows per block: a block stays in cache while every group of
// activation rows passes over it.
constexpr int64_t kRowBlock = 16;
// Activation rows that share one pass over a weight row (registers: 2 per row).
constexpr int64_t kRowsPerPass = 4;

float BFloat16ToFloat(uint16_t b) { return BitsToFloat(static_cast<uint32_t>(b) << 16); }

// Element i of a weight row of `type`, widened to F32 (exactly).
float WeightAt(GgmlType type, const void* row, int64_t i) {
  switch (type) {
    case GgmlType::kF16:
      return HalfToFloat(static_cast<const uint16_t*>(row)[i]);
    case GgmlType::kBF16:
      return BFloat16ToFloat(static_cast<const uint16_t*>(row)[i]);
    default:
      return static_cast<const float*>(row)[i];
  }
}

size_t ElementBytes(GgmlType type) { return type == GgmlType::kF32 ? 4 : 2; }

// The dot product of FloatMatmul's comment, one lane at a time.
float DotPortable(GgmlType type, const void* w, const float* x, int64_t in) {
  float acc[2][8] = {};
  int64_t i = 0;
  for (; i + 16 <= in; i += 16) {
    for (int reg = 0; reg < 2; ++reg) {
      for (int lane = 0; lane < 8; ++lane) {
        const int64_t k = i + 8 * reg + lane;
        acc[reg][lane] = std::fma(WeightAt(type, w, k), x[k], acc[reg][lane]);
      }
    }
  }
  float lanes[8];
  for (int lane = 0; lane < 8; ++lane) lanes[lane] = acc[0][lane] + acc[1][lane];
  for (int lane = 0; lane < 4; ++lane) lanes[lane] = lanes[lane] + lanes[lane + 4];
  for (int lane = 0; lane < 2; ++lane) lanes[lane] = lanes[lane] + lanes[lane + 2];
  float sum = lanes[0] + lanes[1];
  for (; i < in; ++i) sum = std::fma(WeightAt(type, w, i), x[i], sum);
  return sum;
}

#ifdef LLORCH_FLOAT_MATMUL_AVX2

using avx2::Load8AsFloat;
using avx2::HorizontalSum;  // DotPortable's lane order

// One weight row against kRows activation rows (x, rows `in` apart);
// out[t * out_stride] = dot(w, x row t).
template <GgmlType kType, int kRows>
void RowTimesRows(const void* w, const float* x, int64_t in, float* out, int64_t out_stride) {
  __m256 acc[kRows][2];
  for (int t = 0; t < kRows; ++t) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= in; i += 16) {
    const __m256 w0 = Load8AsFloat<kType>(w, i), w1 = Load8AsFloat<kType>(w, i + 8);
    for (int t = 0; t < kRows; ++t) {
      acc[t][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + t * in + i), acc[t][0]);
      acc[t][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + t * in + i + 8), acc[t][1]);
    }
  }
  for (int t = 0; t < kRows; ++t) {
    float sum = HorizontalSum(_mm256_add_ps(acc[t][0], acc[t][1]));
    for (int64_t k = i; k < in; ++k) sum = std::fma(WeightAt(kType, w, k), x[t * in + k], sum);
    out[t * out_stride] = sum;
  }
}

// kWeightRows weight rows (row_bytes apart) against one activation row:
// out[j] = dot(w row j, x). Each row keeps RowTimesRows's two accumulators
// and order (the same bits); the rows only interleave, so a step has
// 2 * kWeightRows independent fma chains where one row has 2. The next
// kWeightRows rows are prefetched into L2 meanwhile: a TinyLlama F16 row
// is one 4 KiB page, where the hardware prefetchers stop, and four such
// streams at once read 20-21 GB/s on a Zen 4 against 24-27 with the
// prefetch (one row at a time reads 28 on the gate/up rows but 20 on the
// longer down rows, and gave up the earlier 2-core EPYC's gain from 4).
template <GgmlType kType, int kWeightRows>
void RowsTimesOne(const uint8_t* w, size_t row_bytes, const float* x, int64_t in, float* out) {
  __m256 acc[kWeightRows][2];
  for (int j = 0; j < kWeightRows; ++j) acc[j][0] = acc[j][1] = _mm256_setzero_ps();
  constexpr int64_t kElementBytes = kType == GgmlType::kF32 ? 4 : 2;
  const uint8_t* next = w + kWeightRows * row_bytes;  // never faults, even past the end
  int64_t i = 0;
  for (; i + 16 <= in; i += 16) {
    if ((i * kElementBytes) % 64 == 0) {  // once per cache line
      for (int j = 0; j < kWeightRows; ++j) {
        _mm_prefetch(reinterpret_cast<const char*>(next + j * row_bytes + i * kElementBytes),
                     _MM_HINT_T1);
      }
    }
    const __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + 8);
    for (int j = 0; j < kWeightRows; ++j) {
      const void* row = w + j * row_bytes;
      acc[j][0] = _mm256_fmadd_ps(Load8AsFloat<kType>(row, i), x0, acc[j][0]);
      acc[j][1] = _mm256_fmadd_ps(Load8AsFloat<kType>(row, i + 8), x1, acc[j][1]);
    }
  }
  for (int j = 0; j < kWeightRows; ++j) {
    float sum = HorizontalSum(_mm256_add_ps(acc[j][0], acc[j][1]));
    for (int64_t k = i; k < in; ++k) sum = std::fma(WeightAt(kType, w + j * row_bytes, k), x[k], sum);
    out[j] = sum;
  }
}

template <GgmlType kType>
void RowBlockAvx2(const uint8_t* weight, int64_t rows, int64_t in, const float* x, int64_t n,
                  float* out, int64_t begin, int64_t end) {
  const size_t row_bytes = static_cast<size_t>(in) * ElementBytes(kType);
  for (int64_t block = begin; block < end; block += kRowBlock) {
    const int64_t block_end = std::min(end, block + kRowBlock);
    if (n == 1) {  // a decode step of one job: weight rows side by side
      int64_t r = block;
      for (; r + 4 <= block_end; r += 4) {
        RowsTimesOne<kType, 4>(weight + r * row_bytes, row_bytes, x, in, out + r);
      }
      for (; r < block_end; ++r) RowTimesRows<kType, 1>(weight + r * row_bytes, x, in, out + r, rows);
      continue;
    }
    for (int64_t t = 0; t < n; t += kRowsPerPass) {
      const int64_t group = std::min<int64_t>(kRowsPerPass, n - t);
      for (int64_t r = block; r < block_end; ++r) {
        const void* w = weight + r * row_bytes;
        const float* xt = x + t * in;
        float* o = out + t * rows + r;
        switch (group) {
          case 1: RowTimesRows<kType, 1>(w, xt, in, o, rows); break;
          case 2: RowTimesRows<kType, 2>(w, xt, in, o, rows); break;
          case 3: RowTimesRows<kType, 3>(w, xt, in, o, rows); break;
          default: RowTimesRows<kType, 4>(w, xt, in, o, rows); break;
        }
      }
    }
  }
}

#endif  // LLORCH_FLOAT_MATMUL_AVX2

void CheckArguments(GgmlType type, int64_t rows, int64_t in, int64_t n) {
  if (!FloatMatmulSupports(type) || rows < 0 || in < 0 || n < 0) {
    std::fprintf(stderr, "FloatMatmul: unsupported type %d or bad sizes rows=%lld in=%lld n=%lld\n",
                 static_cast<int>(type), static_cast<long long>(rows),
                 static_cast<long long>(in), static_cast<long long>(n));
    std::abort();
  }
}

}  // namespace

bool FloatMatmulSupports(GgmlType type) {
  return type == GgmlType::kF32 || type == GgmlType::kF16 || type == GgmlType::kBF16;
}

void FloatMatmul(GgmlType type, const void* weight, int64_t rows, int64_t in, const float* x,
                 int64_t n, float* out, const ParallelFor& parallel_for) {
  CheckArguments(type, rows, in, n);
  if (rows == 0 || n == 0) return;
#ifdef LLORCH_FLOAT_MATMUL_AVX2
  const auto* w = static_cast<const uint8_t*>(weight);
  parallel_for(0, rows, [&](int64_t begin, int64_t end) {
    switch (type) {
      case GgmlType::kF16:
        RowBlockAvx2<GgmlType::kF16>(w, rows, in, x, n, out, begin, end);
        break;
      case GgmlType::kBF16:
        RowBlockAvx2<GgmlType::kBF16>(w, rows, in, x, n, out, begin, end);
        break;
      default:
        RowBlockAvx2<GgmlType::kF32>(w, rows, in, x, n, out, begin, end);
        break;
    }
  });
#else
  (void)parallel_for;
  float_matmul_internal::FloatMatmulPortable(type, weight, rows, in, x, n, out);
#endif
}

namespace {

void CheckWidenArguments(GgmlType type, int64_t count) {
  if (!FloatMatmulSupports(type) || count < 0) {
    std::fprintf(stderr, "WidenToFloat: unsupported type %d or count %lld\n",
                 static_cast<int>(type), static_cast<long long>(count));
    std::abort();
  }
}

// Elements [begin, end) of `half` (F16 or BF16) widened into dst.
void WidenRange(GgmlType type, const uint16_t* half, int64_t begin, int64_t end, float* dst) {
  int64_t i = begin;
#ifdef LLORCH_FLOAT_MATMUL_AVX2
  for (; i + 8 <= end; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(half + i));
    const __m256 f = type == GgmlType::kF16
                         ? _mm256_cvtph_ps(h)
                         : _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    _mm256_storeu_ps(dst + i, f);
  }
#endif
  for (; i < end; ++i) dst[i] = WeightAt(type, half, i);
}

}  // namespace

void WidenToFloat(GgmlType type, const void* src, int64_t count, float* dst,
                  const ParallelFor& parallel_for) {
  CheckWidenArguments(type, count);
  if (type == GgmlType::kF32) {
    std::memcpy(dst, src, static_cast<size_t>(count) * sizeof(float));
    return;
  }
  const auto* half = static_cast<const uint16_t*>(src);
  constexpr int64_t kChunk = 1 << 14;  // elements per task
  parallel_for(0, (count + kChunk - 1) / kChunk, [&](int64_t c0, int64_t c1) {
    WidenRange(type, half, c0 * kChunk, std::min(count, c1 * kChunk), dst);
  });
}

void WidenRowToFloat(GgmlType type, const void* src, int64_t count, float* dst) {
  CheckWidenArguments(type, count);
  if (type == GgmlType::kF32) {
    std::memcpy(dst, src, static_cast<size_t>(count) * sizeof(float));
    return;
  }
  WidenRange(type, static_cast<const uint16_t*>(src), 0, count, dst);
}

void NarrowRowFromFloat(GgmlType type, const float* src, int64_t count, void* dst) {
  CheckWidenArguments(type, count);
  if (type == GgmlType::kF32) {
    std::memcpy(dst, src, static_cast<size_t>(count) * sizeof(float));
    return;
  }
  auto* out = static_cast<uint16_t*>(dst);
  int64_t i = 0;
  if (type == GgmlType::kF16) {
#ifdef LLORCH_FLOAT_MATMUL_AVX2
    for (; i + 8 <= count; i += 8) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                       _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    }
#endif
    for (; i < count; ++i) out[i] = FloatToHalf(src[i]);
    return;
  }
  for (; i < count; ++i) out[i] = FloatToBfloat16(src[i]);
}

namespace float_matmul_internal {

bool UsesAvx2() {
#ifdef LLORCH_FLOAT_MATMUL_AVX2
  return true;
#else
  return false;
#endif
}

void FloatMatmulPortable(GgmlType type, const void* weight, int64_t rows, int64_t in,
                         const float* x, int64_t n, float* out) {
  CheckArguments(type, rows, in, n);
  const size_t row_bytes = static_cast<size_t>(in) * ElementBytes(type);
  const auto* w = static_cast<const uint8_t*>(weight);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t r = 0; r < rows; ++r) {
      out[t * rows + r] = DotPortable(type, w + r * row_bytes, x + t * in, in);
    }
  }
}

}  // namespace float_matmul_internal
}  // namespace llorch
