#include "worker/model/quant_matmul.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/float_bits.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define LLORCH_QUANT_MATMUL_AVX2 1
#include <immintrin.h>
#endif

// Exactness notes (how ggml's x86 AVX2 build computes, which this file
// reproduces; checked against the prebuilt libggml-cpu-haswell.so):
// - Activations: per block of 32, amax = max |x|, d = amax / 127, id =
//   127 / amax (0 if amax == 0), q = round-half-even(x * id) saturated to
//   int8; d is stored as fp16. Q8_1 also stores s = fp16(d * sum(q)) with the
//   unrounded float d.
// - Block dot: the 32 integer products are summed in 8 int32 lanes of 4
//   consecutive elements (exact); each lane is converted to float and
//   accumulated as acc[k] = fma(dx * dy, lane[k], acc[k]) over the blocks.
//   Types with a min (Q4_1, Q5_1) also accumulate summs = fma(m, s, summs)
//   (the compiler fuses ggml's `summs += m * s`).
// - Result: ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)), plus summs.
// fp16 -> fp32 is exact; fp32 -> fp16 rounds to nearest even (F16C and
// ggml's software conversion agree). This file is compiled with
// -ffp-contract=off so that only the fma calls written here are fused.

namespace llorch {
namespace {

constexpr int64_t kBlock = 32;

using quant_matmul_internal::ActBlock;

[[noreturn]] void Fail(const char* message) {
  std::fprintf(stderr, "QuantMatmul: %s\n", message);
  std::abort();
}

uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

uint32_t LoadU32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// True for weight types whose activations are quantised to Q8_1 (weights
// with a min: the dot product needs the activation block sum).
bool NeedsBlockSum(GgmlType type) {
  return type == GgmlType::kQ4_1 || type == GgmlType::kQ5_1;
}

// ---------------------------------------------------------------------------
// Portable scalar code: the same lanes and order as the AVX2 code.

void QuantizeActivationsPortable(const float* x, int64_t num_blocks,
                                 bool with_sum, ActBlock* out) {
  for (int64_t b = 0; b < num_blocks; ++b, x += kBlock) {
    float amax = 0.0f;
    for (int64_t j = 0; j < kBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    int32_t sum = 0;
    for (int64_t j = 0; j < kBlock; ++j) {
      const float q = std::nearbyint(x[j] * id);  // half to even
      const int32_t qi =
          static_cast<int32_t>(std::min(127.0f, std::max(-128.0f, q)));
      out[b].qs[j] = static_cast<int8_t>(qi);
      sum += qi;
    }
    out[b].d = HalfToFloat(FloatToHalf(d));
    out[b].s = with_sum ? HalfToFloat(FloatToHalf(
                              d * static_cast<float>(sum)))
                        : 0.0f;
  }
}

// Weight block decoders: integer quants (signed for the symmetric types),
// scale and min.
struct PortableQ4_0 {
  static constexpr size_t kBytes = 18;
  static constexpr bool kHasMin = false;
  static float Min(const uint8_t*) { return 0.0f; }
  static void Quants(const uint8_t* b, int32_t* q) {
    for (int j = 0; j < 16; ++j) {
      q[j] = (b[2 + j] & 0x0F) - 8;
      q[j + 16] = (b[2 + j] >> 4) - 8;
    }
  }
};

struct PortableQ4_1 {
  static constexpr size_t kBytes = 20;
  static constexpr bool kHasMin = true;
  static float Min(const uint8_t* b) { return HalfToFloat(LoadU16(b + 2)); }
  static void Quants(const uint8_t* b, int32_t* q) {
    for (int j = 0; j < 16; ++j) {
      q[j] = b[4 + j] & 0x0F;
      q[j + 16] = b[4 + j] >> 4;
    }
  }
};

struct PortableQ5_0 {
  static constexpr size_t kBytes = 22;
  static constexpr bool kHasMin = false;
  static float Min(const uint8_t*) { return 0.0f; }
  static void Quants(const uint8_t* b, int32_t* q) {
    const uint32_t qh = LoadU32(b + 2);
    for (int j = 0; j < 16; ++j) {
      q[j] = ((b[6 + j] & 0x0F) | (((qh >> j) & 1) << 4)) - 16;
      q[j + 16] = ((b[6 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16;
    }
  }
};

struct PortableQ5_1 {
  static constexpr size_t kBytes = 24;
  static constexpr bool kHasMin = true;
  static float Min(const uint8_t* b) { return HalfToFloat(LoadU16(b + 2)); }
  static void Quants(const uint8_t* b, int32_t* q) {
    const uint32_t qh = LoadU32(b + 4);
    for (int j = 0; j < 16; ++j) {
      q[j] = (b[8 + j] & 0x0F) | (((qh >> j) & 1) << 4);
      q[j + 16] = (b[8 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
    }
  }
};

struct PortableQ8_0 {
  static constexpr size_t kBytes = 34;
  static constexpr bool kHasMin = false;
  static float Min(const uint8_t*) { return 0.0f; }
  static void Quants(const uint8_t* b, int32_t* q) {
    for (int j = 0; j < 32; ++j) q[j] = static_cast<int8_t>(b[2 + j]);
  }
};

// ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)): ggml's hsum_float_8.
float HorizontalSumPortable(const float* a) {
  const float r0 = a[0] + a[4], r1 = a[1] + a[5], r2 = a[2] + a[6],
              r3 = a[3] + a[7];
  return (r0 + r2) + (r1 + r3);
}

template <class W>
float DotRowPortable(const uint8_t* weight_row, int64_t num_blocks,
                     const ActBlock* act) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  float summs = 0.0f;
  int32_t q[kBlock];
  for (int64_t b = 0; b < num_blocks; ++b) {
    const uint8_t* block = weight_row + b * W::kBytes;
    const ActBlock& y = act[b];
    W::Quants(block, q);
    if (W::kHasMin) summs = std::fma(W::Min(block), y.s, summs);
    const float scale = HalfToFloat(LoadU16(block)) * y.d;
    for (int k = 0; k < 8; ++k) {
      int32_t lane = 0;
      for (int j = 4 * k; j < 4 * k + 4; ++j) lane += q[j] * y.qs[j];
      acc[k] = std::fma(scale, static_cast<float>(lane), acc[k]);
    }
  }
  const float total = HorizontalSumPortable(acc);
  return W::kHasMin ? total + summs : total;
}

template <class W>
void RowsPortable(const uint8_t* weight, int64_t rows, int64_t num_blocks,
                  const ActBlock* acts, int64_t n, float* out, int64_t r0,
                  int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = weight + r * num_blocks * W::kBytes;
    for (int64_t t = 0; t < n; ++t) {
      out[t * rows + r] = DotRowPortable<W>(row, num_blocks, acts + t * num_blocks);
    }
  }
}

// ---------------------------------------------------------------------------
// AVX2 code.
#ifdef LLORCH_QUANT_MATMUL_AVX2

// The largest |x| of a block of 32, in quantize_row_q8_1's order of maxima.
inline float BlockAbsMax(const float* x) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  const __m256 abs_max = _mm256_max_ps(
      _mm256_max_ps(_mm256_andnot_ps(sign_bit, _mm256_loadu_ps(x)),
                    _mm256_andnot_ps(sign_bit, _mm256_loadu_ps(x + 8))),
      _mm256_max_ps(_mm256_andnot_ps(sign_bit, _mm256_loadu_ps(x + 16)),
                    _mm256_andnot_ps(sign_bit, _mm256_loadu_ps(x + 24))));
  __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(abs_max, 1), _mm256_castps256_ps128(abs_max));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
  return _mm_cvtss_f32(m4);
}

// Rounded to nearest even through F16 (vcvtps2ph), 8 at a time.
inline __m256 ThroughHalf(__m256 x) {
  return _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

// Blocks 8 at a time: their scales' divisions (d = amax / 127, id = 127 /
// amax) as two vector divisions instead of 16 scalar ones, the F16
// roundings of d and of s = d * sum likewise; the same operations per block.
void QuantizeActivationsAvx2(const float* x, int64_t num_blocks, bool with_sum,
                             ActBlock* out) {
  constexpr int kNearestEven = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  for (int64_t b0 = 0; b0 < num_blocks; b0 += 8) {
    const int count = static_cast<int>(std::min<int64_t>(8, num_blocks - b0));
    alignas(32) float amax[8] = {};
    for (int k = 0; k < count; ++k) amax[k] = BlockAbsMax(x + (b0 + k) * kBlock);
    const __m256 a = _mm256_load_ps(amax);
    const __m256 d = _mm256_div_ps(a, _mm256_set1_ps(127.0f));
    const __m256 id = _mm256_and_ps(_mm256_cmp_ps(a, _mm256_setzero_ps(), _CMP_NEQ_OQ),
                                    _mm256_div_ps(_mm256_set1_ps(127.0f), a));
    alignas(32) float ids[8], halves[8];
    alignas(32) int32_t sums[8] = {};
    _mm256_store_ps(ids, id);
    _mm256_store_ps(halves, ThroughHalf(d));
    for (int k = 0; k < count; ++k) {
      const float* block = x + (b0 + k) * kBlock;
      const __m256 mul = _mm256_set1_ps(ids[k]);
      __m256i q[4];
      for (int i = 0; i < 4; ++i) {
        q[i] = _mm256_cvtps_epi32(
            _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(block + 8 * i), mul), kNearestEven));
      }
      ActBlock& o = out[b0 + k];
      o.d = halves[k];
      if (with_sum) {
        const __m256i sum8 = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]),
                                              _mm256_add_epi32(q[2], q[3]));
        __m128i sum4 = _mm_add_epi32(_mm256_castsi256_si128(sum8),
                                     _mm256_extracti128_si256(sum8, 1));
        sum4 = _mm_add_epi32(sum4, _mm_unpackhi_epi64(sum4, sum4));
        sum4 = _mm_add_epi32(sum4, _mm_shuffle_epi32(sum4, _MM_SHUFFLE(2, 3, 0, 1)));
        sums[k] = _mm_cvtsi128_si32(sum4);
      }
      // Saturating packs work per 128-bit half; the permute restores order.
      const __m256i packed = _mm256_permutevar8x32_epi32(
          _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3])),
          _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o.qs), packed);
    }
    alignas(32) float s[8];
    _mm256_store_ps(s, with_sum ? ThroughHalf(_mm256_mul_ps(
                                      d, _mm256_cvtepi32_ps(_mm256_load_si256(
                                             reinterpret_cast<const __m256i*>(sums)))))
                                : _mm256_setzero_ps());
    for (int k = 0; k < count; ++k) out[b0 + k].s = s[k];
  }
}

// 32 nibbles of 16 bytes -> 32 bytes in element order (low nibbles first).
// A broadcast load and a per-half shift avoid a cross-lane shuffle.
inline __m256i NibblesToBytes(const uint8_t* p) {
  const __m256i both = _mm256_broadcastsi128_si256(
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_and_si256(_mm256_srlv_epi32(both, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)),
                          _mm256_set1_epi8(0x0F));
}

// 32 bits -> 32 bytes, 0xFF where the element's bit is set.
inline __m256i BitsToBytes(const uint8_t* p) {
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(static_cast<int>(LoadU32(p))),
      _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,  //
                       2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
  const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ull));
  return _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
}

// Weight block decoders: quants as bytes (signed int8 if kSigned, else
// unsigned), scale, min.
// Scale (lane 0) and, for the types with a min, the min (lane 1) of a block.
inline __m128 ScaleAndMin(const uint8_t* p) {
  return _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(LoadU32(p))));
}
inline __m128 ScaleOnly(const uint8_t* p) {
  return _mm_cvtph_ps(_mm_cvtsi32_si128(LoadU16(p)));
}

struct Avx2Q4_0 {
  static constexpr size_t kBytes = 18;
  static constexpr bool kSigned = true, kHasMin = false;
  static __m128 Header(const uint8_t* b) { return ScaleOnly(b); }
  static __m256i Quants(const uint8_t* b) {
    return _mm256_sub_epi8(NibblesToBytes(b + 2), _mm256_set1_epi8(8));
  }
};

struct Avx2Q4_1 {
  static constexpr size_t kBytes = 20;
  static constexpr bool kSigned = false, kHasMin = true;
  static __m128 Header(const uint8_t* b) { return ScaleAndMin(b); }
  static __m256i Quants(const uint8_t* b) { return NibblesToBytes(b + 4); }
};

struct Avx2Q5_0 {
  static constexpr size_t kBytes = 22;
  static constexpr bool kSigned = true, kHasMin = false;
  static __m128 Header(const uint8_t* b) { return ScaleOnly(b); }
  static __m256i Quants(const uint8_t* b) {
    // (nibble | bit << 4) - 16 == nibble | (bit ? 0 : 0xF0) as int8.
    return _mm256_or_si256(
        NibblesToBytes(b + 6),
        _mm256_andnot_si256(BitsToBytes(b + 2), _mm256_set1_epi8(static_cast<char>(0xF0))));
  }
};

struct Avx2Q5_1 {
  static constexpr size_t kBytes = 24;
  static constexpr bool kSigned = false, kHasMin = true;
  static __m128 Header(const uint8_t* b) { return ScaleAndMin(b); }
  static __m256i Quants(const uint8_t* b) {
    return _mm256_or_si256(NibblesToBytes(b + 8),
                           _mm256_and_si256(BitsToBytes(b + 4), _mm256_set1_epi8(0x10)));
  }
};

struct Avx2Q8_0 {
  static constexpr size_t kBytes = 34;
  static constexpr bool kSigned = true, kHasMin = false;
  static __m128 Header(const uint8_t* b) { return ScaleOnly(b); }
  static __m256i Quants(const uint8_t* b) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2));
  }
};

inline float HorizontalSumAvx2(__m256 a) {
  __m128 r = _mm_add_ps(_mm256_extractf128_ps(a, 1), _mm256_castps256_ps128(a));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}

// Dot products of kRows weight rows with kCols activation rows; each
// (row, col) pair has its own accumulators, summed exactly like ggml's
// vec_dot, and the pairs give the core independent chains to overlap.
template <class W, int kRows, int kCols>
void DotTileAvx2(const uint8_t* weight_row0, size_t row_bytes,
                 int64_t num_blocks, const ActBlock* act0, int64_t act_stride,
                 float* out, int64_t out_stride) {
  __m256 acc[kRows][kCols];
  float summs[kRows][kCols];
  for (int i = 0; i < kRows; ++i) {
    for (int c = 0; c < kCols; ++c) {
      acc[i][c] = _mm256_setzero_ps();
      summs[i][c] = 0.0f;
    }
  }
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < num_blocks; ++b) {
    __m256i qy[kCols];
    for (int c = 0; c < kCols; ++c) {
      qy[c] = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(act0[c * act_stride + b].qs));
    }
    for (int i = 0; i < kRows; ++i) {
      const uint8_t* block = weight_row0 + i * row_bytes + b * W::kBytes;
      const __m128 header = W::Header(block);
      const float dx = _mm_cvtss_f32(header);
      const __m256 dx8 = _mm256_broadcastss_ps(header);
      const float min = W::kHasMin ? _mm_cvtss_f32(_mm_movehdup_ps(header)) : 0.0f;
      const __m256i qx = W::Quants(block);
      // maddubs multiplies unsigned by signed bytes: move the weight's sign
      // onto the activation for the signed types (no int16 saturation is
      // possible: |pair sum| <= 2 * 128 * 127).
      const __m256i ux = W::kSigned ? _mm256_sign_epi8(qx, qx) : qx;
      for (int c = 0; c < kCols; ++c) {
        const ActBlock& y = act0[c * act_stride + b];
        if (W::kHasMin) summs[i][c] = std::fma(min, y.s, summs[i][c]);
        const __m256i sy = W::kSigned ? _mm256_sign_epi8(qy[c], qx) : qy[c];
        const __m256 lanes = _mm256_cvtepi32_ps(
            _mm256_madd_epi16(_mm256_maddubs_epi16(ux, sy), ones));
        // set1(dx) * set1(dy) has the bits of ggml's set1(dx * dy); the
        // scalar form is faster for one column, the vector form for several.
        const __m256 scale = kCols == 1 ? _mm256_set1_ps(dx * y.d)
                                        : _mm256_mul_ps(dx8, _mm256_broadcast_ss(&y.d));
        acc[i][c] = _mm256_fmadd_ps(scale, lanes, acc[i][c]);
      }
    }
  }
  for (int i = 0; i < kRows; ++i) {
    for (int c = 0; c < kCols; ++c) {
      const float total = HorizontalSumAvx2(acc[i][c]);
      out[c * out_stride + i] = W::kHasMin ? total + summs[i][c] : total;
    }
  }
}

// Activation rows per pass over a thread's weight rows: their quantised
// blocks stay in L2 while the weight rows are streamed.
constexpr int64_t kActChunk = 32;

template <class W, int kCols>
void RowRangeAvx2(const uint8_t* weight, int64_t rows, int64_t num_blocks,
                  const ActBlock* acts, float* out, int64_t r0, int64_t r1) {
  // Fewer activation rows -> more weight rows at once, to keep enough
  // independent accumulation chains in flight.
  constexpr int kRows = kCols == 1 ? 4 : kCols == 2 ? 2 : 1;
  const size_t row_bytes = num_blocks * W::kBytes;
  int64_t r = r0;
  for (; r + kRows <= r1; r += kRows) {
    DotTileAvx2<W, kRows, kCols>(weight + r * row_bytes, row_bytes, num_blocks,
                                 acts, num_blocks, out + r, rows);
  }
  for (; r < r1; ++r) {
    DotTileAvx2<W, 1, kCols>(weight + r * row_bytes, row_bytes, num_blocks,
                             acts, num_blocks, out + r, rows);
  }
}

template <class W>
void RowsAvx2(const uint8_t* weight, int64_t rows, int64_t num_blocks,
              const ActBlock* acts, int64_t n, float* out, int64_t r0,
              int64_t r1) {
  for (int64_t t0 = 0; t0 < n; t0 += kActChunk) {
    const int64_t t_end = std::min(n, t0 + kActChunk);
    int64_t t = t0;
    for (; t + 4 <= t_end; t += 4) {
      RowRangeAvx2<W, 4>(weight, rows, num_blocks, acts + t * num_blocks,
                         out + t * rows, r0, r1);
    }
    const ActBlock* act = acts + t * num_blocks;
    float* o = out + t * rows;
    switch (t_end - t) {
      case 3: RowRangeAvx2<W, 3>(weight, rows, num_blocks, act, o, r0, r1); break;
      case 2: RowRangeAvx2<W, 2>(weight, rows, num_blocks, act, o, r0, r1); break;
      case 1: RowRangeAvx2<W, 1>(weight, rows, num_blocks, act, o, r0, r1); break;
      default: break;
    }
  }
}

#endif  // LLORCH_QUANT_MATMUL_AVX2

// ---------------------------------------------------------------------------

using RowsFn = void (*)(const uint8_t*, int64_t, int64_t, const ActBlock*,
                        int64_t, float*, int64_t, int64_t);

RowsFn SelectRows(GgmlType type, bool avx2) {
#ifdef LLORCH_QUANT_MATMUL_AVX2
  if (avx2) {
    switch (type) {
      case GgmlType::kQ4_0: return RowsAvx2<Avx2Q4_0>;
      case GgmlType::kQ4_1: return RowsAvx2<Avx2Q4_1>;
      case GgmlType::kQ5_0: return RowsAvx2<Avx2Q5_0>;
      case GgmlType::kQ5_1: return RowsAvx2<Avx2Q5_1>;
      case GgmlType::kQ8_0: return RowsAvx2<Avx2Q8_0>;
      default: return nullptr;
    }
  }
#else
  (void)avx2;
#endif
  switch (type) {
    case GgmlType::kQ4_0: return RowsPortable<PortableQ4_0>;
    case GgmlType::kQ4_1: return RowsPortable<PortableQ4_1>;
    case GgmlType::kQ5_0: return RowsPortable<PortableQ5_0>;
    case GgmlType::kQ5_1: return RowsPortable<PortableQ5_1>;
    case GgmlType::kQ8_0: return RowsPortable<PortableQ8_0>;
    default: return nullptr;
  }
}

void QuantMatmulImpl(GgmlType type, const uint8_t* weight, int64_t rows,
                     int64_t in, const float* x, int64_t n, float* out,
                     const ParallelFor& parallel_for, bool avx2) {
  const RowsFn rows_fn = SelectRows(type, avx2);
  if (rows_fn == nullptr) Fail("unsupported weight type");
  if (in <= 0 || in % kBlock != 0) Fail("`in` must be a positive multiple of 32");
  if (rows < 0 || n < 0) Fail("negative row count");
  if (rows == 0 || n == 0) return;
  const int64_t num_blocks = in / kBlock;
  const bool with_sum = NeedsBlockSum(type);

  // Reused across calls on the same thread: no allocation per token.
  thread_local std::vector<ActBlock> scratch;
  if (scratch.size() < static_cast<size_t>(n * num_blocks)) {
    scratch.resize(n * num_blocks);
  }
  ActBlock* acts = scratch.data();
  const auto quantize = [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      quant_matmul_internal::QuantizeActivations(x + t * in, num_blocks, with_sum, avx2,
                                                 acts + t * num_blocks);
    }
  };
  // Quantising is cheap next to the products: split only large batches.
  if (n >= 64) {
    parallel_for(0, n, quantize);
  } else {
    quantize(0, n);
  }
  parallel_for(0, rows, [&](int64_t r0, int64_t r1) {
    rows_fn(weight, rows, num_blocks, acts, n, out, r0, r1);
  });
}

}  // namespace

void SerialFor(int64_t begin, int64_t end, const RangeFn& body) {
  if (begin < end) body(begin, end);
}

bool QuantMatmulSupports(GgmlType type) {
  return SelectRows(type, /*avx2=*/false) != nullptr;
}

void QuantMatmul(GgmlType type, const uint8_t* weight, int64_t rows,
                 int64_t in, const float* x, int64_t n, float* out,
                 const ParallelFor& parallel_for) {
  QuantMatmulImpl(type, weight, rows, in, x, n, out, parallel_for,
                  quant_matmul_internal::UsesAvx2());
}

namespace quant_matmul_internal {

void QuantizeActivations(const float* x, int64_t num_blocks, bool with_sum, bool avx2,
                         ActBlock* out) {
#ifdef LLORCH_QUANT_MATMUL_AVX2
  if (avx2) {
    QuantizeActivationsAvx2(x, num_blocks, with_sum, out);
    return;
  }
#else
  (void)avx2;
#endif
  QuantizeActivationsPortable(x, num_blocks, with_sum, out);
}

void QuantizeActivationRows(GgmlType type, const float* x, int64_t n, int64_t in, bool avx2,
                            const ParallelFor& parallel_for, ActBlock* act, int32_t* act_sum) {
  const int64_t num_blocks = in / kBlock;
  const auto quantize = [&](int64_t t0, int64_t t1) {
    QuantizeActivations(x + t0 * in, (t1 - t0) * num_blocks,
                        /*with_sum=*/type == GgmlType::kQ4_1, avx2, act + t0 * num_blocks);
    if (type != GgmlType::kQ4_0) return;
    for (int64_t i = t0 * num_blocks; i < t1 * num_blocks; ++i) {
      int32_t sum = 0;
      for (int64_t j = 0; j < kBlock; ++j) sum += act[i].qs[j];
      act_sum[i] = sum;
    }
  };
  // Quantising is cheap next to the products: split only large batches.
  if (n >= 64) {
    parallel_for(0, n, quantize);
  } else {
    quantize(0, n);
  }
}

bool UsesAvx2() {
#ifdef LLORCH_QUANT_MATMUL_AVX2
  return true;
#else
  return false;
#endif
}

void QuantMatmulPortable(GgmlType type, const uint8_t* weight, int64_t rows,
                         int64_t in, const float* x, int64_t n, float* out) {
  QuantMatmulImpl(type, weight, rows, in, x, n, out, SerialFor, /*avx2=*/false);
}

}  // namespace quant_matmul_internal
}  // namespace llorch
