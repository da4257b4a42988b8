#include "worker/model/bf16_avx512.h"

#include <algorithm>
#include <cstring>

#include "worker/model/cpu_isa.h"

#if defined(__AVX512F__) && defined(__AVX512BF16__) && defined(__AVX512VL__) && \
    defined(__AVX512BW__)
#define LLORCH_BF16_AVX512 1
#include <immintrin.h>
#endif

namespace llorch {
namespace bf16_avx512 {

#ifdef LLORCH_BF16_AVX512
namespace {

float Bf16ToFloat(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// Lanes (j + j+8), then (+ j+4), (+ j+2), (+ j+1): the decode order's tree.
inline float ReduceTree(__m512 v) {
  const __m256 v8 = _mm256_add_ps(_mm512_extractf32x8_ps(v, 1), _mm512_castps512_ps256(v));
  const __m128 v4 = _mm_add_ps(_mm256_extractf128_ps(v8, 1), _mm256_castps256_ps128(v8));
  const __m128 v2 = _mm_add_ps(v4, _mm_movehl_ps(v4, v4));
  return _mm_cvtss_f32(_mm_add_ss(v2, _mm_movehdup_ps(v2)));
}

inline __m512bh Bf16x32(const uint16_t* p) {
  return reinterpret_cast<__m512bh>(_mm512_loadu_si512(p));
}

// R weight rows (`in` apart) against one activation row: out[j * out_step].
// Two accumulators of 16 lanes over 64-element steps, each reduced by the
// tree, summed in double with the in % 64 tail's products (ggml's
// vec_dot_bf16 under AVX512-BF16). With `next`, the following R rows are
// prefetched into L2 (a row of 2048 BF16 values is one 4 KiB page, where the
// hardware prefetchers stop).
template <int R>
inline void DotTile(const uint16_t* w, int64_t in, const uint16_t* x, float* out,
                    int64_t out_step, const uint16_t* next) {
  __m512 c1[R], c2[R];
#pragma GCC unroll 4
  for (int j = 0; j < R; ++j) c1[j] = c2[j] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 64 <= in; i += 64) {
    if (next != nullptr) {
#pragma GCC unroll 4
      for (int j = 0; j < R; ++j) {
        _mm_prefetch(reinterpret_cast<const char*>(next + j * in + i), _MM_HINT_T1);
        _mm_prefetch(reinterpret_cast<const char*>(next + j * in + i + 32), _MM_HINT_T1);
      }
    }
    const __m512bh x0 = Bf16x32(x + i), x1 = Bf16x32(x + i + 32);
#pragma GCC unroll 4
    for (int j = 0; j < R; ++j) {
      c1[j] = _mm512_dpbf16_ps(c1[j], Bf16x32(w + j * in + i), x0);
      c2[j] = _mm512_dpbf16_ps(c2[j], Bf16x32(w + j * in + i + 32), x1);
    }
  }
#pragma GCC unroll 4
  for (int j = 0; j < R; ++j) {
    double sum = 0.0;
    sum += static_cast<double>(ReduceTree(c1[j]));
    sum += static_cast<double>(ReduceTree(c2[j]));
    for (int64_t k = i; k < in; ++k) {
      sum += static_cast<double>(Bf16ToFloat(w[j * in + k]) * Bf16ToFloat(x[k]));
    }
    out[j * out_step] = static_cast<float>(sum);
  }
}

// RM weight rows against RN activation rows, all `in` apart:
// out[j * out_stride + i] for i < RM, j < RN. Each output one 16-lane
// accumulator over 32-element steps, reduced by the tree (tinyBLAS's BF16
// product in llama.cpp's llamafile sgemm). in % 32 == 0.
template <int RM, int RN>
__attribute__((noinline))  // inlined into GemmBlock, GCC kept the accumulators in memory
void GemmTile(const uint16_t* w, const uint16_t* x, int64_t in, float* out,
                     int64_t out_stride) {
  __m512 acc[RN][RM];
#pragma GCC unroll 8
  for (int j = 0; j < RN; ++j) {
#pragma GCC unroll 8
    for (int i = 0; i < RM; ++i) acc[j][i] = _mm512_setzero_ps();
  }
  for (int64_t l = 0; l < in; l += 32) {
    __m512bh a[RM];
#pragma GCC unroll 8
    for (int i = 0; i < RM; ++i) a[i] = Bf16x32(w + i * in + l);
#pragma GCC unroll 8
    for (int j = 0; j < RN; ++j) {
      const __m512bh b = Bf16x32(x + j * in + l);
#pragma GCC unroll 8
      for (int i = 0; i < RM; ++i) acc[j][i] = _mm512_dpbf16_ps(acc[j][i], a[i], b);
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < RN; ++j) {
#pragma GCC unroll 8
    for (int i = 0; i < RM; ++i) out[j * out_stride + i] = ReduceTree(acc[j][i]);
  }
}

// Weight rows [r0, r1) against activation rows [t0, t1) by tiles of RM x RN,
// smaller tiles at the edges.
template <int RM, int RN>
void GemmBlock(const uint16_t* w, int64_t in, const uint16_t* xb,
                                         float* out, int64_t out_stride, int64_t r0, int64_t r1,
                                         int64_t t0, int64_t t1) {
  int64_t r = r0;
  for (; r + RM <= r1; r += RM) {
    int64_t t = t0;
    for (; t + RN <= t1; t += RN) {
      GemmTile<RM, RN>(w + r * in, xb + t * in, in, out + t * out_stride + r, out_stride);
    }
    for (; t < t1; ++t) {
      GemmTile<RM, 1>(w + r * in, xb + t * in, in, out + t * out_stride + r, out_stride);
    }
  }
  for (; r < r1; ++r) {
    int64_t t = t0;
    for (; t + RN <= t1; t += RN) {
      GemmTile<1, RN>(w + r * in, xb + t * in, in, out + t * out_stride + r, out_stride);
    }
    for (; t < t1; ++t) {
      GemmTile<1, 1>(w + r * in, xb + t * in, in, out + t * out_stride + r, out_stride);
    }
  }
}

}  // namespace

bool Bf16Avx512Supported() {
  return CpuIsaAllowed(CpuIsa::kAvx512) && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
}

void DotRows(const uint16_t* w, int64_t in, const uint16_t* xb, int64_t n, float* out,
             int64_t out_stride, int64_t begin, int64_t end) {
  constexpr int64_t kRows = 4;
  int64_t r = begin;
  for (; r + kRows <= end; r += kRows) {
    const uint16_t* rows = w + r * in;
    if (n == 1) {
      DotTile<kRows>(rows, in, xb, out + r, 1, rows + kRows * in);
      continue;
    }
    for (int64_t t = 0; t < n; ++t) {  // the 4 rows stay in L1 for every job
      DotTile<kRows>(rows, in, xb + t * in, out + t * out_stride + r, 1, nullptr);
    }
  }
  for (; r < end; ++r) {
    for (int64_t t = 0; t < n; ++t) {
      DotTile<1>(w + r * in, in, xb + t * in, out + t * out_stride + r, 1, nullptr);
    }
  }
}

void GemmRows(const uint16_t* w, int64_t in, const uint16_t* xb, int64_t n, float* out,
              int64_t out_stride, int64_t begin, int64_t end) {
  // Activation rows in chunks that stay in L2 while the range's weight rows
  // pass (6 weight rows at a time, held in L1 meanwhile).
  constexpr int64_t kChunk = 96;
  for (int64_t t0 = 0; t0 < n; t0 += kChunk) {
    GemmBlock<6, 4>(w, in, xb, out, out_stride, begin, end, t0, std::min(n, t0 + kChunk));
  }
}

#else  // built without the AVX-512 kernels

bool Bf16Avx512Supported() { return false; }
void DotRows(const uint16_t*, int64_t, const uint16_t*, int64_t, float*, int64_t, int64_t,
             int64_t) {}
void GemmRows(const uint16_t*, int64_t, const uint16_t*, int64_t, float*, int64_t, int64_t,
              int64_t) {}

#endif  // LLORCH_BF16_AVX512

}  // namespace bf16_avx512
}  // namespace llorch
