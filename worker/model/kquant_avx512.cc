#include "worker/model/kquant_avx512.h"

#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512BW__) && \
    defined(__AVX512VNNI__)
#define LLORCH_KQUANT_AVX512 1
#include <immintrin.h>

#include "worker/model/avx512_helpers.h"
#endif

// Compiled with -ffp-contract=off: only the fma intrinsics written here fuse.

namespace llorch {
namespace kquant_avx512 {

#ifdef LLORCH_KQUANT_AVX512
namespace {

using kquant_matmul_internal::kGroupBlockBytes;
using kquant_matmul_internal::kGroupD;
using kquant_matmul_internal::kGroupDmin;
using kquant_matmul_internal::kGroupMins;
using kquant_matmul_internal::kGroupQs;
using kquant_matmul_internal::kGroupScales;
using kquant_matmul_internal::Q8KBlock;

using avx512::Broadcast4;
using avx512::LoadPair128;
using avx512::LoadPair256;
using avx512::LoadPair64;

// Activation sums per sub-block of 32 as int16 pairs: word j holds
// sub-blocks 2j and 2j + 1.
inline void GroupSums(const Q8KBlock& a, int32_t sums[4]) {
  const __m256i bsums = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.bsums));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(sums),
                   _mm_hadd_epi16(_mm256_castsi256_si128(bsums),
                                  _mm256_extracti128_si256(bsums, 1)));
}

// One block's scaled sub-block products for kCols activation rows: per
// pair of sub-blocks j (2j from the low nibbles, 2j + 1 from the high), the
// exact int32 sum of quant x activation x scale of each of the 16 rows;
// `on_pair(c, j, sum)` receives them in order j = 0..3 for each c.
template <int kCols, class OnPair>
inline void BlockProducts(const uint8_t* b0, const uint8_t* b1, const Q8KBlock* const blocks[],
                          OnPair on_pair) {
  const __m512i low_nibble = _mm512_set1_epi8(0x0f);
  for (int j = 0; j < 4; ++j) {
    __m512i low[kCols], high[kCols];
    for (int c = 0; c < kCols; ++c) low[c] = high[c] = _mm512_setzero_si512();
    for (int k = 0; k < 8; ++k) {
      const size_t at = kGroupQs + 256 * j + 32 * k;
      const __m512i q = LoadPair256(b0 + at, b1 + at);
      const __m512i q_low = _mm512_and_si512(q, low_nibble);
      const __m512i q_high = _mm512_and_si512(_mm512_srli_epi16(q, 4), low_nibble);
      for (int c = 0; c < kCols; ++c) {
        const int8_t* a = blocks[c]->q + 64 * j + 4 * k;
        low[c] = _mm512_dpbusd_epi32(low[c], q_low, Broadcast4(a));
        high[c] = _mm512_dpbusd_epi32(high[c], q_high, Broadcast4(a + 32));
      }
    }
    const size_t at = kGroupScales + 16 * j;
    const __m512i scale_low = _mm512_cvtepu8_epi32(LoadPair64(b0 + at, b1 + at));
    const __m512i scale_high = _mm512_cvtepu8_epi32(LoadPair64(b0 + at + 8, b1 + at + 8));
    for (int c = 0; c < kCols; ++c) {
      on_pair(c, j, _mm512_add_epi32(_mm512_mullo_epi32(low[c], scale_low),
                                     _mm512_mullo_epi32(high[c], scale_high)));
    }
  }
}

template <int kCols>
__attribute__((noinline)) void PairTile(const uint8_t* group0, const uint8_t* group1,
                                        int64_t num_blocks, const Q8KBlock* const act[],
                                        const bool per_64[], float* const out[]) {
  __m512 acc[kCols], acc_min[kCols];
  for (int c = 0; c < kCols; ++c) acc[c] = acc_min[c] = _mm512_setzero_ps();
  for (int64_t b = 0; b < num_blocks; ++b) {
    const uint8_t* b0 = group0 + b * kGroupBlockBytes;
    const uint8_t* b1 = group1 + b * kGroupBlockBytes;
    const Q8KBlock* blocks[kCols];
    for (int c = 0; c < kCols; ++c) blocks[c] = act[c] + b;
    const __m512 dw = _mm512_cvtph_ps(LoadPair128(b0 + kGroupD, b1 + kGroupD));
    const __m512 dmin = _mm512_cvtph_ps(LoadPair128(b0 + kGroupDmin, b1 + kGroupDmin));
    __m512i total[kCols];
    for (int c = 0; c < kCols; ++c) total[c] = _mm512_setzero_si512();
    BlockProducts<kCols>(b0, b1, blocks, [&](int c, int, __m512i sum) {
      if (per_64[c]) {
        const __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(blocks[c]->d));
        acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, acc[c]);
      } else {
        total[c] = _mm512_add_epi32(total[c], sum);
      }
    });
    __m512i mins[4];  // int16 pairs per row: mins of sub-blocks 2j, 2j + 1
    for (int j = 0; j < 4; ++j) {
      const size_t at = kGroupMins + 16 * j;
      mins[j] = _mm512_cvtepu8_epi16(LoadPair128(b0 + at, b1 + at));
    }
    for (int c = 0; c < kCols; ++c) {
      const __m512 dx = _mm512_set1_ps(blocks[c]->d);
      const __m512 min_scale = _mm512_mul_ps(dmin, dx);
      alignas(16) int32_t sums[4];
      GroupSums(*blocks[c], sums);
      __m512i pairs[4];
      for (int j = 0; j < 4; ++j) pairs[j] = _mm512_madd_epi16(mins[j], _mm512_set1_epi32(sums[j]));
      if (per_64[c]) {
        for (int j = 0; j < 4; ++j) {
          acc_min[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(pairs[j]), min_scale, acc_min[c]);
        }
      } else {
        const __m512i min_total = _mm512_add_epi32(_mm512_add_epi32(pairs[0], pairs[1]),
                                                   _mm512_add_epi32(pairs[2], pairs[3]));
        acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(total[c]), _mm512_mul_ps(dw, dx), acc[c]);
        acc_min[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(min_total), min_scale, acc_min[c]);
      }
    }
  }
  for (int c = 0; c < kCols; ++c) _mm512_storeu_ps(out[c], _mm512_sub_ps(acc[c], acc_min[c]));
}

}  // namespace

bool Supported() {
  static const bool supported =
      __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  return supported;
}

void Q4KGroupPair(const uint8_t* group, size_t group_bytes, int64_t num_blocks, int cols,
                  const Q8KBlock* const act[], const bool per_64[], float* const out[]) {
  const uint8_t* second = group + group_bytes;
  switch (cols) {
    case 4: return PairTile<4>(group, second, num_blocks, act, per_64, out);
    case 3: return PairTile<3>(group, second, num_blocks, act, per_64, out);
    case 2: return PairTile<2>(group, second, num_blocks, act, per_64, out);
    default: return PairTile<1>(group, second, num_blocks, act, per_64, out);
  }
}

#else  // !LLORCH_KQUANT_AVX512

bool Supported() { return false; }

void Q4KGroupPair(const uint8_t*, size_t, int64_t, int, const kquant_matmul_internal::Q8KBlock* const[],
                  const bool[], float* const[]) {
  std::abort();  // callers check Supported()
}

#endif

}  // namespace kquant_avx512
}  // namespace llorch
