#include "worker/model/kquant_avx512.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512BW__) && \
    defined(__AVX512VNNI__)
#define LLORCH_KQUANT_AVX512 1
#include <immintrin.h>

#include "worker/model/avx512_helpers.h"
#include "worker/model/cpu_isa.h"
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

// Activation sums per sub-block of 32 as 8 int16 (ggml's hadd of bsums).
inline __m128i GroupSums16(const Q8KBlock& a) {
  const __m256i bsums = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.bsums));
  return _mm_hadd_epi16(_mm256_castsi256_si128(bsums), _mm256_extracti128_si256(bsums, 1));
}

// The same as int16 pairs: word j holds sub-blocks 2j and 2j + 1.
inline void GroupSums(const Q8KBlock& a, int32_t sums[4]) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(sums), GroupSums16(a));
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

// ---------------------------------------------------------------------------
// Q5_K rows in the file's layout, vec_dot's order (llama.cpp's AVX2 and
// AVX-512 libraries alike): two weight rows side by side in 512-bit registers
// (the first's 8 lanes low, the second's high), against kCols activation
// rows. Per row the same steps as the AVX2 kernel (Avx2Q4KOrQ5K<true, false>
// in kquant_matmul.cc): int16 pair products by maddubs, scaled by madd, summed
// over the block in 8 int32 lanes, one fma per block into 8 float lanes; the
// mins through a scalar fma; at the end the lanes' sum plus that.

constexpr size_t kQ5KBytes = 176;  // d, dmin, scales[12], qh[32], qs[128]

// Q5_K's scale/min unpacking (ggml's utmp words) for two rows at once: the
// 8 scales of each row as int16, in both 128-bit lanes of its half
// (`scales`), and the 8 mins of the first row in the low 128 bits of `mins`,
// the second's in the high.
inline void UnpackScalesAndMinsPair(const uint8_t* block0, const uint8_t* block1,
                                    __m512i* scales, __m256i* mins) {
  // 16 bytes from offset 4: the 12 scale bytes and 4 of qh.
  const __m256i u = LoadPair128(block0 + 4, block1 + 4);
  const __m256i a = _mm256_shuffle_epi32(u, _MM_SHUFFLE(2, 1, 2, 0));  // u0 u2 u1 u2
  const __m256i b = _mm256_shuffle_epi32(u, _MM_SHUFFLE(1, 1, 0, 0));  // u0 u0 u1 u1
  const __m256i low6 = _mm256_and_si256(a, _mm256_set1_epi32(0x3f3f3f3f));
  const __m256i high = _mm256_or_si256(
      _mm256_and_si256(_mm256_srlv_epi32(a, _mm256_set_epi32(4, 0, 0, 0, 4, 0, 0, 0)),
                       _mm256_set1_epi32(0x0f0f0f0f)),
      _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(b, 6),
                                         _mm256_set1_epi32(0x03030303)), 4));
  const __m256i words = _mm256_blend_epi32(low6, high, 0b10101010);  // sc0-7 m0-7 per row
  const __m512i wide = _mm512_cvtepu8_epi16(words);  // row 0: 128-bit lanes 0, 1; row 1: 2, 3
  *scales = _mm512_shuffle_i64x2(wide, wide, _MM_SHUFFLE(2, 2, 0, 0));
  *mins = _mm512_castsi512_si256(_mm512_shuffle_i64x2(wide, wide, _MM_SHUFFLE(3, 1, 3, 1)));
}

// (lo + hi), then (+ 2 apart), then (+ 1 apart): the AVX2 kernel's sum of 8 lanes.
inline float SumOf8(__m256 v) {
  __m128 r = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}

// Byte shuffles (per 128-bit lane) that broadcast int16 element k.
inline __m512i BroadcastWordShuffle(int k) {
  return _mm512_set1_epi16(static_cast<int16_t>((2 * k) | ((2 * k + 1) << 8)));
}

// Block b's share of the next pair of rows (the two rows' bytes follow each
// other), asked of the cache as far into it as this pair has come: a decode
// step reads its weights from memory, where the hardware prefetchers alone
// left the row loops waiting on each block's first load.
template <size_t kBlockBytes>
inline void PrefetchNextPair(const uint8_t* row0, int64_t num_blocks, int64_t b) {
  const uint8_t* next = row0 + 2 * (num_blocks + b) * kBlockBytes;
  for (size_t line = 0; line < 2 * kBlockBytes; line += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(next + line), _MM_HINT_T0);
  }
}

template <int kCols>
__attribute__((noinline)) void Q5KRowPairTile(const uint8_t* row0, const uint8_t* row1,
                                              int64_t num_blocks, const Q8KBlock* act,
                                              int64_t act_stride, float* out,
                                              int64_t out_stride) {
  const __m512i low_nibble = _mm512_set1_epi8(0x0f);
  const __m512i fifth_bit = _mm512_set1_epi8(0x10);
  __m512 acc[kCols];
  float summs[kCols][2];
  for (int c = 0; c < kCols; ++c) {
    acc[c] = _mm512_setzero_ps();
    summs[c][0] = summs[c][1] = 0.0f;
  }
  for (int64_t b = 0; b < num_blocks; ++b) {
    const uint8_t* block0 = row0 + b * kQ5KBytes;
    const uint8_t* block1 = row1 + b * kQ5KBytes;
    PrefetchNextPair<kQ5KBytes>(row0, num_blocks, b);
    // dw0, dmin0, dw1, dmin1.
    int32_t header0, header1;
    std::memcpy(&header0, block0, 4);
    std::memcpy(&header1, block1, 4);
    const __m128 d_dmin = _mm_cvtph_ps(
        _mm_unpacklo_epi32(_mm_cvtsi32_si128(header0), _mm_cvtsi32_si128(header1)));
    alignas(16) float header[4];
    _mm_store_ps(header, d_dmin);
    __m512i scales;
    __m256i mins;
    UnpackScalesAndMinsPair(block0, block1, &scales, &mins);
    const __m512i high_bits = LoadPair256(block0 + 16, block1 + 16);
    __m512i sum[kCols];
    for (int c = 0; c < kCols; ++c) sum[c] = _mm512_setzero_si512();
    for (int j = 0; j < 4; ++j) {  // groups 2j (low nibbles) and 2j + 1 (high)
      // Bit g of qh byte l: the fifth bit of element l of group g (+16 where set).
      const __m512i bits = LoadPair256(block0 + 48 + 32 * j, block1 + 48 + 32 * j);
      const __m512i nibbles_low = _mm512_and_si512(bits, low_nibble);
      const __m512i nibbles_high = _mm512_and_si512(_mm512_srli_epi16(bits, 4), low_nibble);
      const __m512i q_low = _mm512_mask_add_epi8(
          nibbles_low, _mm512_test_epi8_mask(high_bits, _mm512_set1_epi8(1 << (2 * j))),
          nibbles_low, fifth_bit);
      const __m512i q_high = _mm512_mask_add_epi8(
          nibbles_high,
          _mm512_test_epi8_mask(high_bits, _mm512_set1_epi8(static_cast<char>(2 << (2 * j)))),
          nibbles_high, fifth_bit);
      const __m512i scale_low = _mm512_shuffle_epi8(scales, BroadcastWordShuffle(2 * j));
      const __m512i scale_high = _mm512_shuffle_epi8(scales, BroadcastWordShuffle(2 * j + 1));
      for (int c = 0; c < kCols; ++c) {
        const int8_t* q8 = act[c * act_stride + b].q + 64 * j;
        const __m512i y_low =
            _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8)));
        const __m512i y_high = _mm512_broadcast_i64x4(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8 + 32)));
        // u8 x s8 pairs -> int16 (no saturation: 2 * 31 * 127 < 32768).
        const __m512i p_low = _mm512_madd_epi16(_mm512_maddubs_epi16(q_low, y_low), scale_low);
        const __m512i p_high =
            _mm512_madd_epi16(_mm512_maddubs_epi16(q_high, y_high), scale_high);
        sum[c] = _mm512_add_epi32(sum[c], _mm512_add_epi32(p_low, p_high));
      }
    }
    for (int c = 0; c < kCols; ++c) {
      const Q8KBlock& a = act[c * act_stride + b];
      // Each row's mins times the activation's group sums: 4 int32 per row.
      const __m128i group_sums = GroupSums16(a);
      const __m256i min_pairs =
          _mm256_madd_epi16(mins, _mm256_broadcastsi128_si256(group_sums));
      __m256i totals = _mm256_hadd_epi32(min_pairs, min_pairs);
      totals = _mm256_hadd_epi32(totals, totals);  // row 0: lane 0, row 1: lane 4
      const int32_t min_total[2] = {_mm256_extract_epi32(totals, 0),
                                    _mm256_extract_epi32(totals, 4)};
      for (int r = 0; r < 2; ++r) {
        const float dmin = -a.d * header[2 * r + 1];
        summs[c][r] = std::fma(dmin, static_cast<float>(min_total[r]), summs[c][r]);
      }
      const __m512 scale = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(a.d * header[0]),
                                                _mm512_set1_ps(a.d * header[2]));
      acc[c] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(sum[c]), acc[c]);
    }
  }
  for (int c = 0; c < kCols; ++c) {
    out[c * out_stride] = SumOf8(_mm512_castps512_ps256(acc[c])) + summs[c][0];
    out[c * out_stride + 1] =
        SumOf8(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[c]), 1))) +
        summs[c][1];
  }
}

// Byte shuffles that spread scales 2i and 2i + 1 of a Q6_K block over 8
// bytes each (the AVX2 kernel's kScalePairShuffle), for both 128-bit lanes.
inline __m256i ScalePairShuffle(int i) {
  const __m128i pattern = _mm_set_epi64x(0x0101010101010101LL * (2 * i + 1),
                                         0x0101010101010101LL * (2 * i));
  return _mm256_broadcastsi128_si256(pattern);
}

constexpr size_t kQ6KBytes = 210;  // ql[128], qh[64], scales[16], d

// Q6_K rows two at a time: the AVX2 kernel's steps (Avx2Q6K in
// kquant_matmul.cc) for each row in its half of the registers; six-bit
// quants from ql's nibbles and qh's pairs, the -32 offset taken off through
// the activations' bsums, one fma per block and row.
template <int kCols>
__attribute__((noinline)) void Q6KRowPairTile(const uint8_t* row0, const uint8_t* row1,
                                              int64_t num_blocks, const Q8KBlock* act,
                                              int64_t act_stride, float* out,
                                              int64_t out_stride) {
  const __m512i m15 = _mm512_set1_epi8(15), m3 = _mm512_set1_epi8(3);
  const __m512i m12 = _mm512_set1_epi8(12), m48 = _mm512_set1_epi8(48);
  const __m512i m192 = _mm512_set1_epi8(static_cast<char>(0xc0));
  __m512 acc[kCols];
  for (int c = 0; c < kCols; ++c) acc[c] = _mm512_setzero_ps();
  for (int64_t b = 0; b < num_blocks; ++b) {
    const uint8_t* block0 = row0 + b * kQ6KBytes;
    const uint8_t* block1 = row1 + b * kQ6KBytes;
    PrefetchNextPair<kQ6KBytes>(row0, num_blocks, b);
    // 16 int8 scales per row: row 0 in the low 128-bit lane, row 1 above.
    const __m256i scales = _mm256_set_m128i(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(block1 + 192)),
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(block0 + 192)));
    __m512i sum[kCols];
    for (int c = 0; c < kCols; ++c) sum[c] = _mm512_setzero_si512();
    for (int half = 0; half < 2; ++half) {  // elements 128 * half + [0, 128)
      const __m512i low1 = LoadPair256(block0 + 64 * half, block1 + 64 * half);
      const __m512i low2 = LoadPair256(block0 + 64 * half + 32, block1 + 64 * half + 32);
      const __m512i high = LoadPair256(block0 + 128 + 32 * half, block1 + 128 + 32 * half);
      __m512i q[4], sc[4];
      q[0] = _mm512_or_si512(_mm512_and_si512(low1, m15),
                             _mm512_slli_epi16(_mm512_and_si512(high, m3), 4));
      q[1] = _mm512_or_si512(_mm512_and_si512(low2, m15),
                             _mm512_slli_epi16(_mm512_and_si512(high, m12), 2));
      q[2] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(low1, 4), m15),
                             _mm512_and_si512(high, m48));
      q[3] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(low2, 4), m15),
                             _mm512_srli_epi16(_mm512_and_si512(high, m192), 2));
      for (int k = 0; k < 4; ++k) {
        // Row 0's 16 int16 scales of this chunk, then row 1's.
        sc[k] = _mm512_cvtepi8_epi16(_mm256_shuffle_epi8(scales, ScalePairShuffle(4 * half + k)));
      }
      for (int c = 0; c < kCols; ++c) {
        const int8_t* q8 = act[c * act_stride + b].q + 128 * half;
        __m512i p[4];
        for (int k = 0; k < 4; ++k) {
          const __m512i y = _mm512_broadcast_i64x4(
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8 + 32 * k)));
          // No saturation: 2 * 63 * 127 < 32768.
          p[k] = _mm512_madd_epi16(sc[k], _mm512_maddubs_epi16(q[k], y));
        }
        sum[c] = _mm512_add_epi32(sum[c], _mm512_add_epi32(p[0], p[1]));
        sum[c] = _mm512_add_epi32(sum[c], _mm512_add_epi32(p[2], p[3]));
      }
    }
    const __m512i scales16 = _mm512_cvtepi8_epi16(scales);
    uint16_t half_dw[2];
    std::memcpy(&half_dw[0], block0 + 208, 2);
    std::memcpy(&half_dw[1], block1 + 208, 2);
    const float dw0 = _cvtsh_ss(half_dw[0]), dw1 = _cvtsh_ss(half_dw[1]);
    for (int c = 0; c < kCols; ++c) {
      const Q8KBlock& a = act[c * act_stride + b];
      // The -32 offset of every quant: 32 * sum of scale * (sums of 16).
      const __m512i bsums =
          _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.bsums)));
      const __m512i offset = _mm512_slli_epi32(_mm512_madd_epi16(bsums, scales16), 5);
      const __m512 d = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(a.d * dw0),
                                            _mm512_set1_ps(a.d * dw1));
      acc[c] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(sum[c], offset)), acc[c]);
    }
  }
  for (int c = 0; c < kCols; ++c) {
    out[c * out_stride] = SumOf8(_mm512_castps512_ps256(acc[c]));
    out[c * out_stride + 1] =
        SumOf8(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[c]), 1)));
  }
}

}  // namespace

bool Supported() {
  static const bool supported =
      CpuIsaAllowed(CpuIsa::kAvx512) && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  return supported;
}

// fn(std::integral_constant<int, cols>{}) for cols 1..4 (1 below that).
template <class Fn>
void ForCols(int cols, Fn&& fn) {
  switch (cols) {
    case 4: return fn(std::integral_constant<int, 4>{});
    case 3: return fn(std::integral_constant<int, 3>{});
    case 2: return fn(std::integral_constant<int, 2>{});
    default: return fn(std::integral_constant<int, 1>{});
  }
}

void Q4KGroupPair(const uint8_t* group, size_t group_bytes, int64_t num_blocks, int cols,
                  const Q8KBlock* const act[], const bool per_64[], float* const out[]) {
  const uint8_t* second = group + group_bytes;
  ForCols(cols, [&](auto k) { PairTile<k()>(group, second, num_blocks, act, per_64, out); });
}

void Q5KRowPair(const uint8_t* row0, int64_t num_blocks, int cols, const Q8KBlock* act,
                int64_t act_stride, float* out, int64_t out_stride) {
  const uint8_t* row1 = row0 + num_blocks * kQ5KBytes;
  ForCols(cols, [&](auto k) {
    Q5KRowPairTile<k()>(row0, row1, num_blocks, act, act_stride, out, out_stride);
  });
}

void Q6KRowPair(const uint8_t* row0, int64_t num_blocks, int cols, const Q8KBlock* act,
                int64_t act_stride, float* out, int64_t out_stride) {
  const uint8_t* row1 = row0 + num_blocks * kQ6KBytes;
  ForCols(cols, [&](auto k) {
    Q6KRowPairTile<k()>(row0, row1, num_blocks, act, act_stride, out, out_stride);
  });
}

#else  // !LLORCH_KQUANT_AVX512

bool Supported() { return false; }

void Q4KGroupPair(const uint8_t*, size_t, int64_t, int, const kquant_matmul_internal::Q8KBlock* const[],
                  const bool[], float* const[]) {
  std::abort();  // callers check Supported()
}

void Q5KRowPair(const uint8_t*, int64_t, int, const kquant_matmul_internal::Q8KBlock*, int64_t,
                float*, int64_t) {
  std::abort();  // callers check Supported()
}

void Q6KRowPair(const uint8_t*, int64_t, int, const kquant_matmul_internal::Q8KBlock*, int64_t,
                float*, int64_t) {
  std::abort();  // callers check Supported()
}

#endif

}  // namespace kquant_avx512
}  // namespace llorch
