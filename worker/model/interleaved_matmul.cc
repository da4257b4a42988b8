#include "worker/model/interleaved_matmul.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/float_bits.h"
#include "worker/model/cpu_isa.h"
#include "worker/model/row_groups.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define LLORCH_INTERLEAVED_AVX2 1
#include <immintrin.h>

#include "worker/model/avx2_helpers.h"
#include "worker/model/avx512_helpers.h"
#endif

// Compiled with -ffp-contract=off: only the fma calls written here are fused.

namespace llorch {
namespace {

using quant_matmul_internal::ActBlock;

using Layout = RowGroups<8>;
constexpr int64_t kBlock = Layout::kBlock;
constexpr int64_t kGroupRows = 8;
constexpr int64_t kScaleBytes = Layout::kScaleBytes;  // 8 fp16 scales

[[noreturn]] void Fail(const char* message) {
  std::fprintf(stderr, "InterleavedMatmul: %s\n", message);
  std::abort();
}

// ---------------------------------------------------------------------------
// Portable code: the same integers and float operations as the AVX2 code.

// ggml's vec_dot order: 8 float lanes of 4 elements, then hsum_float_8.
float DotQ8_0Portable(const uint8_t* interleaved, int64_t num_blocks, int64_t row,
                      const ActBlock* act) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t b = 0; b < num_blocks; ++b) {
    const Layout::BlockRef w = Layout::Locate(GgmlType::kQ8_0, interleaved, num_blocks, row, b);
    const float scale = w.Scale() * act[b].d;
    for (int k = 0; k < 8; ++k) {
      int32_t lane = 0;
      for (int j = 4 * k; j < 4 * k + 4; ++j) {
        lane += static_cast<int8_t>(w.Byte(j)) * act[b].qs[j];
      }
      acc[k] = std::fma(scale, static_cast<float>(lane), acc[k]);
    }
  }
  const float r0 = acc[0] + acc[4], r1 = acc[1] + acc[5], r2 = acc[2] + acc[6],
              r3 = acc[3] + acc[7];
  return (r0 + r2) + (r1 + r3);
}

// Q4_1 in ggml's vec_dot order (llama.cpp does not repack Q4_1): lane k sums
// elements 4k..4k+3 (the low nibbles are elements 0-15, the high ones 16-31),
// plus summs = fma(m, s, summs) per block.
float DotQ4_1Portable(const uint8_t* interleaved, int64_t num_blocks, int64_t row,
                      const ActBlock* act) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  float summs = 0.0f;
  for (int64_t b = 0; b < num_blocks; ++b) {
    const Layout::BlockRef w = Layout::Locate(GgmlType::kQ4_1, interleaved, num_blocks, row, b);
    summs = std::fma(w.Min(), act[b].s, summs);
    const float scale = w.Scale() * act[b].d;
    for (int k = 0; k < 8; ++k) {
      int32_t lane = 0;
      for (int e = 4 * k; e < 4 * k + 4; ++e) {
        const int q = e < 16 ? w.Byte(e) & 0x0F : w.Byte(e - 16) >> 4;
        lane += q * act[b].qs[e];
      }
      acc[k] = std::fma(scale, static_cast<float>(lane), acc[k]);
    }
  }
  const float r0 = acc[0] + acc[4], r1 = acc[1] + acc[5], r2 = acc[2] + acc[6],
              r3 = acc[3] + acc[7];
  return ((r0 + r2) + (r1 + r3)) + summs;
}

// llama.cpp's repacked Q4_0 order: each block's exact integer dot, scaled
// and accumulated block after block.
float DotQ4_0Portable(const uint8_t* interleaved, int64_t num_blocks, int64_t row,
                      const ActBlock* act) {
  float acc = 0.0f;
  for (int64_t b = 0; b < num_blocks; ++b) {
    const Layout::BlockRef w = Layout::Locate(GgmlType::kQ4_0, interleaved, num_blocks, row, b);
    int32_t dot = 0;
    for (int j = 0; j < 16; ++j) {
      const uint8_t byte = w.Byte(j);
      dot += ((byte & 0x0F) - 8) * act[b].qs[j] + ((byte >> 4) - 8) * act[b].qs[j + 16];
    }
    acc = std::fma(static_cast<float>(dot), w.Scale() * act[b].d, acc);
  }
  return acc;
}

void GroupsPortable(GgmlType type, const uint8_t* interleaved, int64_t rows,
                    int64_t num_blocks, const ActBlock* acts, int64_t n, float* out,
                    int64_t g0, int64_t g1) {
  for (int64_t r = g0 * kGroupRows; r < g1 * kGroupRows; ++r) {
    for (int64_t t = 0; t < n; ++t) {
      const ActBlock* act = acts + t * num_blocks;
      switch (type) {
        case GgmlType::kQ4_0: out[t * rows + r] = DotQ4_0Portable(interleaved, num_blocks, r, act); break;
        case GgmlType::kQ4_1: out[t * rows + r] = DotQ4_1Portable(interleaved, num_blocks, r, act); break;
        default: out[t * rows + r] = DotQ8_0Portable(interleaved, num_blocks, r, act); break;
      }
    }
  }
}

// ---------------------------------------------------------------------------
// AVX2 code: a group's 8 rows live in the 8 lanes of one register.
#ifdef LLORCH_INTERLEAVED_AVX2

using avx2::Broadcast4;
using avx2::KeepInRegister;

// Asks the cache for the block about 2 KiB after `block` (a group's blocks
// follow each other, and the next group follows the last; past the matrix
// prefetches do not fault). One group is one stream of bytes that the
// hardware prefetcher alone did not bring in time: decode with
// --ggml-variant avx2 on a 2-core Xeon, SmolLM2 1 job 195 -> 260 tok/s, 8
// jobs 320 -> 395; 1-2 KiB measured best of 0.6-2.5.
inline void PrefetchAhead(const uint8_t* block, int64_t block_bytes) {
  constexpr int64_t kAheadBytes = 2048;
  const int64_t ahead = kAheadBytes / block_bytes * block_bytes;
  for (int64_t line = 0; line < block_bytes; line += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(block + ahead + line), _MM_HINT_T0);
  }
}

// The 8 rows' nibbles of one Q4_0/Q4_1 block (4 chunks of 32 bytes at
// `quants`): q[k] holds elements 4k..4k+3 of each row as unsigned bytes.
inline void UnpackNibbles(const uint8_t* quants, __m256i q[8]) {
  const __m256i low_mask = _mm256_set1_epi8(0x0F);
  for (int j = 0; j < 4; ++j) {
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(quants + 32 * j));
    q[j] = _mm256_and_si256(raw, low_mask);
    q[j + 4] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low_mask);
  }
}

// Q4_0, kCols activation rows at once (the unpacked nibbles are shared).
// Nibbles are used unsigned (maddubs) and the offset of 8 is taken out of the
// exact integer dot: sum (q - 8) y = sum q y - 8 sum y. No int16 overflow:
// eight pair sums of at most 2 * 15 * 128 stay below 2^15.
template <int kCols>
void GroupQ4_0Avx2(const uint8_t* group, int64_t num_blocks, const ActBlock* act0,
                   const int32_t* act_sum0, int64_t act_stride, float* out, int64_t out_stride) {
  const int64_t block_bytes = Layout::GroupBlockBytes(GgmlType::kQ4_0);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[kCols];
  for (int c = 0; c < kCols; ++c) acc[c] = _mm256_setzero_ps();
  for (int64_t b = 0; b < num_blocks; ++b, group += block_bytes) {
    PrefetchAhead(group, block_bytes);
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(group)));
    __m256i q[8];  // q[k]: elements 4k..4k+3 of each row, unsigned
    UnpackNibbles(group + kScaleBytes, q);
    for (int c = 0; c < kCols; ++c) {
      const ActBlock& y = act0[c * act_stride + b];
      __m256i pairs = _mm256_maddubs_epi16(q[0], Broadcast4(y.qs));
      for (int k = 1; k < 8; ++k) {
        pairs = _mm256_add_epi16(pairs, _mm256_maddubs_epi16(q[k], Broadcast4(y.qs + 4 * k)));
        KeepInRegister(pairs);
      }
      const __m256i dot = _mm256_sub_epi32(_mm256_madd_epi16(pairs, ones),
                                           _mm256_set1_epi32(8 * act_sum0[c * act_stride + b]));
      acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(dw, _mm256_set1_ps(y.d)),
                               acc[c]);
    }
  }
  for (int c = 0; c < kCols; ++c) _mm256_storeu_ps(out + c * out_stride, acc[c]);
}

// Kernels for CPUs with AVX-512 VNNI (llama.cpp's AVX-512 libraries use it
// too): one vpdpbusd per 4 elements instead of maddubs, add and madd; the
// integer dots are the same exact integers, so are the results.
#define LLORCH_VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

// Q8_0 in vec_dot's order (eight lane accumulators per activation row), two
// activation rows per pass so that each weight load and |w| serve both; the
// 16 accumulators fit AVX-512's 32 registers.
template <int kCols>
LLORCH_VNNI_TARGET void GroupQ8_0Vnni(const uint8_t* group, int64_t num_blocks,
                                      const ActBlock* act0, int64_t act_stride, float* out,
                                      int64_t out_stride) {
  const int64_t block_bytes = Layout::GroupBlockBytes(GgmlType::kQ8_0);
  __m256 acc[kCols][8];
  for (int c = 0; c < kCols; ++c) {
    for (int k = 0; k < 8; ++k) acc[c][k] = _mm256_setzero_ps();
  }
  for (int64_t b = 0; b < num_blocks; ++b, group += block_bytes) {
    PrefetchAhead(group, block_bytes);
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(group)));
    __m256 scale[kCols];
    for (int c = 0; c < kCols; ++c) {
      scale[c] = _mm256_mul_ps(dw, _mm256_set1_ps(act0[c * act_stride + b].d));
    }
    for (int k = 0; k < 8; ++k) {
      const __m256i w =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(group + kScaleBytes + 32 * k));
      const __m256i abs_w = _mm256_abs_epi8(w);  // -128 stays 0x80: 128 unsigned
      for (int c = 0; c < kCols; ++c) {
        const __m256i y = _mm256_sign_epi8(Broadcast4(act0[c * act_stride + b].qs + 4 * k), w);
        const __m256i lanes = _mm256_dpbusd_epi32(_mm256_setzero_si256(), abs_w, y);
        acc[c][k] = _mm256_fmadd_ps(scale[c], _mm256_cvtepi32_ps(lanes), acc[c][k]);
      }
    }
  }
  for (int c = 0; c < kCols; ++c) {
    const __m256* a = acc[c];
    const __m256 sum = _mm256_add_ps(
        _mm256_add_ps(_mm256_add_ps(a[0], a[4]), _mm256_add_ps(a[2], a[6])),
        _mm256_add_ps(_mm256_add_ps(a[1], a[5]), _mm256_add_ps(a[3], a[7])));
    _mm256_storeu_ps(out + c * out_stride, sum);
  }
}

// Two adjacent groups side by side in 512-bit registers (the first's 8 rows
// in the low half, the second's in the high half; `group_bytes` apart): the
// same integers and float steps per row as the 256-bit kernels above, 16
// rows per instruction.
LLORCH_VNNI_TARGET inline __m512 ScalesOfPair(const uint8_t* p0, const uint8_t* p1) {
  return _mm512_cvtph_ps(avx512::LoadPair128(p0, p1));
}

// Q4_0 on a pair of groups: GroupQ4_0Avx2's exact integer dots by vpdpbusd
// (the offset of 8 folded into the start), the same float steps.
template <int kCols>
LLORCH_VNNI_TARGET void GroupPairQ4_0Vnni(const uint8_t* group, int64_t group_bytes,
                                          int64_t num_blocks, const ActBlock* act0,
                                          const int32_t* act_sum0, int64_t act_stride,
                                          float* out, int64_t out_stride) {
  const int64_t block_bytes = Layout::GroupBlockBytes(GgmlType::kQ4_0);
  const __m512i low_mask = _mm512_set1_epi8(0x0F);
  __m512 acc[kCols];
  for (int c = 0; c < kCols; ++c) acc[c] = _mm512_setzero_ps();
  for (int64_t b = 0; b < num_blocks; ++b, group += block_bytes) {
    const uint8_t* second = group + group_bytes;
    PrefetchAhead(group, block_bytes);
    PrefetchAhead(second, block_bytes);
    const __m512 dw = ScalesOfPair(group, second);
    __m512i q[8];  // q[k]: elements 4k..4k+3 of each row, unsigned
    for (int j = 0; j < 4; ++j) {
      const __m512i raw =
          avx512::LoadPair256(group + kScaleBytes + 32 * j, second + kScaleBytes + 32 * j);
      q[j] = _mm512_and_si512(raw, low_mask);
      q[j + 4] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low_mask);
    }
    for (int c = 0; c < kCols; ++c) {
      const ActBlock& y = act0[c * act_stride + b];
      __m512i dot = _mm512_set1_epi32(-8 * act_sum0[c * act_stride + b]);
      for (int k = 0; k < 8; ++k) {
        dot = _mm512_dpbusd_epi32(dot, q[k], avx512::Broadcast4(y.qs + 4 * k));
      }
      acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dw, _mm512_set1_ps(y.d)),
                               acc[c]);
    }
  }
  for (int c = 0; c < kCols; ++c) _mm512_storeu_ps(out + c * out_stride, acc[c]);
}

// Q8_0 (GroupQ8_0Vnni) on a pair of groups. vpdpbusd multiplies unsigned by
// signed bytes: the weights are taken as w + 128 (flipping the sign bit) and
// 128 times the activations' sum over the same 4 elements comes off, through
// the accumulator's start `chunk_bias` (-128 * that sum, 8 per block): the
// same exact integer per lane, one operation fewer per lane than moving w's
// sign onto y (AVX-512 has no vpsignb).
template <int kCols>
LLORCH_VNNI_TARGET void GroupPairQ8_0Vnni(const uint8_t* group, int64_t group_bytes,
                                          int64_t num_blocks, const ActBlock* act0,
                                          const int32_t* chunk_bias0, int64_t act_stride,
                                          float* out, int64_t out_stride) {
  const int64_t block_bytes = Layout::GroupBlockBytes(GgmlType::kQ8_0);
  const __m512i sign_bit = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512 acc[kCols][8];
  for (int c = 0; c < kCols; ++c) {
    for (int k = 0; k < 8; ++k) acc[c][k] = _mm512_setzero_ps();
  }
  for (int64_t b = 0; b < num_blocks; ++b, group += block_bytes) {
    const uint8_t* second = group + group_bytes;
    PrefetchAhead(group, block_bytes);
    PrefetchAhead(second, block_bytes);
    const __m512 dw = ScalesOfPair(group, second);
    __m512 scale[kCols];
    for (int c = 0; c < kCols; ++c) {
      scale[c] = _mm512_mul_ps(dw, _mm512_set1_ps(act0[c * act_stride + b].d));
    }
    for (int k = 0; k < 8; ++k) {
      const __m512i w =
          avx512::LoadPair256(group + kScaleBytes + 32 * k, second + kScaleBytes + 32 * k);
      const __m512i w_offset = _mm512_xor_si512(w, sign_bit);  // w + 128, unsigned
      for (int c = 0; c < kCols; ++c) {
        const __m512i y = avx512::Broadcast4(act0[c * act_stride + b].qs + 4 * k);
        const __m512i bias = _mm512_set1_epi32(chunk_bias0[(c * act_stride + b) * 8 + k]);
        const __m512i lanes = _mm512_dpbusd_epi32(bias, w_offset, y);
        acc[c][k] = _mm512_fmadd_ps(scale[c], _mm512_cvtepi32_ps(lanes), acc[c][k]);
      }
    }
  }
  for (int c = 0; c < kCols; ++c) {
    const __m512* a = acc[c];
    const __m512 sum = _mm512_add_ps(
        _mm512_add_ps(_mm512_add_ps(a[0], a[4]), _mm512_add_ps(a[2], a[6])),
        _mm512_add_ps(_mm512_add_ps(a[1], a[5]), _mm512_add_ps(a[3], a[7])));
    _mm512_storeu_ps(out + c * out_stride, sum);
  }
}

// Q4_1 (GroupQ4_1Avx2) on a pair of groups, kCols activation rows per pass:
// vec_dot's 8 lane accumulators and summs per row, the nibbles unsigned as
// vpdpbusd takes them. Chunk j's low nibbles are lane j, its high ones lane
// j + 4: both lanes come from one load.
template <int kCols>
LLORCH_VNNI_TARGET void GroupPairQ4_1Vnni(const uint8_t* group, int64_t group_bytes,
                                          int64_t num_blocks, const ActBlock* act0,
                                          int64_t act_stride, float* out, int64_t out_stride) {
  const int64_t block_bytes = Layout::GroupBlockBytes(GgmlType::kQ4_1);
  const __m512i low_mask = _mm512_set1_epi8(0x0F);
  __m512 acc[kCols][8];
  __m512 summs[kCols];
  for (int c = 0; c < kCols; ++c) {
    for (int k = 0; k < 8; ++k) acc[c][k] = _mm512_setzero_ps();
    summs[c] = _mm512_setzero_ps();
  }
  for (int64_t b = 0; b < num_blocks; ++b, group += block_bytes) {
    const uint8_t* second = group + group_bytes;
    PrefetchAhead(group, block_bytes);
    PrefetchAhead(second, block_bytes);
    const __m512 dw = ScalesOfPair(group, second);
    const __m512 mw = ScalesOfPair(group + kScaleBytes, second + kScaleBytes);
    __m512 scale[kCols];
    for (int c = 0; c < kCols; ++c) {
      const ActBlock& y = act0[c * act_stride + b];
      summs[c] = _mm512_fmadd_ps(mw, _mm512_set1_ps(y.s), summs[c]);
      scale[c] = _mm512_mul_ps(dw, _mm512_set1_ps(y.d));
    }
    const uint8_t* quants0 = group + 2 * kScaleBytes;
    const uint8_t* quants1 = second + 2 * kScaleBytes;
    for (int j = 0; j < 4; ++j) {
      const __m512i raw = avx512::LoadPair256(quants0 + 32 * j, quants1 + 32 * j);
      const __m512i low = _mm512_and_si512(raw, low_mask);
      const __m512i high = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low_mask);
      for (int c = 0; c < kCols; ++c) {
        const int8_t* qs = act0[c * act_stride + b].qs;
        const __m512i zero = _mm512_setzero_si512();
        const __m512i lanes_low = _mm512_dpbusd_epi32(zero, low, avx512::Broadcast4(qs + 4 * j));
        const __m512i lanes_high =
            _mm512_dpbusd_epi32(zero, high, avx512::Broadcast4(qs + 4 * (j + 4)));
        acc[c][j] = _mm512_fmadd_ps(scale[c], _mm512_cvtepi32_ps(lanes_low), acc[c][j]);
        acc[c][j + 4] =
            _mm512_fmadd_ps(scale[c], _mm512_cvtepi32_ps(lanes_high), acc[c][j + 4]);
      }
    }
  }
  for (int c = 0; c < kCols; ++c) {
    const __m512* a = acc[c];
    const __m512 sum = _mm512_add_ps(
        _mm512_add_ps(_mm512_add_ps(a[0], a[4]), _mm512_add_ps(a[2], a[6])),
        _mm512_add_ps(_mm512_add_ps(a[1], a[5]), _mm512_add_ps(a[3], a[7])));
    _mm512_storeu_ps(out + c * out_stride, _mm512_add_ps(sum, summs[c]));
  }
}

// -128 times the sum of each 4 activation quants (8 per block): the bias of
// GroupPairQ8_0Vnni's lanes.
void ChunkBiases(const ActBlock* act, int64_t num_act_blocks, int32_t* bias) {
  for (int64_t i = 0; i < num_act_blocks; ++i) {
    for (int k = 0; k < 8; ++k) {
      const int8_t* q = act[i].qs + 4 * k;
      bias[i * 8 + k] = -128 * (q[0] + q[1] + q[2] + q[3]);
    }
  }
}

bool HasVnni() {
  static const bool has = CpuIsaAllowed(CpuIsa::kAvx512) &&
                          __builtin_cpu_supports("avx512f") &&
                          __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512vnni");
  return has;
}

// Q8_0, one activation row: eight accumulators, acc[k] holding lane k (4
// elements) of the 8 rows, as ggml's vec_dot keeps them per row; summed in
// hsum_float_8's order at the end.
void GroupQ8_0Avx2(const uint8_t* group, int64_t num_blocks, const ActBlock* act, float* out) {
  const int64_t block_bytes = Layout::GroupBlockBytes(GgmlType::kQ8_0);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[8];
  for (int k = 0; k < 8; ++k) acc[k] = _mm256_setzero_ps();
  for (int64_t b = 0; b < num_blocks; ++b, group += block_bytes) {
    PrefetchAhead(group, block_bytes);
    const __m256 scale =
        _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(group))),
                      _mm256_set1_ps(act[b].d));
    for (int k = 0; k < 8; ++k) {
      const __m256i w =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(group + kScaleBytes + 32 * k));
      const __m256i y = Broadcast4(act[b].qs + 4 * k);
      // maddubs takes unsigned * signed bytes: the weight's sign moves onto y
      // (|w| of -128 read unsigned is 128; |y| <= 127: no pair sum saturates).
      const __m256i lanes = _mm256_madd_epi16(
          _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(y, w)), ones);
      acc[k] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(lanes), acc[k]);
    }
  }
  const __m256 sum = _mm256_add_ps(
      _mm256_add_ps(_mm256_add_ps(acc[0], acc[4]), _mm256_add_ps(acc[2], acc[6])),
      _mm256_add_ps(_mm256_add_ps(acc[1], acc[5]), _mm256_add_ps(acc[3], acc[7])));
  _mm256_storeu_ps(out, sum);
}

// Q4_1, one activation row, vec_dot's order: acc[k] holds lane k (elements
// 4k..4k+3) of the 8 rows, summs the 8 rows' fma(m, s, summs); the nibbles
// are unsigned, so maddubs takes them as they are.
void GroupQ4_1Avx2(const uint8_t* group, int64_t num_blocks, const ActBlock* act, float* out) {
  const int64_t block_bytes = Layout::GroupBlockBytes(GgmlType::kQ4_1);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[8];
  for (int k = 0; k < 8; ++k) acc[k] = _mm256_setzero_ps();
  __m256 summs = _mm256_setzero_ps();
  for (int64_t b = 0; b < num_blocks; ++b, group += block_bytes) {
    PrefetchAhead(group, block_bytes);
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(group)));
    const __m256 mw =
        _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(group + kScaleBytes)));
    summs = _mm256_fmadd_ps(mw, _mm256_set1_ps(act[b].s), summs);
    const __m256 scale = _mm256_mul_ps(dw, _mm256_set1_ps(act[b].d));
    __m256i q[8];  // q[k]: elements 4k..4k+3 of each row
    UnpackNibbles(group + 2 * kScaleBytes, q);
    for (int k = 0; k < 8; ++k) {
      const __m256i lanes = _mm256_madd_epi16(
          _mm256_maddubs_epi16(q[k], Broadcast4(act[b].qs + 4 * k)), ones);
      acc[k] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(lanes), acc[k]);
    }
  }
  const __m256 sum = _mm256_add_ps(
      _mm256_add_ps(_mm256_add_ps(acc[0], acc[4]), _mm256_add_ps(acc[2], acc[6])),
      _mm256_add_ps(_mm256_add_ps(acc[1], acc[5]), _mm256_add_ps(acc[3], acc[7])));
  _mm256_storeu_ps(out, _mm256_add_ps(sum, summs));
}

// Activation rows per pass over a thread's groups (their blocks stay in L2).
constexpr int64_t kActChunk = 32;

// `chunk_biases`: ChunkBiases of the activations where type is Q8_0 and vnni.
void GroupsAvx2(GgmlType type, const uint8_t* interleaved, int64_t rows, int64_t num_blocks,
                const ActBlock* acts, const int32_t* act_sums, const int32_t* chunk_biases,
                int64_t n, float* out, int64_t g0, int64_t g1, bool vnni) {
  const int64_t group_bytes = num_blocks * Layout::GroupBlockBytes(type);
  for (int64_t t0 = 0; t0 < n; t0 += kActChunk) {
    const int64_t t_end = std::min(n, t0 + kActChunk);
    for (int64_t g = g0, width = 1; g < g1; g += width) {
      const uint8_t* group = interleaved + g * group_bytes;
      float* o = out + g * kGroupRows;
      // Pairs of groups in 512-bit registers where VNNI is on.
      width = vnni && g + 1 < g1 ? 2 : 1;
      if (width == 2 && type == GgmlType::kQ4_1) {
        int64_t t = t0;
        for (; t + 2 <= t_end; t += 2) {
          GroupPairQ4_1Vnni<2>(group, group_bytes, num_blocks, acts + t * num_blocks, num_blocks,
                               o + t * rows, rows);
        }
        if (t < t_end) {
          GroupPairQ4_1Vnni<1>(group, group_bytes, num_blocks, acts + t * num_blocks, num_blocks,
                               o + t * rows, rows);
        }
        continue;
      }
      if (width == 2 && type == GgmlType::kQ8_0) {
        int64_t t = t0;
        for (; t + 2 <= t_end; t += 2) {
          GroupPairQ8_0Vnni<2>(group, group_bytes, num_blocks, acts + t * num_blocks,
                               chunk_biases + t * num_blocks * 8, num_blocks, o + t * rows, rows);
        }
        if (t < t_end) {
          GroupPairQ8_0Vnni<1>(group, group_bytes, num_blocks, acts + t * num_blocks,
                               chunk_biases + t * num_blocks * 8, num_blocks, o + t * rows, rows);
        }
        continue;
      }
      if (width == 2) {
        int64_t t = t0;
        const ActBlock* a = acts + t * num_blocks;
        const int32_t* s = act_sums + t * num_blocks;
        for (; t + 4 <= t_end; t += 4, a += 4 * num_blocks, s += 4 * num_blocks) {
          GroupPairQ4_0Vnni<4>(group, group_bytes, num_blocks, a, s, num_blocks, o + t * rows,
                               rows);
        }
        switch (t_end - t) {
          case 3: GroupPairQ4_0Vnni<3>(group, group_bytes, num_blocks, a, s, num_blocks,
                                       o + t * rows, rows); break;
          case 2: GroupPairQ4_0Vnni<2>(group, group_bytes, num_blocks, a, s, num_blocks,
                                       o + t * rows, rows); break;
          case 1: GroupPairQ4_0Vnni<1>(group, group_bytes, num_blocks, a, s, num_blocks,
                                       o + t * rows, rows); break;
          default: break;
        }
        continue;
      }
      if (type == GgmlType::kQ4_1) {
        for (int64_t t = t0; t < t_end; ++t) {
          GroupQ4_1Avx2(group, num_blocks, acts + t * num_blocks, o + t * rows);
        }
        continue;
      }
      if (type == GgmlType::kQ8_0) {
        int64_t t = t0;
        if (vnni) {
          for (; t + 2 <= t_end; t += 2) {
            GroupQ8_0Vnni<2>(group, num_blocks, acts + t * num_blocks, num_blocks, o + t * rows,
                             rows);
          }
          if (t < t_end) {
            GroupQ8_0Vnni<1>(group, num_blocks, acts + t * num_blocks, num_blocks, o + t * rows,
                             rows);
          }
          continue;
        }
        for (; t < t_end; ++t) {
          GroupQ8_0Avx2(group, num_blocks, acts + t * num_blocks, o + t * rows);
        }
        continue;
      }
      int64_t t = t0;
      for (; t + 4 <= t_end; t += 4) {
        GroupQ4_0Avx2<4>(group, num_blocks, acts + t * num_blocks, act_sums + t * num_blocks,
                         num_blocks, o + t * rows, rows);
      }
      const ActBlock* a = acts + t * num_blocks;
      const int32_t* s = act_sums + t * num_blocks;
      switch (t_end - t) {
        case 3: GroupQ4_0Avx2<3>(group, num_blocks, a, s, num_blocks, o + t * rows, rows); break;
        case 2: GroupQ4_0Avx2<2>(group, num_blocks, a, s, num_blocks, o + t * rows, rows); break;
        case 1: GroupQ4_0Avx2<1>(group, num_blocks, a, s, num_blocks, o + t * rows, rows); break;
        default: break;
      }
    }
  }
}

#endif  // LLORCH_INTERLEAVED_AVX2

void InterleavedMatmulImpl(GgmlType type, const uint8_t* interleaved, int64_t rows, int64_t in,
                           const float* x, int64_t n, float* out,
                           const ParallelFor& parallel_for, bool avx2, bool use_vnni = true) {
  if (!InterleavedMatmulSupports(type, rows, in)) Fail("unsupported type or shape");
  if (n < 0) Fail("negative row count");
  if (n == 0) return;
  const int64_t num_blocks = in / kBlock;
  // Reused across calls on the same thread: no allocation per token.
  thread_local std::vector<ActBlock> acts;
  thread_local std::vector<int32_t> act_sums;  // sum of each block's qs (Q4_0)
  if (acts.size() < static_cast<size_t>(n * num_blocks)) {
    acts.resize(n * num_blocks);
    act_sums.resize(n * num_blocks);
  }
  ActBlock* act = acts.data();
  int32_t* act_sum = act_sums.data();
  quant_matmul_internal::QuantizeActivationRows(type, x, n, in, avx2, parallel_for, act,
                                                act_sum);
#ifdef LLORCH_INTERLEAVED_AVX2
  const bool vnni = avx2 && use_vnni && HasVnni();
  thread_local std::vector<int32_t> chunk_biases;
  if (vnni && type == GgmlType::kQ8_0) {
    if (chunk_biases.size() < static_cast<size_t>(n * num_blocks * 8)) {
      chunk_biases.resize(n * num_blocks * 8);
    }
    ChunkBiases(act, n * num_blocks, chunk_biases.data());
  }
  // A thread_local named inside the lambda would be each thread's own.
  const int32_t* biases = chunk_biases.data();
#endif
  parallel_for(0, rows / kGroupRows, [&](int64_t g0, int64_t g1) {
#ifdef LLORCH_INTERLEAVED_AVX2
    if (avx2) {
      GroupsAvx2(type, interleaved, rows, num_blocks, act, act_sum, biases, n, out, g0, g1, vnni);
      return;
    }
#endif
    GroupsPortable(type, interleaved, rows, num_blocks, act, n, out, g0, g1);
  });
}

}  // namespace

bool InterleavedMatmulSupports(GgmlType type, int64_t rows, int64_t in) {
  return (type == GgmlType::kQ4_0 || type == GgmlType::kQ4_1 || type == GgmlType::kQ8_0) &&
         rows > 0 &&
         rows % kGroupRows == 0 && in > 0 && in % kBlock == 0;
}

void InterleaveRows(GgmlType type, const uint8_t* ggml_rows, int64_t rows, int64_t in,
                    uint8_t* out) {
  if (!InterleavedMatmulSupports(type, rows, in)) Fail("unsupported type or shape");
  Layout::Pack(type, ggml_rows, rows, in, out);
}

void DeinterleaveRow(GgmlType type, const uint8_t* interleaved, int64_t in, int64_t row,
                     uint8_t* ggml_row) {
  Layout::Unpack(type, interleaved, in, row, ggml_row);
}

namespace {
std::atomic<bool> allow_vnni{true};
}  // namespace

void InterleavedMatmul(GgmlType type, const uint8_t* interleaved, int64_t rows, int64_t in,
                       const float* x, int64_t n, float* out, const ParallelFor& parallel_for) {
  InterleavedMatmulImpl(type, interleaved, rows, in, x, n, out, parallel_for,
                        quant_matmul_internal::UsesAvx2(),
                        allow_vnni.load(std::memory_order_relaxed));
}

namespace interleaved_matmul_internal {

void AllowVnni(bool allow) { allow_vnni.store(allow); }

bool UsesVnni() {
#ifdef LLORCH_INTERLEAVED_AVX2
  return quant_matmul_internal::UsesAvx2() && allow_vnni.load() && HasVnni();
#else
  return false;
#endif
}

void InterleavedMatmulPortable(GgmlType type, const uint8_t* interleaved, int64_t rows,
                               int64_t in, const float* x, int64_t n, float* out) {
  InterleavedMatmulImpl(type, interleaved, rows, in, x, n, out, SerialFor, /*avx2=*/false);
}

}  // namespace interleaved_matmul_internal
}  // namespace llorch
