#include "worker/model/kquant_matmul.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/float_bits.h"
#include "worker/model/kquant_avx512.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define LLORCH_QUANT_MATMUL_AVX2 1
#include <immintrin.h>

#include "worker/model/avx2_helpers.h"
#endif

// Exactness notes (what ggml's x86 build computes; checked against the
// prebuilt libggml-cpu-haswell.so and, on AVX-512 CPUs, -zen4/-skylakex):
// - Activations: quantize_row_q8_K_ref: the signed value of largest
//   magnitude (the first on ties) sets iscale = -127 / max, q = round-half-
//   even(iscale * x) capped at 127, d = 1 / iscale, bsums per 16.
// - Integer products are exact whatever the order; what matters is which
//   lane a product lands in (vec_dot) and the float operations, written here
//   with explicit fma() (this file is compiled with -ffp-contract=off).
// - Q5_K's mins term: ggml's `summs += dmin * sum` is fused by its compiler
//   (as `summs += m * s` for Q4_1/Q5_1): summs = fma(dmin, sum, summs).
// Block layouts (ggml-common.h): Q4_K f16 d, f16 dmin, scales[12], qs[128];
// Q5_K the same with qh[32] before qs; Q6_K ql[128], qh[64], int8
// scales[16], f16 d.

namespace llorch {
namespace {

constexpr size_t kQ4KBytes = 144;
constexpr size_t kQ5KBytes = 176;
constexpr size_t kQ6KBytes = 210;

[[noreturn]] void Fail(const char* message) {
  std::fprintf(stderr, "KQuantMatmul: %s\n", message);
  std::abort();
}

float HalfAt(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, sizeof(bits));
  return HalfToFloat(bits);
}

using kquant_matmul_internal::Q8KBlock;
using kquant_matmul_internal::QuantizeRowQ8K;

// The 8 six-bit scales and 8 mins of a Q4_K/Q5_K block (12 packed bytes).
void ScalesAndMins(const uint8_t* packed, uint8_t scales[8], uint8_t mins[8]) {
  constexpr uint32_t kMask1 = 0x3f3f3f3f, kMask2 = 0x0f0f0f0f, kMask3 = 0x03030303;
  uint32_t u[4];
  std::memcpy(u, packed, 12);
  u[3] = ((u[2] >> 4) & kMask2) | (((u[1] >> 6) & kMask3) << 4);
  const uint32_t low_mins = u[1] & kMask1;
  u[1] = (u[2] & kMask2) | (((u[0] >> 6) & kMask3) << 4);
  u[2] = low_mins;
  u[0] &= kMask1;
  std::memcpy(scales, u, 8);
  std::memcpy(mins, u + 2, 8);
}

// Σ_k mins[k] * (sum of activation quants of 32-element group k): exact.
int32_t MinsTimesSums(const uint8_t mins[8], const Q8KBlock& a, int32_t pairs[4]) {
  int32_t total = 0;
  for (int i = 0; i < 4; ++i) {
    pairs[i] = mins[2 * i] * (a.bsums[4 * i] + a.bsums[4 * i + 1]) +
               mins[2 * i + 1] * (a.bsums[4 * i + 2] + a.bsums[4 * i + 3]);
    total += pairs[i];
  }
  return total;
}

// ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)): ggml's hsum_float_8.
float HorizontalSum8(const float* a) {
  return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

// ---------------------------------------------------------------------------
// Portable code: vec_dot's lanes, element by element.

// Q4_K/Q5_K: quant of element e (0..255) of a block.
int Q4KQuant(const uint8_t* block, int e) {
  const uint8_t byte = block[16 + (e / 64) * 32 + e % 32];
  return (e % 64) < 32 ? byte & 15 : byte >> 4;
}
int Q5KQuant(const uint8_t* block, int e) {
  const uint8_t byte = block[48 + (e / 64) * 32 + e % 32];
  const int low = (e % 64) < 32 ? byte & 15 : byte >> 4;
  return low | (((block[16 + e % 32] >> (e / 32)) & 1) << 4);
}
// Q6_K: unsigned quant (0..63; the value is q - 32).
int Q6KQuant(const uint8_t* block, int e) {
  const int half = e / 128, k = (e % 128) / 32, l = e % 32;
  const uint8_t low = block[64 * half + (k % 2) * 32 + l];
  const uint8_t high = block[128 + 32 * half + l];
  return ((k < 2 ? low & 15 : low >> 4)) | (((high >> (2 * k)) & 3) << 4);
}

void LanesQ4KOrQ5K(GgmlType type, const uint8_t* block, const uint8_t scales[8],
                   const Q8KBlock& a, int32_t lanes[8]) {
  std::fill(lanes, lanes + 8, 0);
  for (int e = 0; e < kKBlock; ++e) {
    const int q = type == GgmlType::kQ4_K ? Q4KQuant(block, e) : Q5KQuant(block, e);
    lanes[(e % 32) / 4] += scales[e / 32] * q * a.q[e];
  }
}

void LanesQ6K(const uint8_t* block, const Q8KBlock& a, int32_t lanes[8]) {
  const int8_t* scales = reinterpret_cast<const int8_t*>(block + 192);
  std::fill(lanes, lanes + 8, 0);
  for (int e = 0; e < kKBlock; ++e) {
    lanes[(e % 32) / 4] += scales[e / 16] * Q6KQuant(block, e) * a.q[e];
  }
  for (int lane = 0; lane < 8; ++lane) {  // the -32 offset, via the sums
    lanes[lane] -= 32 * (a.bsums[2 * lane] * scales[2 * lane] +
                         a.bsums[2 * lane + 1] * scales[2 * lane + 1]);
  }
}

// `grouped`: the row is one of a group of 4 for llama.cpp's repacked gemm,
// which accumulates in float per 64 elements instead of per block.
float DotPortable(GgmlType type, KQuantOrder order, bool grouped, const uint8_t* row,
                  const Q8KBlock* a, int64_t num_blocks) {
  const size_t bytes = GgmlBlockBytes(type);
  float acc[8] = {0}, acc_min[4] = {0};
  float summs = 0, acc_row = 0, acc_row_min = 0;
  int32_t lanes[8], pairs[4];
  uint8_t scales[8], mins[8];
  for (int64_t b = 0; b < num_blocks; ++b) {
    const uint8_t* block = row + b * bytes;
    float d;
    if (type == GgmlType::kQ6_K) {
      d = a[b].d * HalfAt(block + 208);
      LanesQ6K(block, a[b], lanes);
    } else {
      d = a[b].d * HalfAt(block);
      const float dmin = -a[b].d * HalfAt(block + 2);
      ScalesAndMins(block + 4, scales, mins);
      LanesQ4KOrQ5K(type, block, scales, a[b], lanes);
      const int32_t min_sum = MinsTimesSums(mins, a[b], pairs);
      if (order == KQuantOrder::kRepacked) {
        const float scale = HalfAt(block) * a[b].d, min_scale = HalfAt(block + 2) * a[b].d;
        if (grouped) {  // per 64 elements: groups 2j and 2j + 1
          for (int j = 0; j < 4; ++j) {
            int32_t sum = 0;
            for (int e = 64 * j; e < 64 * j + 64; ++e) {
              sum += scales[e / 32] * (type == GgmlType::kQ4_K ? Q4KQuant(block, e)
                                                                : Q5KQuant(block, e)) * a[b].q[e];
            }
            acc_row = std::fma(static_cast<float>(sum), scale, acc_row);
            acc_row_min = std::fma(static_cast<float>(pairs[j]), min_scale, acc_row_min);
          }
          continue;
        }
        int32_t sum = 0;
        for (int32_t lane : lanes) sum += lane;
        acc_row = std::fma(static_cast<float>(sum), scale, acc_row);
        acc_row_min = std::fma(static_cast<float>(min_sum), min_scale, acc_row_min);
        continue;
      }
      if (type == GgmlType::kQ4_K) {
        for (int i = 0; i < 4; ++i) {
          acc_min[i] = std::fma(dmin, static_cast<float>(pairs[i]), acc_min[i]);
        }
      } else {
        summs = std::fma(dmin, static_cast<float>(min_sum), summs);
      }
    }
    for (int lane = 0; lane < 8; ++lane) {
      acc[lane] = std::fma(d, static_cast<float>(lanes[lane]), acc[lane]);
    }
  }
  if (order == KQuantOrder::kRepacked) return acc_row - acc_row_min;
  if (type == GgmlType::kQ4_K) {
    return HorizontalSum8(acc) + ((acc_min[0] + acc_min[2]) + (acc_min[1] + acc_min[3]));
  }
  return HorizontalSum8(acc) + summs;
}

void RowsPortable(GgmlType type, KQuantOrder order, const uint8_t* grouped,
                  const uint8_t* weight, int64_t rows, int64_t num_blocks, const Q8KBlock* acts,
                  int64_t n, float* out, int64_t r0, int64_t r1) {
  const size_t row_bytes = num_blocks * GgmlBlockBytes(type);
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t t = 0; t < n; ++t) {
      out[t * rows + r] = DotPortable(type, order, grouped != nullptr && grouped[t] != 0,
                                      weight + r * row_bytes, acts + t * num_blocks, num_blocks);
    }
  }
}

// ---------------------------------------------------------------------------
// Interleaved Q4_K (layout in the header): offsets within one group's block.
using kquant_matmul_internal::kGroupBlockBytes;
using kquant_matmul_internal::kGroupD;
using kquant_matmul_internal::kGroupDmin;
using kquant_matmul_internal::kGroupMins;
using kquant_matmul_internal::kGroupQs;
using kquant_matmul_internal::kGroupRows;
using kquant_matmul_internal::kGroupScales;

// The 12 packed bytes of 8 six-bit scales and mins (ScalesAndMins inverted).
void PackScalesAndMins(const uint8_t scales[8], const uint8_t mins[8], uint8_t* packed) {
  for (int j = 0; j < 4; ++j) {
    packed[j] = static_cast<uint8_t>((scales[j] & 63) | ((scales[j + 4] >> 4) << 6));
    packed[j + 4] = static_cast<uint8_t>((mins[j] & 63) | ((mins[j + 4] >> 4) << 6));
    packed[j + 8] = static_cast<uint8_t>((scales[j + 4] & 15) | ((mins[j + 4] & 15) << 4));
  }
}

// Block b of 8 ggml rows (`rows[r]` the row's first block) into one group block.
void InterleaveGroupBlock(const uint8_t* const rows[kGroupRows], int64_t b, uint8_t* dst) {
  for (int r = 0; r < kGroupRows; ++r) {
    const uint8_t* block = rows[r] + b * kQ4KBytes;
    std::memcpy(dst + kGroupD + 2 * r, block, 2);
    std::memcpy(dst + kGroupDmin + 2 * r, block + 2, 2);
    uint8_t scales[8], mins[8];
    ScalesAndMins(block + 4, scales, mins);
    for (int g = 0; g < 8; ++g) {
      dst[kGroupScales + 8 * g + r] = scales[g];
      dst[kGroupMins + 16 * (g / 2) + 2 * r + g % 2] = mins[g];
    }
    for (int chunk = 0; chunk < 32; ++chunk) {  // chunk 8j + k: bytes 32j + 4k of the quants
      std::memcpy(dst + kGroupQs + 32 * chunk + 4 * r, block + 16 + 4 * chunk, 4);
    }
  }
}

// Row r (0..7) of a group block back as one ggml block (144 bytes).
void DeinterleaveGroupBlock(const uint8_t* src, int r, uint8_t* block) {
  std::memcpy(block, src + kGroupD + 2 * r, 2);
  std::memcpy(block + 2, src + kGroupDmin + 2 * r, 2);
  uint8_t scales[8], mins[8];
  for (int g = 0; g < 8; ++g) {
    scales[g] = src[kGroupScales + 8 * g + r];
    mins[g] = src[kGroupMins + 16 * (g / 2) + 2 * r + g % 2];
  }
  PackScalesAndMins(scales, mins, block + 4);
  for (int chunk = 0; chunk < 32; ++chunk) {
    std::memcpy(block + 16 + 4 * chunk, src + kGroupQs + 32 * chunk + 4 * r, 4);
  }
}

// Groups [g0, g1) of an interleaved matrix: each row copied back out, then
// the portable repacked-order dot products.
void GroupsPortable(const uint8_t* interleaved, int64_t rows, int64_t num_blocks,
                    const Q8KBlock* acts, int64_t n, const uint8_t* grouped, float* out,
                    int64_t g0, int64_t g1) {
  std::vector<uint8_t> row(num_blocks * kQ4KBytes);
  for (int64_t g = g0; g < g1; ++g) {
    const uint8_t* group = interleaved + g * num_blocks * kGroupBlockBytes;
    for (int r = 0; r < kGroupRows; ++r) {
      for (int64_t b = 0; b < num_blocks; ++b) {
        DeinterleaveGroupBlock(group + b * kGroupBlockBytes, r, row.data() + b * kQ4KBytes);
      }
      for (int64_t t = 0; t < n; ++t) {
        out[t * rows + g * kGroupRows + r] =
            DotPortable(GgmlType::kQ4_K, KQuantOrder::kRepacked,
                        grouped != nullptr && grouped[t] != 0, row.data(),
                        acts + t * num_blocks, num_blocks);
      }
    }
  }
}

// ---------------------------------------------------------------------------
// AVX2 code: the same lanes; the weight block is decoded once and multiplied
// by up to 4 activation rows.
#if defined(LLORCH_QUANT_MATMUL_AVX2)

inline __m256i Load256(const void* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

using avx2::Broadcast4;
using avx2::KeepInRegister;

// Asks the cache for block b of the next row (rows follow each other; past
// the matrix prefetches do not fault). A decode step reads its weights from
// memory, where the hardware prefetchers alone left the row loops waiting on
// each block's first load (TinyLlama-shaped Q5_K decode, AVX2 kernel, Xeon:
// 14 -> 21 tok/s).
template <size_t kBytes>
inline void PrefetchNextRow(const uint8_t* block, int64_t num_blocks) {
  const uint8_t* next = block + num_blocks * kBytes;
  for (size_t line = 0; line < kBytes; line += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(next + line), _MM_HINT_T0);
  }
}

// Exact integer sums of the lanes.
inline int32_t SumInt8(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}
inline int32_t SumInt4(__m128i s) {
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

inline float HorizontalSumAvx2(__m256 a) {
  __m128 r = _mm_add_ps(_mm256_extractf128_ps(a, 1), _mm256_castps256_ps128(a));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}
// (a0 + a2) + (a1 + a3).
inline float HorizontalSum4(__m128 a) {
  a = _mm_add_ps(a, _mm_movehl_ps(a, a));
  a = _mm_add_ss(a, _mm_movehdup_ps(a));
  return _mm_cvtss_f32(a);
}

// The activation group sums (8 x int16, one per 32 elements).
inline __m128i GroupSums(const Q8KBlock& a) {
  const __m256i bsums = Load256(a.bsums);
  return _mm_hadd_epi16(_mm256_castsi256_si128(bsums), _mm256_extracti128_si256(bsums, 1));
}

// Byte shuffles that broadcast int16 element k of a 128-bit half.
alignas(32) constexpr uint8_t kBroadcastWord[8][32] = {
    {0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1},
    {2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3},
    {4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5},
    {6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7},
    {8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9},
    {10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11,
     10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11},
    {12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13,
     12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13},
    {14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15,
     14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15}};

// A Q4_K/Q5_K block's 8 scales (int16, in both 128-bit halves) and 8 mins
// (int16), unpacked from its 12 bytes with vector ops (the lanes of ggml's
// utmp words: u0 & m1, (u2 & m2) | ((u0 >> 6) & m3) << 4, u1 & m1,
// (u2 >> 4 & m2) | ((u1 >> 6) & m3) << 4).
inline void UnpackScalesAndMins(const uint8_t* packed, __m256i* scales, __m128i* mins) {
  // Reads 16 bytes; the 4 past the scales are the block's own quants.
  const __m128i u = _mm_loadu_si128(reinterpret_cast<const __m128i*>(packed));
  const __m128i a = _mm_shuffle_epi32(u, _MM_SHUFFLE(2, 1, 2, 0));  // u0 u2 u1 u2
  const __m128i b = _mm_shuffle_epi32(u, _MM_SHUFFLE(1, 1, 0, 0));  // u0 u0 u1 u1
  const __m128i low6 = _mm_and_si128(a, _mm_set1_epi32(0x3f3f3f3f));
  const __m128i high = _mm_or_si128(
      _mm_and_si128(_mm_srlv_epi32(a, _mm_set_epi32(4, 0, 0, 0)), _mm_set1_epi32(0x0f0f0f0f)),
      _mm_slli_epi32(_mm_and_si128(_mm_srli_epi32(b, 6), _mm_set1_epi32(0x03030303)), 4));
  const __m128i words = _mm_blend_epi32(low6, high, 0b1010);  // sc0-3 sc4-7 m0-3 m4-7
  const __m256i wide = _mm256_cvtepu8_epi16(words);
  *scales = _mm256_permute2x128_si256(wide, wide, 0x00);
  *mins = _mm256_extracti128_si256(wide, 1);
}

// [Σ lanes of s, Σ lanes of m, same, same]: exact integer totals.
inline __m128i TotalsOf(__m256i s, __m128i m) {
  const __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
  const __m128i h = _mm_hadd_epi32(t, m);
  return _mm_hadd_epi32(h, h);
}

// Q4_K and Q5_K: 8 groups of 32 with a scale and a min each; kHighBits for
// Q5_K's fifth bit.
template <bool kHighBits, bool kRepacked>
struct Avx2Q4KOrQ5K {
  static constexpr size_t kBytes = kHighBits ? kQ5KBytes : kQ4KBytes;

  // Quants of groups 2j (low nibbles) and 2j + 1 (high nibbles) as bytes;
  // for Q5_K bit g of high_bits byte l is the fifth bit of element l of group g.
  static void GroupPairQuants(const uint8_t* qs, __m256i high_bits, int j, __m256i* q_low,
                              __m256i* q_high) {
    const __m256i low_nibble = _mm256_set1_epi8(0x0f);
    const __m256i bits = Load256(qs + 32 * j);
    *q_low = _mm256_and_si256(bits, low_nibble);
    *q_high = _mm256_and_si256(_mm256_srli_epi16(bits, 4), low_nibble);
    if (kHighBits) {
      const __m256i fifth_bit = _mm256_set1_epi8(0x10);
      *q_low = _mm256_or_si256(*q_low, _mm256_and_si256(
          _mm256_slli_epi16(_mm256_srli_epi16(high_bits, 2 * j), 4), fifth_bit));
      *q_high = _mm256_or_si256(*q_high, _mm256_and_si256(
          _mm256_slli_epi16(_mm256_srli_epi16(high_bits, 2 * j + 1), 4), fifth_bit));
    }
  }

  // Repacked order, 4 activation rows that all take the same order (kPer64:
  // llama.cpp's gemm, else its gemv): the integer totals of the 4 rows are
  // reduced together and accumulated in one 4-lane vector (lane c: row c).
  template <bool kPer64>
  static void TileRepacked4(const uint8_t* row, int64_t num_blocks, const Q8KBlock* act,
                            int64_t act_stride, float* out, int64_t out_stride) {
    __m128 acc = _mm_setzero_ps(), acc_min = _mm_setzero_ps();
    for (int64_t b = 0; b < num_blocks; ++b) {
      const uint8_t* block = row + b * kBytes;
      PrefetchNextRow<kBytes>(block, num_blocks);
      int32_t header;
      std::memcpy(&header, block, 4);
      const __m128 d_dmin = _mm_cvtph_ps(_mm_cvtsi32_si128(header));  // dw, dmin_w, 0, 0
      const __m128 dx = _mm_set_ps(act[3 * act_stride + b].d, act[2 * act_stride + b].d,
                                   act[act_stride + b].d, act[b].d);
      const __m128 scale = _mm_mul_ps(_mm_broadcastss_ps(d_dmin), dx);
      const __m128 min_scale =
          _mm_mul_ps(_mm_shuffle_ps(d_dmin, d_dmin, _MM_SHUFFLE(1, 1, 1, 1)), dx);
      __m256i scales;
      __m128i mins;
      UnpackScalesAndMins(block + 4, &scales, &mins);
      // min[j] lane c: row c's mins of groups 2j, 2j + 1 times its sums.
      __m128i min_pairs[4], min[4];
      for (int c = 0; c < 4; ++c) {
        min_pairs[c] = _mm_madd_epi16(mins, GroupSums(act[c * act_stride + b]));
      }
      const __m128i t0 = _mm_unpacklo_epi32(min_pairs[0], min_pairs[1]);
      const __m128i t1 = _mm_unpacklo_epi32(min_pairs[2], min_pairs[3]);
      const __m128i t2 = _mm_unpackhi_epi32(min_pairs[0], min_pairs[1]);
      const __m128i t3 = _mm_unpackhi_epi32(min_pairs[2], min_pairs[3]);
      min[0] = _mm_unpacklo_epi64(t0, t1);
      min[1] = _mm_unpackhi_epi64(t0, t1);
      min[2] = _mm_unpacklo_epi64(t2, t3);
      min[3] = _mm_unpackhi_epi64(t2, t3);
      const uint8_t* qs = block + (kHighBits ? 48 : 16);
      const __m256i high_bits = kHighBits ? Load256(block + 16) : _mm256_setzero_si256();
      __m128i block_sum = _mm_setzero_si128();
      for (int j = 0; j < 4; ++j) {
        __m256i q_low, q_high;
        GroupPairQuants(qs, high_bits, j, &q_low, &q_high);
        const __m256i scale_low = _mm256_shuffle_epi8(scales, Load256(kBroadcastWord[2 * j]));
        const __m256i scale_high =
            _mm256_shuffle_epi8(scales, Load256(kBroadcastWord[2 * j + 1]));
        __m256i p[4];
        for (int c = 0; c < 4; ++c) {
          const int8_t* q8 = act[c * act_stride + b].q + 64 * j;
          p[c] = _mm256_add_epi32(
              _mm256_madd_epi16(_mm256_maddubs_epi16(q_low, Load256(q8)), scale_low),
              _mm256_madd_epi16(_mm256_maddubs_epi16(q_high, Load256(q8 + 32)), scale_high));
        }
        // Lane c of the reduction: Σ lanes of p[c] (exact).
        const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]),
                                            _mm256_hadd_epi32(p[2], p[3]));
        const __m128i totals =
            _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
        if (kPer64) {
          acc = _mm_fmadd_ps(_mm_cvtepi32_ps(totals), scale, acc);
          acc_min = _mm_fmadd_ps(_mm_cvtepi32_ps(min[j]), min_scale, acc_min);
        } else {
          block_sum = _mm_add_epi32(block_sum, totals);
        }
      }
      if (!kPer64) {
        const __m128i min_sum =
            _mm_add_epi32(_mm_add_epi32(min[0], min[1]), _mm_add_epi32(min[2], min[3]));
        acc = _mm_fmadd_ps(_mm_cvtepi32_ps(block_sum), scale, acc);
        acc_min = _mm_fmadd_ps(_mm_cvtepi32_ps(min_sum), min_scale, acc_min);
      }
    }
    alignas(16) float result[4];
    _mm_store_ps(result, _mm_sub_ps(acc, acc_min));
    for (int c = 0; c < 4; ++c) out[c * out_stride] = result[c];
  }

  template <int kCols>
  static void Tile(const uint8_t* row, int64_t num_blocks, const Q8KBlock* act,
                   int64_t act_stride, const uint8_t* grouped, float* out, int64_t out_stride) {
    __m256 acc[kCols];
    __m128 acc_min[kCols];
    // Repacked order: lane 0 the products' sum, lane 1 the mins' sum.
    __m128 acc_pair[kCols];
    float summs[kCols];
    bool per_64[kCols];  // repacked gemm order: float sums per 64 elements
    int num_per_64 = 0;
    for (int c = 0; c < kCols; ++c) {
      acc[c] = _mm256_setzero_ps();
      acc_min[c] = acc_pair[c] = _mm_setzero_ps();
      summs[c] = 0.0f;
      per_64[c] = kRepacked && grouped != nullptr && grouped[c];
      num_per_64 += per_64[c];
    }
    if (kRepacked && kCols == 4 && (num_per_64 == 0 || num_per_64 == 4)) {
      if (num_per_64 == 4) {
        TileRepacked4<true>(row, num_blocks, act, act_stride, out, out_stride);
      } else {
        TileRepacked4<false>(row, num_blocks, act, act_stride, out, out_stride);
      }
      return;
    }
    for (int64_t b = 0; b < num_blocks; ++b) {
      const uint8_t* block = row + b * kBytes;
      PrefetchNextRow<kBytes>(block, num_blocks);
      int32_t header;
      std::memcpy(&header, block, 4);
      const __m128 d_dmin = _mm_cvtph_ps(_mm_cvtsi32_si128(header));  // dw, dmin_w, 0, 0
      __m256i scales;
      __m128i mins;
      UnpackScalesAndMins(block + 4, &scales, &mins);
      const uint8_t* qs = block + (kHighBits ? 48 : 16);
      const __m256i high_bits = kHighBits ? Load256(block + 16) : _mm256_setzero_si256();
      // Per column, lane k: mins[2k] * sum(group 2k) + mins[2k + 1] * sum(group 2k + 1).
      __m128i min_pairs[kCols];
      __m256i sum[kCols];
      for (int c = 0; c < kCols; ++c) {
        sum[c] = _mm256_setzero_si256();
        min_pairs[c] = _mm_madd_epi16(mins, GroupSums(act[c * act_stride + b]));
      }
      for (int j = 0; j < 4; ++j) {  // groups 2j (low nibbles) and 2j + 1 (high)
        __m256i q_low, q_high;
        GroupPairQuants(qs, high_bits, j, &q_low, &q_high);
        const __m256i scale_low = _mm256_shuffle_epi8(scales, Load256(kBroadcastWord[2 * j]));
        const __m256i scale_high =
            _mm256_shuffle_epi8(scales, Load256(kBroadcastWord[2 * j + 1]));
        for (int c = 0; c < kCols; ++c) {
          const Q8KBlock& a = act[c * act_stride + b];
          const int8_t* q8 = a.q + 64 * j;
          // u8 x s8 pairs -> int16 (no saturation: 2 * 31 * 127 < 32768).
          const __m256i p_low =
              _mm256_madd_epi16(_mm256_maddubs_epi16(q_low, Load256(q8)), scale_low);
          const __m256i p_high =
              _mm256_madd_epi16(_mm256_maddubs_epi16(q_high, Load256(q8 + 32)), scale_high);
          const __m256i p = _mm256_add_epi32(p_low, p_high);
          if (kRepacked && per_64[c]) {
            const __m128i lane_j = _mm_cmpeq_epi32(_mm_set_epi32(3, 2, 1, 0), _mm_set1_epi32(j));
            acc_pair[c] = _mm_fmadd_ps(
                _mm_cvtepi32_ps(TotalsOf(p, _mm_and_si128(min_pairs[c], lane_j))),
                _mm_mul_ps(d_dmin, _mm_set1_ps(a.d)), acc_pair[c]);
          } else {
            sum[c] = _mm256_add_epi32(sum[c], p);
            KeepInRegister(sum[c]);
          }
        }
      }
      for (int c = 0; c < kCols; ++c) {
        const Q8KBlock& a = act[c * act_stride + b];
        if (kRepacked) {
          if (per_64[c]) continue;
          acc_pair[c] = _mm_fmadd_ps(_mm_cvtepi32_ps(TotalsOf(sum[c], min_pairs[c])),
                                     _mm_mul_ps(d_dmin, _mm_set1_ps(a.d)), acc_pair[c]);
          continue;
        }
        const float dw = _mm_cvtss_f32(d_dmin);
        const float dmin = -a.d * _mm_cvtss_f32(_mm_movehdup_ps(d_dmin));
        if (kHighBits) {
          summs[c] = std::fma(dmin, static_cast<float>(SumInt4(min_pairs[c])), summs[c]);
        } else {
          acc_min[c] =
              _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(min_pairs[c]), acc_min[c]);
        }
        acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(a.d * dw), _mm256_cvtepi32_ps(sum[c]), acc[c]);
      }
    }
    for (int c = 0; c < kCols; ++c) {
      float result;
      if (kRepacked) {
        result = _mm_cvtss_f32(acc_pair[c]) - _mm_cvtss_f32(_mm_movehdup_ps(acc_pair[c]));
      } else if (kHighBits) {
        result = HorizontalSumAvx2(acc[c]) + summs[c];
      } else {
        result = HorizontalSumAvx2(acc[c]) + HorizontalSum4(acc_min[c]);
      }
      out[c * out_stride] = result;
    }
  }
};

// Byte shuffles that spread scales 2i and 2i + 1 over 8 bytes each.
alignas(16) constexpr uint8_t kScalePairShuffle[8][16] = {
    {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1},
    {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3},
    {4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5},
    {6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7},
    {8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9},
    {10, 10, 10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 11, 11, 11, 11},
    {12, 12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13, 13},
    {14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 15}};

// Q6_K: 16 groups of 16 with an int8 scale each, quants stored + 32.
struct Avx2Q6K {
  static constexpr size_t kBytes = kQ6KBytes;
  static constexpr int64_t kPrefetchBlocks = 8;

  template <int kCols>
  static void Tile(const uint8_t* row, int64_t num_blocks, const Q8KBlock* act,
                   int64_t act_stride, const uint8_t* /*grouped*/, float* out,
                   int64_t out_stride) {
    __m256 acc[kCols];
    for (int c = 0; c < kCols; ++c) acc[c] = _mm256_setzero_ps();
    const __m256i m15 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3);
    const __m256i m12 = _mm256_set1_epi8(12), m48 = _mm256_set1_epi8(48);
    const __m256i m192 = _mm256_set1_epi8(static_cast<char>(0xc0));
    for (int64_t b = 0; b < num_blocks; ++b) {
      const uint8_t* block = row + b * kBytes;
      PrefetchNextRow<kBytes>(block, num_blocks);
      // Rows are contiguous: fetch the block kPrefetchBlocks ahead (past the
      // row's end, the next row's). A prefetch never faults.
      for (int line = 0; line < 4; ++line) {
        _mm_prefetch(reinterpret_cast<const char*>(block + kPrefetchBlocks * kBytes + 64 * line),
                     _MM_HINT_T0);
      }
      const float dw = HalfAt(block + 208);
      const __m128i scales = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 192));
      __m256i sum[kCols];
      for (int c = 0; c < kCols; ++c) sum[c] = _mm256_setzero_si256();
      for (int half = 0; half < 2; ++half) {  // elements 128 * half + [0, 128)
        const __m256i low1 = Load256(block + 64 * half);
        const __m256i low2 = Load256(block + 64 * half + 32);
        const __m256i high = Load256(block + 128 + 32 * half);
        __m256i q[4], s[4];
        q[0] = _mm256_or_si256(_mm256_and_si256(low1, m15),
                               _mm256_slli_epi16(_mm256_and_si256(high, m3), 4));
        q[1] = _mm256_or_si256(_mm256_and_si256(low2, m15),
                               _mm256_slli_epi16(_mm256_and_si256(high, m12), 2));
        q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(low1, 4), m15),
                               _mm256_and_si256(high, m48));
        q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(low2, 4), m15),
                               _mm256_srli_epi16(_mm256_and_si256(high, m192), 2));
        for (int k = 0; k < 4; ++k) {
          s[k] = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(
              scales, _mm_load_si128(reinterpret_cast<const __m128i*>(
                          kScalePairShuffle[4 * half + k]))));
        }
        for (int c = 0; c < kCols; ++c) {
          const int8_t* q8 = act[c * act_stride + b].q + 128 * half;
          __m256i p[4];
          for (int k = 0; k < 4; ++k) {
            // No saturation: 2 * 63 * 127 < 32768.
            p[k] = _mm256_madd_epi16(s[k], _mm256_maddubs_epi16(q[k], Load256(q8 + 32 * k)));
          }
          sum[c] = _mm256_add_epi32(sum[c], _mm256_add_epi32(p[0], p[1]));
          sum[c] = _mm256_add_epi32(sum[c], _mm256_add_epi32(p[2], p[3]));
          KeepInRegister(sum[c]);
        }
      }
      const __m256i scales16 = _mm256_cvtepi8_epi16(scales);
      for (int c = 0; c < kCols; ++c) {
        const Q8KBlock& a = act[c * act_stride + b];
        // The -32 offset of every quant: 32 * Σ scale * (sums of 16).
        const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(Load256(a.bsums), scales16), 5);
        const float d = a.d * dw;
        acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(d),
                                 _mm256_cvtepi32_ps(_mm256_sub_epi32(sum[c], offset)), acc[c]);
      }
    }
    for (int c = 0; c < kCols; ++c) out[c * out_stride] = HorizontalSumAvx2(acc[c]);
  }
};

// Activation rows per pass over a thread's weight rows: their quantised
// blocks stay in L2 while the weight rows stream past.
constexpr int64_t kActChunk = 32;

template <class K>
void RowsAvx2(const uint8_t* grouped, const uint8_t* weight, int64_t rows, int64_t num_blocks,
              const Q8KBlock* acts, int64_t n, float* out, int64_t r0, int64_t r1) {
  const size_t row_bytes = num_blocks * K::kBytes;
  for (int64_t t0 = 0; t0 < n; t0 += kActChunk) {
    const int64_t t_end = std::min(n, t0 + kActChunk);
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* row = weight + r * row_bytes;
      int64_t t = t0;
      for (; t + 4 <= t_end; t += 4) {
        K::template Tile<4>(row, num_blocks, acts + t * num_blocks, num_blocks,
                            grouped ? grouped + t : nullptr, out + t * rows + r, rows);
      }
      const Q8KBlock* act = acts + t * num_blocks;
      const uint8_t* g = grouped ? grouped + t : nullptr;
      float* o = out + t * rows + r;
      switch (t_end - t) {
        case 3: K::template Tile<3>(row, num_blocks, act, num_blocks, g, o, rows); break;
        case 2: K::template Tile<2>(row, num_blocks, act, num_blocks, g, o, rows); break;
        case 1: K::template Tile<1>(row, num_blocks, act, num_blocks, g, o, rows); break;
        default: break;
      }
    }
  }
}

// Q5_K and Q6_K in vec_dot's order on AVX-512: rows two at a time in 512-bit
// registers (kquant_avx512.h, the same steps per row); the odd last row of a
// range by the AVX2 kernel K.
using RowPairFn = void (*)(const uint8_t*, int64_t, int, const Q8KBlock*, int64_t, float*,
                           int64_t);

template <class K, RowPairFn kRowPair>
void RowPairsAvx512(const uint8_t* grouped, const uint8_t* weight, int64_t rows,
                    int64_t num_blocks, const Q8KBlock* acts, int64_t n, float* out, int64_t r0,
                    int64_t r1) {
  const size_t row_bytes = num_blocks * K::kBytes;
  for (int64_t t0 = 0; t0 < n; t0 += kActChunk) {
    const int64_t t_end = std::min(n, t0 + kActChunk);
    for (int64_t r = r0; r < r1; r += 2) {
      if (r + 1 == r1) {
        RowsAvx2<K>(grouped, weight, rows, num_blocks, acts + t0 * num_blocks, t_end - t0,
                    out + t0 * rows, r, r1);
        continue;
      }
      const uint8_t* row = weight + r * row_bytes;
      for (int64_t t = t0; t < t_end; t += 4) {
        const int cols = static_cast<int>(std::min<int64_t>(4, t_end - t));
        kRowPair(row, num_blocks, cols, acts + t * num_blocks, num_blocks, out + t * rows + r,
                 rows);
      }
    }
  }
}

using RowsFn = void (*)(const uint8_t*, const uint8_t*, int64_t, int64_t, const Q8KBlock*,
                        int64_t, float*, int64_t, int64_t);

RowsFn SelectRowsAvx2(GgmlType type, KQuantOrder order) {
  const bool repacked = order == KQuantOrder::kRepacked;
  switch (type) {
    case GgmlType::kQ4_K:
      return repacked ? RowsAvx2<Avx2Q4KOrQ5K<false, true>> : RowsAvx2<Avx2Q4KOrQ5K<false, false>>;
    case GgmlType::kQ5_K:
      if (repacked) return RowsAvx2<Avx2Q4KOrQ5K<true, true>>;
      if (kquant_matmul_internal::UsesAvx512()) {
        return RowPairsAvx512<Avx2Q4KOrQ5K<true, false>, kquant_avx512::Q5KRowPair>;
      }
      return RowsAvx2<Avx2Q4KOrQ5K<true, false>>;
    case GgmlType::kQ6_K:
      if (kquant_matmul_internal::UsesAvx512()) {
        return RowPairsAvx512<Avx2Q6K, kquant_avx512::Q6KRowPair>;
      }
      return RowsAvx2<Avx2Q6K>;
    default:
      return nullptr;
  }
}

// Interleaved Q4_K: 8 weight rows (lane r of every vector: row r) times
// kCols activation rows. Per sub-block of 32, the quant products of each row
// are summed in int16 pairs (8 maddubs of at most 2 * 15 * 127: no overflow)
// and multiplied by the row's scale once; the float steps are those of the
// repacked order (DotPortable), per 64 elements or per block by `per_64`.

// The 8 rows' scales of one sub-block (8 bytes) as int16 pairs (row r at 2r, 2r + 1).
inline __m256i RowScales(const uint8_t* p) {
  const __m128i s = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(s, s));
}

// products[c]: int16 pairs per row of one sub-block (quant bytes `qs`, low or
// high nibbles) times activation row c's 32 quants from element `first`.
template <int kCols, bool kHighNibbles>
inline void SubBlockProducts(const uint8_t* qs, const Q8KBlock* const act[], int64_t b,
                             int first, __m256i products[]) {
  const __m256i low_nibble = _mm256_set1_epi8(0x0f);
  for (int c = 0; c < kCols; ++c) products[c] = _mm256_setzero_si256();
  for (int k = 0; k < 8; ++k) {
    __m256i q = Load256(qs + 32 * k);
    if (kHighNibbles) q = _mm256_srli_epi16(q, 4);
    q = _mm256_and_si256(q, low_nibble);
    for (int c = 0; c < kCols; ++c) {
      products[c] = _mm256_add_epi16(
          products[c], _mm256_maddubs_epi16(q, Broadcast4(act[c][b].q + first + 4 * k)));
      KeepInRegister(products[c]);
    }
  }
}

template <int kCols>
void Q4KGroupTileAvx2(const uint8_t* group, int64_t num_blocks, const Q8KBlock* const act[],
                      const bool per_64[], float* const out[]) {
  __m256 acc[kCols], acc_min[kCols];
  for (int c = 0; c < kCols; ++c) acc[c] = acc_min[c] = _mm256_setzero_ps();
  for (int64_t b = 0; b < num_blocks; ++b) {
    const uint8_t* block = group + b * kGroupBlockBytes;
    __m256i sum[kCols][4];  // int32 per row: scaled products of sub-blocks 2j, 2j + 1
    for (int j = 0; j < 4; ++j) {
      // Sub-block 2j (low nibbles), then 2j + 1 (high nibbles): with 4 int16
      // accumulators at a time the 16 AVX2 registers need no spills.
      __m256i low[kCols], high[kCols];
      SubBlockProducts<kCols, false>(block + kGroupQs + 256 * j, act, b, 64 * j, low);
      SubBlockProducts<kCols, true>(block + kGroupQs + 256 * j, act, b, 64 * j + 32, high);
      const __m256i scale_low = RowScales(block + kGroupScales + 16 * j);
      const __m256i scale_high = RowScales(block + kGroupScales + 16 * j + 8);
      for (int c = 0; c < kCols; ++c) {
        sum[c][j] = _mm256_add_epi32(_mm256_madd_epi16(low[c], scale_low),
                                     _mm256_madd_epi16(high[c], scale_high));
      }
    }
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block)));
    const __m256 dmin =
        _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + kGroupDmin)));
    __m256i mins[4];  // int16 pairs per row: mins of sub-blocks 2j, 2j + 1
    for (int j = 0; j < 4; ++j) {
      mins[j] = _mm256_cvtepu8_epi16(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + kGroupMins + 16 * j)));
    }
    for (int c = 0; c < kCols; ++c) {
      const Q8KBlock& a = act[c][b];
      const __m256 dx = _mm256_set1_ps(a.d);
      const __m256 scale = _mm256_mul_ps(dw, dx), min_scale = _mm256_mul_ps(dmin, dx);
      alignas(16) int32_t group_sums[4];  // int16 pairs: activation sums of sub-blocks 2j, 2j + 1
      _mm_store_si128(reinterpret_cast<__m128i*>(group_sums), GroupSums(a));
      __m256i pairs[4];
      for (int j = 0; j < 4; ++j) {
        pairs[j] = _mm256_madd_epi16(mins[j], _mm256_set1_epi32(group_sums[j]));
      }
      if (per_64[c]) {
        for (int j = 0; j < 4; ++j) {
          acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[c][j]), scale, acc[c]);
          acc_min[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(pairs[j]), min_scale, acc_min[c]);
        }
      } else {
        const __m256i total = _mm256_add_epi32(_mm256_add_epi32(sum[c][0], sum[c][1]),
                                               _mm256_add_epi32(sum[c][2], sum[c][3]));
        const __m256i min_total = _mm256_add_epi32(_mm256_add_epi32(pairs[0], pairs[1]),
                                                   _mm256_add_epi32(pairs[2], pairs[3]));
        acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), scale, acc[c]);
        acc_min[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(min_total), min_scale, acc_min[c]);
      }
    }
  }
  for (int c = 0; c < kCols; ++c) _mm256_storeu_ps(out[c], _mm256_sub_ps(acc[c], acc_min[c]));
}

// Groups [g0, g1): in pairs on the AVX-512 kernel where the CPU has it (the
// same bits), one at a time on the AVX2 kernel otherwise.
void GroupsAvx2(const uint8_t* interleaved, int64_t rows, int64_t num_blocks,
                const Q8KBlock* acts, int64_t n, const uint8_t* grouped, float* out, int64_t g0,
                int64_t g1) {
  const size_t group_bytes = num_blocks * kGroupBlockBytes;
  const bool pairs = kquant_matmul_internal::UsesAvx512();
  for (int64_t t0 = 0; t0 < n; t0 += kActChunk) {
    const int64_t t_end = std::min(n, t0 + kActChunk);
    for (int64_t g = g0, width = 1; g < g1; g += width) {
      width = pairs && g + 1 < g1 ? 2 : 1;
      const uint8_t* group = interleaved + g * group_bytes;
      for (int64_t t = t0; t < t_end; t += 4) {
        const int cols = static_cast<int>(std::min<int64_t>(4, t_end - t));
        const Q8KBlock* act[4];
        bool per_64[4];
        float* o[4];
        for (int c = 0; c < cols; ++c) {
          act[c] = acts + (t + c) * num_blocks;
          per_64[c] = grouped != nullptr && grouped[t + c] != 0;
          o[c] = out + (t + c) * rows + g * kGroupRows;
        }
        if (width == 2) {
          kquant_avx512::Q4KGroupPair(group, group_bytes, num_blocks, cols, act, per_64, o);
          continue;
        }
        switch (cols) {
          case 4: Q4KGroupTileAvx2<4>(group, num_blocks, act, per_64, o); break;
          case 3: Q4KGroupTileAvx2<3>(group, num_blocks, act, per_64, o); break;
          case 2: Q4KGroupTileAvx2<2>(group, num_blocks, act, per_64, o); break;
          default: Q4KGroupTileAvx2<1>(group, num_blocks, act, per_64, o); break;
        }
      }
    }
  }
}

#endif  // LLORCH_QUANT_MATMUL_AVX2

// ---------------------------------------------------------------------------

// The n rows of x rounded to Q8_K (grouped rows by the 4-row rule), in a
// buffer reused across calls on the same thread: no allocation per token.
const Q8KBlock* QuantizeActivations(const float* x, int64_t n, int64_t in,
                                    const uint8_t* grouped, const ParallelFor& parallel_for) {
  const int64_t num_blocks = in / kKBlock;
  thread_local std::vector<Q8KBlock> scratch;
  if (scratch.size() < static_cast<size_t>(n * num_blocks)) scratch.resize(n * num_blocks);
  Q8KBlock* acts = scratch.data();
  const auto quantize = [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      QuantizeRowQ8K(x + t * in, num_blocks, grouped != nullptr && grouped[t] != 0,
                     acts + t * num_blocks);
    }
  };
  if (n >= 64) {
    parallel_for(0, n, quantize);
  } else {
    quantize(0, n);
  }
  return acts;
}

void KQuantMatmulImpl(GgmlType type, const uint8_t* weight, int64_t rows, int64_t in,
                      const float* x, int64_t n, float* out, KQuantOrder order,
                      const ParallelFor& parallel_for, const uint8_t* in_groups_of_4,
                      bool avx2) {
  if (!KQuantSupports(type)) Fail("unsupported weight type");
  if (in <= 0 || in % kKBlock != 0) Fail("`in` must be a positive multiple of 256");
  if (rows < 0 || n < 0) Fail("negative row count");
  if (order == KQuantOrder::kRepacked && type == GgmlType::kQ6_K) {
    order = KQuantOrder::kVecDot;  // ggml never repacks Q6_K on x86
  }
  const uint8_t* grouped = order == KQuantOrder::kRepacked ? in_groups_of_4 : nullptr;
  if (rows == 0 || n == 0) return;
  const int64_t num_blocks = in / kKBlock;
  const Q8KBlock* acts = QuantizeActivations(x, n, in, grouped, parallel_for);
#if defined(LLORCH_QUANT_MATMUL_AVX2)
  if (avx2) {
    const RowsFn rows_fn = SelectRowsAvx2(type, order);
    parallel_for(0, rows, [&](int64_t r0, int64_t r1) {
      rows_fn(grouped, weight, rows, num_blocks, acts, n, out, r0, r1);
    });
    return;
  }
#else
  (void)avx2;
#endif
  parallel_for(0, rows, [&](int64_t r0, int64_t r1) {
    RowsPortable(type, order, grouped, weight, rows, num_blocks, acts, n, out, r0, r1);
  });
}

void InterleavedImpl(const uint8_t* interleaved, int64_t rows, int64_t in, const float* x,
                     int64_t n, float* out, const ParallelFor& parallel_for,
                     const uint8_t* grouped, bool avx2) {
  if (!KQuantInterleaveSupports(GgmlType::kQ4_K, rows, in)) {
    Fail("interleaved Q4_K needs rows % 8 == 0 and in % 256 == 0");
  }
  if (n < 0) Fail("negative row count");
  if (rows == 0 || n == 0) return;
  const int64_t num_blocks = in / kKBlock;
  const Q8KBlock* acts = QuantizeActivations(x, n, in, grouped, parallel_for);
  parallel_for(0, rows / kGroupRows, [&](int64_t g0, int64_t g1) {
#if defined(LLORCH_QUANT_MATMUL_AVX2)
    if (avx2) return GroupsAvx2(interleaved, rows, num_blocks, acts, n, grouped, out, g0, g1);
#else
    (void)avx2;
#endif
    GroupsPortable(interleaved, rows, num_blocks, acts, n, grouped, out, g0, g1);
  });
}

}  // namespace

bool KQuantSupports(GgmlType type) {
  return type == GgmlType::kQ4_K || type == GgmlType::kQ5_K || type == GgmlType::kQ6_K;
}

KQuantOrder KQuantOrderFor(GgmlType type, int64_t rows) {
  return type == GgmlType::kQ4_K && rows % 8 == 0 ? KQuantOrder::kRepacked
                                                  : KQuantOrder::kVecDot;
}

void KQuantMatmul(GgmlType type, const uint8_t* weight, int64_t rows, int64_t in,
                  const float* x, int64_t n, float* out, KQuantOrder order,
                  const ParallelFor& parallel_for, const uint8_t* in_groups_of_4) {
  KQuantMatmulImpl(type, weight, rows, in, x, n, out, order, parallel_for, in_groups_of_4,
                   kquant_matmul_internal::UsesAvx2());
}

bool KQuantInterleaveSupports(GgmlType type, int64_t rows, int64_t in) {
  return type == GgmlType::kQ4_K && rows >= 0 && rows % kGroupRows == 0 && in > 0 &&
         in % kKBlock == 0;
}

size_t KQuantInterleavedBytes(int64_t rows, int64_t in) {
  return static_cast<size_t>(rows * (in / kKBlock)) * kQ4KInterleavedRowBlockBytes;
}

void InterleaveKQuantRows(const uint8_t* ggml_rows, int64_t rows, int64_t in, uint8_t* out) {
  const int64_t num_blocks = in / kKBlock;
  for (int64_t g = 0; g < rows / kGroupRows; ++g) {
    const uint8_t* group_rows[kGroupRows];
    for (int r = 0; r < kGroupRows; ++r) {
      group_rows[r] = ggml_rows + (g * kGroupRows + r) * num_blocks * kQ4KBytes;
    }
    for (int64_t b = 0; b < num_blocks; ++b, out += kGroupBlockBytes) {
      InterleaveGroupBlock(group_rows, b, out);
    }
  }
}

void DeinterleaveKQuantRow(const uint8_t* interleaved, int64_t in, int64_t row,
                           uint8_t* ggml_row) {
  const int64_t num_blocks = in / kKBlock;
  const uint8_t* group = interleaved + (row / kGroupRows) * num_blocks * kGroupBlockBytes;
  for (int64_t b = 0; b < num_blocks; ++b) {
    DeinterleaveGroupBlock(group + b * kGroupBlockBytes, static_cast<int>(row % kGroupRows),
                           ggml_row + b * kQ4KBytes);
  }
}

void KQuantInterleavedMatmul(const uint8_t* interleaved, int64_t rows, int64_t in,
                             const float* x, int64_t n, float* out,
                             const ParallelFor& parallel_for, const uint8_t* in_groups_of_4) {
  InterleavedImpl(interleaved, rows, in, x, n, out, parallel_for, in_groups_of_4,
                  kquant_matmul_internal::UsesAvx2());
}

namespace kquant_matmul_internal {

// `four_row_rule`: as ggml_quantize_mat_q8_K_4x8 (the rows llama.cpp's
// repacked gemm takes), which differs only on ties of magnitude: the scale is
// negative whenever some element equals +amax, not by the first such element.
#ifdef LLORCH_QUANT_MATMUL_AVX2
namespace {

// The largest |x[j]| of a block (NaN-free input) and x at its first index.
void BlockAbsMax(const float* x, float* amax, float* max) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 m = _mm256_setzero_ps();
  for (int64_t j = 0; j < kKBlock; j += 8) {
    m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)));
  }
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_movehdup_ps(h));
  *amax = _mm_cvtss_f32(h);
  *max = 0;
  if (*amax == 0) return;
  const __m256 target = _mm256_set1_ps(*amax);
  for (int64_t j = 0; j < kKBlock; j += 8) {
    const int hits = _mm256_movemask_ps(
        _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)), target, _CMP_EQ_OQ));
    if (hits != 0) {
      *max = x[j + __builtin_ctz(static_cast<unsigned>(hits))];
      return;
    }
  }
}

// q[j] = min(127, nearbyint(iscale * x[j])) (the conversion rounds half to
// even, as nearbyint in the default mode) and the sums of 16.
void QuantizeBlockQ8K(const float* x, float iscale, Q8KBlock* block) {
  const __m256 scale = _mm256_set1_ps(iscale);
  const __m256i limit = _mm256_set1_epi32(127);
  for (int64_t g = 0; g < 16; ++g) {
    __m256i q[2];
    for (int h = 0; h < 2; ++h) {
      q[h] = _mm256_min_epi32(
          _mm256_cvtps_epi32(_mm256_mul_ps(scale, _mm256_loadu_ps(x + 16 * g + 8 * h))), limit);
    }
    // Lanes in order: packs interleaves 128-bit halves, the permute undoes it.
    const __m256i words = _mm256_permute4x64_epi64(_mm256_packs_epi32(q[0], q[1]), 0xD8);
    const __m128i bytes = _mm_packs_epi16(_mm256_castsi256_si128(words),
                                          _mm256_extracti128_si256(words, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(block->q + 16 * g), bytes);
    const __m256i sums = _mm256_add_epi32(q[0], q[1]);
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
    block->bsums[g] = static_cast<int16_t>(_mm_cvtsi128_si32(s4));
  }
}

}  // namespace
#endif

void QuantizeRowQ8K(const float* x, int64_t num_blocks, bool four_row_rule, Q8KBlock* out) {
  for (int64_t b = 0; b < num_blocks; ++b, x += kKBlock) {
    Q8KBlock& block = out[b];
    float amax = 0, max = 0;
#ifdef LLORCH_QUANT_MATMUL_AVX2
    BlockAbsMax(x, &amax, &max);
#else
    for (int64_t j = 0; j < kKBlock; ++j) {
      const float a = std::fabs(x[j]);
      if (a > amax) amax = a, max = x[j];
    }
#endif
    if (four_row_rule && amax != 0) {
      for (int64_t j = 0; j < kKBlock; ++j) {
        if (x[j] == amax) max = amax;
      }
    }
    if (amax == 0) {
      block.d = 0;
      std::memset(block.q, 0, sizeof(block.q));
      std::memset(block.bsums, 0, sizeof(block.bsums));
      continue;
    }
    const float iscale = -127.0f / max;
#ifdef LLORCH_QUANT_MATMUL_AVX2
    QuantizeBlockQ8K(x, iscale, &block);
#else
    for (int64_t j = 0; j < kKBlock; ++j) {
      const int v = static_cast<int>(std::nearbyint(iscale * x[j]));
      block.q[j] = static_cast<int8_t>(v > 127 ? 127 : v);
    }
    for (int g = 0; g < 16; ++g) {
      int32_t sum = 0;
      for (int l = 0; l < 16; ++l) sum += block.q[g * 16 + l];
      block.bsums[g] = static_cast<int16_t>(sum);
    }
#endif
    block.d = 1.0f / iscale;
  }
}


bool UsesAvx2() {
#if defined(LLORCH_QUANT_MATMUL_AVX2)
  return true;
#else
  return false;
#endif
}

namespace {
std::atomic<bool> allow_avx512{true};
}  // namespace

bool UsesAvx512() {
  return UsesAvx2() && allow_avx512.load(std::memory_order_relaxed) &&
         kquant_avx512::Supported();
}

void AllowAvx512(bool allow) { allow_avx512.store(allow); }

void KQuantMatmulPortable(GgmlType type, const uint8_t* weight, int64_t rows, int64_t in,
                          const float* x, int64_t n, float* out, KQuantOrder order,
                          const uint8_t* in_groups_of_4) {
  KQuantMatmulImpl(type, weight, rows, in, x, n, out, order, SerialFor, in_groups_of_4,
                   /*avx2=*/false);
}

void KQuantInterleavedMatmulPortable(const uint8_t* interleaved, int64_t rows, int64_t in,
                                     const float* x, int64_t n, float* out,
                                     const uint8_t* in_groups_of_4) {
  InterleavedImpl(interleaved, rows, in, x, n, out, SerialFor, in_groups_of_4, /*avx2=*/false);
}

}  // namespace kquant_matmul_internal
}  // namespace llorch
