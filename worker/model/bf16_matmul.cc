#include "worker/model/bf16_matmul.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "worker/model/bf16_avx512.h"
#include "worker/model/bf16_order.h"

#if defined(__AVX2__) && defined(__FMA__)
#define LLORCH_BF16_MATMUL_AVX2 1
#include <immintrin.h>

#include "worker/model/avx2_helpers.h"
#endif

namespace llorch {
namespace {

std::atomic<bool> avx512_allowed{[] {
  const char* env = std::getenv("LLORCH_BF16_AVX512");
  return env == nullptr || std::strcmp(env, "0") != 0;
}()};

// Bf16Matmul's order (kGemm false) or Bf16Gemm's (true), one lane at a time.
template <bool kGemm>
float DotPortable(const uint16_t* w, const float* x, int64_t in) {
  constexpr int kAccumulators = kGemm ? 1 : 2;
  constexpr int64_t kStep = 32 * kAccumulators;
  float c[kAccumulators][16] = {};
  int64_t i = 0;
  for (; i + kStep <= in; i += kStep) {
    for (int h = 0; h < kAccumulators; ++h) {
      for (int j = 0; j < 16; ++j) {
        const int64_t k = i + 32 * h + 2 * j;
        c[h][j] = Bf16Step(c[h][j], Bf16Value(w[k + 1]), Bf16Truncate(x[k + 1]));
        c[h][j] = Bf16Step(c[h][j], Bf16Value(w[k]), Bf16Truncate(x[k]));
      }
    }
  }
  if (kGemm) return Bf16Tree16(c[0]);
  double sum = 0.0;
  for (int h = 0; h < kAccumulators; ++h) sum += static_cast<double>(Bf16Tree16(c[h]));
  for (; i < in; ++i) sum += static_cast<double>(Bf16Value(w[i]) * Bf16Truncate(x[i]));
  return static_cast<float>(sum);
}

template <bool kGemm>
void MatmulPortable(const uint16_t* w, int64_t rows, int64_t in, const float* x, int64_t n,
                    float* out) {
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t r = 0; r < rows; ++r) out[t * rows + r] = DotPortable<kGemm>(w + r * in, x + t * in, in);
  }
}

void CheckArguments(int64_t rows, int64_t in, int64_t n) {
  if (rows < 0 || in < 0 || n < 0) {
    std::fprintf(stderr, "Bf16Matmul: bad sizes rows=%lld in=%lld n=%lld\n",
                 static_cast<long long>(rows), static_cast<long long>(in),
                 static_cast<long long>(n));
    std::abort();
  }
}

#ifdef LLORCH_BF16_MATMUL_AVX2

using avx2::HorizontalSum;

// kRows weight rows (`in` apart) against one activation row split into its
// odd and even elements (xo[q] = x[2q + 1], xe[q] = x[2q], on the BF16
// grid): out[j]. A 32-bit lane of weights holds a pair: its high half is
// the odd element as an F32, shifted left the even one. Register h of a row
// is lanes 8 (h % 2) .. 8 (h % 2) + 7 of the 16-lane accumulator h / 2. The
// pair steps run under MXCSR's flush modes, the sums without. With `next`,
// the following rows are prefetched into L2 (a 4 KiB row is one page, where
// the hardware prefetchers stop).
template <bool kGemm, int kRows>
void RowsAvx2(const uint16_t* w, int64_t in, const float* xo, const float* xe, const float* x,
              float* out, const uint16_t* next) {
  constexpr int kRegisters = kGemm ? 2 : 4;
  constexpr int64_t kStep = 16 * kRegisters;
  __m256 acc[kRows][kRegisters];
  for (int j = 0; j < kRows; ++j) {
    for (int h = 0; h < kRegisters; ++h) acc[j][h] = _mm256_setzero_ps();
  }
  const __m256i high = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
  int64_t i = 0;
  {
    const Bf16FlushScope flush;
    for (; i + kStep <= in; i += kStep) {
      if (next != nullptr) {
        for (int j = 0; j < kRows; ++j) {
          for (int64_t line = 0; line < kStep; line += 32) {
            _mm_prefetch(reinterpret_cast<const char*>(next + j * in + i + line), _MM_HINT_T1);
          }
        }
      }
#pragma GCC unroll 4
      for (int h = 0; h < kRegisters; ++h) {
        const __m256 odd_x = _mm256_loadu_ps(xo + i / 2 + 8 * h);
        const __m256 even_x = _mm256_loadu_ps(xe + i / 2 + 8 * h);
#pragma GCC unroll 2
        for (int j = 0; j < kRows; ++j) {
          const __m256i v =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + j * in + i + 16 * h));
          const __m256 odd_w = _mm256_castsi256_ps(_mm256_and_si256(v, high));
          const __m256 even_w = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
          acc[j][h] = _mm256_fmadd_ps(odd_w, odd_x, acc[j][h]);
          acc[j][h] = _mm256_fmadd_ps(even_w, even_x, acc[j][h]);
        }
      }
    }
  }
  for (int j = 0; j < kRows; ++j) {
    if (kGemm) {
      out[j] = HorizontalSum(_mm256_add_ps(acc[j][0], acc[j][1]));
      continue;
    }
    double sum = 0.0;
    sum += static_cast<double>(HorizontalSum(_mm256_add_ps(acc[j][0], acc[j][1])));
    sum += static_cast<double>(HorizontalSum(_mm256_add_ps(acc[j][2], acc[j][3])));
    for (int64_t k = i; k < in; ++k) {
      sum += static_cast<double>(Bf16Value(w[j * in + k]) * Bf16Truncate(x[k]));
    }
    out[j] = static_cast<float>(sum);
  }
}

// Weight rows [begin, end) by RowsAvx2, two at a time; `split` holds each
// activation row t as xo (in / 2 floats) then xe.
template <bool kGemm>
void RowRangeAvx2(const uint16_t* w, int64_t rows, int64_t in, const float* x, int64_t n,
                  const float* split, float* out, int64_t begin, int64_t end) {
  const int64_t half = in / 2;
  int64_t r = begin;
  for (; r + 2 <= end; r += 2) {
    for (int64_t t = 0; t < n; ++t) {
      const float* xo = split + t * 2 * half;
      RowsAvx2<kGemm, 2>(w + r * in, in, xo, xo + half, x + t * in, out + t * rows + r,
                         n == 1 ? w + (r + 2) * in : nullptr);
    }
  }
  for (; r < end; ++r) {
    for (int64_t t = 0; t < n; ++t) {
      const float* xo = split + t * 2 * half;
      RowsAvx2<kGemm, 1>(w + r * in, in, xo, xo + half, x + t * in, out + t * rows + r, nullptr);
    }
  }
}

// Bf16Gemm's order (in % 32 == 0) for kRows weight rows against kTokens
// activation rows (the steps of RowsAvx2<true, ...>): lanes 0-7 of each
// output's 16-lane accumulator in a first pass over `in`, lanes 8-15 in a
// second, so that the 2 x 4 outputs' registers, the two rows' split weights
// and one activation row's pair fit the 16 ymm registers (every loop over
// them is unrolled for that): 10 loads for 16 fmas.
template <int kRows, int kTokens>
void GemmTileAvx2(const uint16_t* w, int64_t in, const float* split, float* out,
                  int64_t out_stride) {
  const int64_t half = in / 2;
  const __m256i high = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
  __m256 low_lanes[kRows][kTokens];
  for (int h = 0; h < 2; ++h) {
    __m256 acc[kRows][kTokens];
#pragma GCC unroll 2
    for (int j = 0; j < kRows; ++j) {
#pragma GCC unroll 4
      for (int t = 0; t < kTokens; ++t) acc[j][t] = _mm256_setzero_ps();
    }
    {
      const Bf16FlushScope flush;
      for (int64_t i = 16 * h; i < in; i += 32) {
        __m256 odd_w[kRows], even_w[kRows];
#pragma GCC unroll 2
        for (int j = 0; j < kRows; ++j) {
          const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + j * in + i));
          odd_w[j] = _mm256_castsi256_ps(_mm256_and_si256(v, high));
          even_w[j] = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
        }
#pragma GCC unroll 4
        for (int t = 0; t < kTokens; ++t) {
          const float* xo = split + t * in + i / 2;  // its xe: half further
          const __m256 odd_x = _mm256_loadu_ps(xo), even_x = _mm256_loadu_ps(xo + half);
#pragma GCC unroll 2
          for (int j = 0; j < kRows; ++j) {
            acc[j][t] = _mm256_fmadd_ps(odd_w[j], odd_x, acc[j][t]);
            acc[j][t] = _mm256_fmadd_ps(even_w[j], even_x, acc[j][t]);
          }
        }
      }
    }
#pragma GCC unroll 2
    for (int j = 0; j < kRows; ++j) {
#pragma GCC unroll 4
      for (int t = 0; t < kTokens; ++t) {
        if (h == 0) {
          low_lanes[j][t] = acc[j][t];
        } else {
          out[t * out_stride + j] = HorizontalSum(_mm256_add_ps(low_lanes[j][t], acc[j][t]));
        }
      }
    }
  }
}

// Bf16Gemm (in % 32 == 0) over weight rows [begin, end): blocks of 16 rows
// (in L2) against every activation row, 4 at a time (in L1 where `in` is at
// most ~2048), by tiles of 2 rows x 4 activation rows; `split` as in
// RowRangeAvx2. (Ranges of `in` carried between passes, and blocks of
// activation rows, measured no faster on the Xeon: not taken.)
void GemmRowRangeAvx2(const uint16_t* w, int64_t rows, int64_t in, int64_t n, const float* split,
                      float* out, int64_t begin, int64_t end) {
  constexpr int64_t kRowBlock = 16;
  const auto tile = [&](auto rows_c, int64_t r, int64_t t, int64_t tokens) {
    constexpr int kRows = decltype(rows_c)::value;
    const uint16_t* wr = w + r * in;
    const float* xt = split + t * in;
    float* o = out + t * rows + r;
    switch (tokens) {
      case 4: return GemmTileAvx2<kRows, 4>(wr, in, xt, o, rows);
      case 3: return GemmTileAvx2<kRows, 3>(wr, in, xt, o, rows);
      case 2: return GemmTileAvx2<kRows, 2>(wr, in, xt, o, rows);
      default: return GemmTileAvx2<kRows, 1>(wr, in, xt, o, rows);
    }
  };
  for (int64_t block = begin; block < end; block += kRowBlock) {
    const int64_t block_end = std::min(end, block + kRowBlock);
    for (int64_t t = 0; t < n; t += 4) {
      const int64_t tokens = std::min<int64_t>(4, n - t);
      int64_t r = block;
      for (; r + 2 <= block_end; r += 2) tile(std::integral_constant<int, 2>{}, r, t, tokens);
      if (r < block_end) tile(std::integral_constant<int, 1>{}, r, t, tokens);
    }
  }
}

#endif  // LLORCH_BF16_MATMUL_AVX2

// Bf16Matmul (kGemm false) or Bf16Gemm with in % 32 == 0 (true).
template <bool kGemm>
void Multiply(const uint16_t* w, int64_t rows, int64_t in, const float* x, int64_t n, float* out,
              const ParallelFor& parallel_for) {
  if (bf16_matmul_internal::UsesAvx512()) {
    // This thread's buffer, passed by pointer: the workers have their own.
    thread_local std::vector<uint16_t> xb;
    xb.resize(static_cast<size_t>(n * in));
    for (int64_t i = 0; i < n * in; ++i) xb[i] = Bf16Bits(x[i]);
    const uint16_t* xb_rows = xb.data();
    parallel_for(0, rows, [&](int64_t begin, int64_t end) {
      if (kGemm) {
        bf16_avx512::GemmRows(w, in, xb_rows, n, out, rows, begin, end);
      } else {
        bf16_avx512::DotRows(w, in, xb_rows, n, out, rows, begin, end);
      }
    });
    return;
  }
#ifdef LLORCH_BF16_MATMUL_AVX2
  const int64_t half = in / 2;
  thread_local std::vector<float> split;
  split.resize(static_cast<size_t>(n * 2 * half));
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t q = 0; q < half; ++q) {
      split[t * 2 * half + q] = Bf16Truncate(x[t * in + 2 * q + 1]);
      split[t * 2 * half + half + q] = Bf16Truncate(x[t * in + 2 * q]);
    }
  }
  const float* split_rows = split.data();  // this thread's buffer, as above
  parallel_for(0, rows, [&](int64_t begin, int64_t end) {
    if (kGemm && n > 1) {
      GemmRowRangeAvx2(w, rows, in, n, split_rows, out, begin, end);
    } else {
      RowRangeAvx2<kGemm>(w, rows, in, x, n, split_rows, out, begin, end);
    }
  });
#else
  (void)parallel_for;
  MatmulPortable<kGemm>(w, rows, in, x, n, out);
#endif
}

}  // namespace

void Bf16Matmul(const void* weight, int64_t rows, int64_t in, const float* x, int64_t n,
                float* out, const ParallelFor& parallel_for) {
  CheckArguments(rows, in, n);
  if (rows == 0 || n == 0) return;
  Multiply<false>(static_cast<const uint16_t*>(weight), rows, in, x, n, out, parallel_for);
}

void Bf16Gemm(const void* weight, int64_t rows, int64_t in, const float* x, int64_t n, float* out,
              const ParallelFor& parallel_for) {
  CheckArguments(rows, in, n);
  if (rows == 0 || n == 0) return;
  const auto* w = static_cast<const uint16_t*>(weight);
  if (in % 32 == 0) {
    Multiply<true>(w, rows, in, x, n, out, parallel_for);
  } else {
    Multiply<false>(w, rows, in, x, n, out, parallel_for);
  }
}

namespace bf16_matmul_internal {

bool UsesAvx512() {
  static const bool supported = bf16_avx512::Bf16Avx512Supported();
  return supported && avx512_allowed.load(std::memory_order_relaxed);
}

void AllowAvx512(bool allowed) { avx512_allowed.store(allowed); }

void Bf16MatmulPortable(const void* weight, int64_t rows, int64_t in, const float* x, int64_t n,
                        float* out) {
  CheckArguments(rows, in, n);
  MatmulPortable<false>(static_cast<const uint16_t*>(weight), rows, in, x, n, out);
}

void Bf16GemmPortable(const void* weight, int64_t rows, int64_t in, const float* x, int64_t n,
                      float* out) {
  CheckArguments(rows, in, n);
  const auto* w = static_cast<const uint16_t*>(weight);
  if (in % 32 == 0) {
    MatmulPortable<true>(w, rows, in, x, n, out);
  } else {
    MatmulPortable<false>(w, rows, in, x, n, out);
  }
}

}  // namespace bf16_matmul_internal
}  // namespace llorch
