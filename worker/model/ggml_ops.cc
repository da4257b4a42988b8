#include "worker/model/ggml_ops.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/float_bits.h"
#include "worker/model/amx_kernels.h"    // TilesSupported
#include "worker/model/cpu_isa.h"
#include "worker/model/float_matmul.h"  // WidenRowToFloat
#include "worker/model/prepared_scores.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define LLORCH_GGML_OPS_F16C 1
#endif

namespace llorch {
namespace {

// 2^e as a float, for -126 <= e <= 127.
float PowerOfTwo(int e) { return BitsToFloat(static_cast<uint32_t>(e + 127) << 23); }

// Both variants' exp start alike: x = n ln2 + b, with ggml's constants.
struct ExpSplit {
  float z, n, b, u;
};

ExpSplit SplitExp(float x) {
  const float shifter = 0x1.8p23f;
  ExpSplit s;
  s.z = std::fma(x, 0x1.715476p+0f, shifter);
  s.n = s.z - shifter;
  s.b = std::fma(-s.n, 0x1.7f7d1cp-20f, std::fma(-s.n, 0x1.62e4p-1f, x));
  s.u = s.b * s.b;
  return s;
}

// ggml_v_expf, AVX-512 library: j = p(b) including the constant term, then
// _mm512_scalef_ps(j, n).
float ExpAvx512(float x) {
  const ExpSplit s = SplitExp(x);
  if (std::fabs(s.n) > 192.0f) {
    return s.n <= 0.0f ? 0.0f : std::numeric_limits<float>::infinity();
  }
  const float b = s.b, u = s.u;
  const float j = std::fma(std::fma(std::fma(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u,
                                    std::fma(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
                           u, std::fma(0x1.ffffecp-1f, b, 1.0f));
  // scalef: j * 2^n rounded once. As (j * 2^(n - k)) * 2^k with k = n / 2:
  // both powers are normal floats for |n| <= 192, the first product is exact
  // (j is in [0.7, 1.5]) and the second rounds once.
  const int exponent = static_cast<int>(s.n);
  const int half = exponent >> 1;
  return (j * PowerOfTwo(exponent - half)) * PowerOfTwo(half);
}

// ggml_v_expf, AVX2 library: j = p(b) - 1, and 2^n built from the bits of z;
// k + k j when |n| <= 126, else two scale factors (the second product may
// round a subnormal result a second time, as ggml's does).
float ExpAvx2(float x) {
  const ExpSplit s = SplitExp(x);
  const float b = s.b, u = s.u;
  const uint32_t e = FloatToBits(s.z) << 23;
  const float k = BitsToFloat(e + FloatToBits(1.0f));  // 2^n
  const float j = std::fma(std::fma(std::fma(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u,
                                    std::fma(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
                           u, 0x1.ffffecp-1f * b);
  if (!(std::fabs(s.n) > 126.0f)) return std::fma(j, k, k);
  const uint32_t g = s.n <= 0.0f ? 0x82000000u : 0u;
  const float s1 = BitsToFloat(g + 0x7f000000u);
  const float s2 = BitsToFloat(e - g);
  if (std::fabs(s.n) > 192.0f) return s1 * s1;
  return std::fma(s2, j, s2) * s1;
}

#if defined(__AVX2__) && defined(__FMA__)
struct ExpSplit8 {
  __m256 z, n, b, u;
};

ExpSplit8 SplitExp8(__m256 x) {
  const __m256 shifter = _mm256_set1_ps(0x1.8p23f);
  ExpSplit8 s;
  s.z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), shifter);
  s.n = _mm256_sub_ps(s.z, shifter);
  s.b = _mm256_fnmadd_ps(s.n, _mm256_set1_ps(0x1.7f7d1cp-20f),
                         _mm256_fnmadd_ps(s.n, _mm256_set1_ps(0x1.62e4p-1f), x));
  s.u = _mm256_mul_ps(s.b, s.b);
  return s;
}

// p(b) without its last two terms: (c4 b + c3) u + (c2 b + c1).
__m256 ExpPolyHigh8(__m256 b, __m256 u) {
  return _mm256_fmadd_ps(
      _mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f)), u,
      _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f)));
}

__m256 AbsGreater8(__m256 n, float limit) {
  return _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), n), _mm256_set1_ps(limit),
                       _CMP_GT_OQ);
}

// ExpAvx512 on 8 floats: the same IEEE operations lane by lane.
__m256 ExpAvx512x8(__m256 x) {
  const ExpSplit8 s = SplitExp8(x);
  const __m256 j = _mm256_fmadd_ps(
      ExpPolyHigh8(s.b, s.u), s.u,
      _mm256_fmadd_ps(_mm256_set1_ps(0x1.ffffecp-1f), s.b, _mm256_set1_ps(1.0f)));
  const __m256i exponent = _mm256_cvtps_epi32(s.n);
  const __m256i half = _mm256_srai_epi32(exponent, 1);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 first = _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(exponent, half), bias), 23));
  const __m256 second = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, bias), 23));
  const __m256 result = _mm256_mul_ps(_mm256_mul_ps(j, first), second);
  const __m256 limit = _mm256_blendv_ps(_mm256_set1_ps(std::numeric_limits<float>::infinity()),
                                        _mm256_setzero_ps(),
                                        _mm256_cmp_ps(s.n, _mm256_setzero_ps(), _CMP_LE_OQ));
  return _mm256_blendv_ps(result, limit, AbsGreater8(s.n, 192.0f));
}

// ExpAvx2 on 8 floats: the AVX2 library's register, lane for lane.
__m256 ExpAvx2x8(__m256 x) {
  const ExpSplit8 s = SplitExp8(x);
  const __m256i e = _mm256_slli_epi32(_mm256_castps_si256(s.z), 23);
  const __m256 k = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_set1_epi32(0x3f800000)));
  const __m256 j = _mm256_fmadd_ps(ExpPolyHigh8(s.b, s.u), s.u,
                                   _mm256_mul_ps(_mm256_set1_ps(0x1.ffffecp-1f), s.b));
  const __m256 large = AbsGreater8(s.n, 126.0f);
  const __m256 normal = _mm256_fmadd_ps(j, k, k);
  if (!_mm256_movemask_ps(large)) return normal;
  const __m256i g = _mm256_and_si256(
      _mm256_castps_si256(_mm256_cmp_ps(s.n, _mm256_setzero_ps(), _CMP_LE_OQ)),
      _mm256_set1_epi32(static_cast<int>(0x82000000u)));
  const __m256 s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f000000)));
  const __m256 s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
  const __m256 scaled = _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1);
  const __m256 saturated = _mm256_mul_ps(s1, s1);
  return _mm256_blendv_ps(_mm256_blendv_ps(normal, scaled, large), saturated,
                          AbsGreater8(s.n, 192.0f));
}
#endif

// _mm512_reduce_add_ps as GCC expands it: halves added pairwise.
float ReduceAdd16(const float* lanes) {
  float quarter[8], eighth[4];
  for (int i = 0; i < 8; ++i) quarter[i] = lanes[i] + lanes[i + 8];
  for (int i = 0; i < 4; ++i) eighth[i] = quarter[i] + quarter[i + 4];
  return (eighth[0] + eighth[2]) + (eighth[1] + eighth[3]);
}

// GGML_F32x8_REDUCE's last step (ggml_vec_dot_f32, AVX2): the 128-bit halves
// added, then two _mm_hadd_ps: neighbours first.
float HaddReduce8(const float* lanes) {
  float t[4];
  for (int i = 0; i < 4; ++i) t[i] = lanes[i] + lanes[i + 4];
  return (t[0] + t[1]) + (t[2] + t[3]);
}

// tinyBLAS's hsum(__m256) and ggml_vec_soft_max_f32's AVX2 sum: the halves
// added, then movehl (lanes i and i + 2), then movehdup.
float Hsum8(const float* lanes) {
  float t[4];
  for (int i = 0; i < 4; ++i) t[i] = lanes[i] + lanes[i + 4];
  return (t[0] + t[2]) + (t[1] + t[3]);
}

// What differs between the variants, as compile-time constants and calls.
template <GgmlVariant V>
struct Order;

template <>
struct Order<GgmlVariant::kAvx512> {
  static constexpr int kLanes = 16;  // floats in one __m512
  static float Exp(float x) { return ExpAvx512(x); }
#if defined(__AVX2__) && defined(__FMA__)
  static __m256 Exp8(__m256 x) { return ExpAvx512x8(x); }
#endif
  static float DotReduce(const float* lanes) { return ReduceAdd16(lanes); }
  static float SumReduce(const float* lanes) { return ReduceAdd16(lanes); }
};

template <>
struct Order<GgmlVariant::kAvx2> {
  static constexpr int kLanes = 8;  // floats in one __m256
  static float Exp(float x) { return ExpAvx2(x); }
#if defined(__AVX2__) && defined(__FMA__)
  static __m256 Exp8(__m256 x) { return ExpAvx2x8(x); }
#endif
  static float DotReduce(const float* lanes) { return HaddReduce8(lanes); }
  static float SumReduce(const float* lanes) { return Hsum8(lanes); }
};

// Where position j's row of head_dim elements starts in a cache: row j, or
// through a block table (paged cache) when one is given.
struct CacheRows {
  const int32_t* block_table;
  int64_t block_size;
  int64_t head_dim;
  int64_t operator()(int64_t j) const {
    return block_table == nullptr
               ? j * head_dim
               : (int64_t{block_table[j / block_size]} * block_size + j % block_size) * head_dim;
  }
};

// A cache's rows as floats: F32 as they are, F16 and BF16 widened exactly
// as they are loaded (the values an F32 copy of them would hold).
template <KvElement E>
struct KvRows;

template <>
struct KvRows<KvElement::kF32> {
  using T = float;
  static float At(const T* row, int64_t i) { return row[i]; }
#ifdef LLORCH_GGML_OPS_F16C
  static __m256 Load8(const T* row) { return _mm256_loadu_ps(row); }
#endif
};

template <>
struct KvRows<KvElement::kF16> {
  using T = uint16_t;
  static float At(const T* row, int64_t i) { return HalfToFloat(row[i]); }
#ifdef LLORCH_GGML_OPS_F16C
  static __m256 Load8(const T* row) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row)));
  }
#endif
};

template <>
struct KvRows<KvElement::kBF16> {
  using T = uint16_t;
  static float At(const T* row, int64_t i) {
    return BitsToFloat(static_cast<uint32_t>(row[i]) << 16);
  }
#ifdef LLORCH_GGML_OPS_F16C
  static __m256 Load8(const T* row) {
    const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
  }
#endif
};

// A row of head_dim elements as floats: F32 in place, else widened into
// `buffer` (so that the float loop over it vectorises).
template <KvElement E>
const float* WidenedRow(const typename KvRows<E>::T* row, int64_t head_dim,
                        std::vector<float>* buffer) {
  if constexpr (E == KvElement::kF32) {
    return row;
  } else {
    buffer->resize(static_cast<size_t>(head_dim));
    WidenRowToFloat(E == KvElement::kF16 ? GgmlType::kF16 : GgmlType::kBF16, row, head_dim,
                    buffer->data());
    return buffer->data();
  }
}

// ggml_vec_dot_f32 of a key row and the query: four register-wide
// accumulators over steps of four registers, folded (0+2, 1+3, then 0+1)
// and reduced; the tail added one by one.
template <GgmlVariant V, KvElement E>
float KeyDot(const typename KvRows<E>::T* key, const float* query, int64_t n) {
  constexpr int kLanes = Order<V>::kLanes, kStep = 4 * kLanes;
  const int64_t full = n & ~static_cast<int64_t>(kStep - 1);
  alignas(32) float lanes[kLanes];
#ifdef LLORCH_GGML_OPS_F16C
  constexpr int kRegs = kLanes / 8;  // __m256 per lane group
  __m256 acc[4][kRegs];
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
#pragma GCC unroll 2
    for (int g = 0; g < kRegs; ++g) acc[j][g] = _mm256_setzero_ps();
  }
  for (int64_t i = 0; i < full; i += kStep) {
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
#pragma GCC unroll 2
      for (int g = 0; g < kRegs; ++g) {
        const int64_t at = i + j * kLanes + 8 * g;
        acc[j][g] = _mm256_fmadd_ps(KvRows<E>::Load8(key + at), _mm256_loadu_ps(query + at),
                                    acc[j][g]);
      }
    }
  }
  __m256 folded[kRegs];
#pragma GCC unroll 2
  for (int g = 0; g < kRegs; ++g) {
    folded[g] = _mm256_add_ps(_mm256_add_ps(acc[0][g], acc[2][g]),
                              _mm256_add_ps(acc[1][g], acc[3][g]));
    _mm256_store_ps(lanes + 8 * g, folded[g]);
  }
  if constexpr (kLanes == 16) {
    // ReduceAdd16 in registers, the same additions: lanes i + (i + 8), then
    // + (i + 4), then (e0 + e2) + (e1 + e3).
    const __m256 quarter = _mm256_add_ps(folded[0], folded[kRegs - 1]);
    const __m128 eighth =
        _mm_add_ps(_mm256_castps256_ps128(quarter), _mm256_extractf128_ps(quarter, 1));
    const __m128 pairs = _mm_add_ps(eighth, _mm_movehl_ps(eighth, eighth));
    float sum = _mm_cvtss_f32(_mm_add_ss(pairs, _mm_movehdup_ps(pairs)));
    for (int64_t i = full; i < n; ++i) sum += KvRows<E>::At(key, i) * query[i];
    return sum;
  }
#else
  float acc[4][kLanes] = {};
  for (int64_t i = 0; i < full; i += kStep) {
    for (int j = 0; j < 4; ++j) {
      for (int l = 0; l < kLanes; ++l) {
        const int64_t at = i + j * kLanes + l;
        acc[j][l] = std::fma(KvRows<E>::At(key, at), query[at], acc[j][l]);
      }
    }
  }
  for (int l = 0; l < kLanes; ++l) {
    lanes[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
  }
#endif
  float sum = Order<V>::DotReduce(lanes);
  for (int64_t i = full; i < n; ++i) sum += KvRows<E>::At(key, i) * query[i];
  return sum;
}

template <GgmlVariant V>
void Swiglu(const float* gate, const float* up, int64_t n, float* out) {
  constexpr int kLanes = Order<V>::kLanes;
  const int64_t full = n & ~static_cast<int64_t>(kLanes - 1);
  int64_t i = 0;
#if defined(__AVX2__) && defined(__FMA__)
  for (; i < full; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 silu = _mm256_div_ps(
        g, _mm256_add_ps(_mm256_set1_ps(1.0f),
                         Order<V>::Exp8(_mm256_sub_ps(_mm256_setzero_ps(), g))));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
  }
#endif
  for (; i < full; ++i) {
    const float g = gate[i];
    out[i] = (g / (1.0f + Order<V>::Exp(0.0f - g))) * up[i];
  }
  for (; i < n; ++i) {  // ggml's scalar tail (ggml_silu_f32) uses expf
    const float g = gate[i];
    out[i] = (g / (1.0f + std::exp(-g))) * up[i];
  }
}

// The largest of x[0..n) (-inf for none): the maximum does not depend on
// the order it is taken in, so 8 lanes at a time (a scalar chain of maxss
// took a quarter of a long context's key scores).
float MaxOf(const float* x, int64_t n) {
  float max = -std::numeric_limits<float>::infinity();
  int64_t i = 0;
#if defined(__AVX2__)
  if (n >= 16) {
    __m256 m0 = _mm256_loadu_ps(x), m1 = _mm256_loadu_ps(x + 8);
    for (i = 16; i + 16 <= n; i += 16) {
      m0 = _mm256_max_ps(m0, _mm256_loadu_ps(x + i));
      m1 = _mm256_max_ps(m1, _mm256_loadu_ps(x + i + 8));
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, _mm256_max_ps(m0, m1));
    for (float lane : lanes) max = std::max(max, lane);
  }
#endif
  for (; i < n; ++i) max = std::max(max, x[i]);
  return max;
}

// Softmax of scratch[first..last] in place (ggml_vec_soft_max_f32 over a row
// whose other keys are masked to -inf, so contribute exact zeros): exp per
// key, each register-wide chunk of keys (aligned on absolute position 0)
// reduced as one register and summed in double, then scaled by 1 / sum.
// AttendRow's register-blocked loops and Softmax's 16-lane one (tests
// compare them with the scalar loops, which compute the same steps).
std::atomic<bool> register_paths{true};

#ifdef LLORCH_GGML_OPS_F16C
bool CpuHasAvx512F();

// ggml_v_expf of the AVX-512 library on 16 floats, as it computes them
// (ExpAvx512's steps; scalef rounds j * 2^n once).
__attribute__((target("avx512f"))) inline __m512 ExpAvx512x16(__m512 x) {
  const __m512 shifter = _mm512_set1_ps(0x1.8p23f);
  const __m512 z = _mm512_fmadd_ps(x, _mm512_set1_ps(0x1.715476p+0f), shifter);
  const __m512 n = _mm512_sub_ps(z, shifter);
  const __m512 b = _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.7f7d1cp-20f),
                                    _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.62e4p-1f), x));
  const __m512 u = _mm512_mul_ps(b, b);
  const __m512 j = _mm512_fmadd_ps(
      _mm512_fmadd_ps(
          _mm512_fmadd_ps(_mm512_set1_ps(0x1.0e4020p-7f), b, _mm512_set1_ps(0x1.573e2ep-5f)), u,
          _mm512_fmadd_ps(_mm512_set1_ps(0x1.555e66p-3f), b, _mm512_set1_ps(0x1.fffdb6p-2f))),
      u, _mm512_fmadd_ps(_mm512_set1_ps(0x1.ffffecp-1f), b, _mm512_set1_ps(1.0f)));
  const __m512 result = _mm512_scalef_ps(j, n);
  const __mmask16 large = _mm512_cmp_ps_mask(_mm512_abs_ps(n), _mm512_set1_ps(192.0f), _CMP_GT_OQ);
  if (large == 0) return result;
  const __m512 limit =
      _mm512_mask_blend_ps(_mm512_cmp_ps_mask(n, _mm512_setzero_ps(), _CMP_LE_OQ),
                           _mm512_set1_ps(std::numeric_limits<float>::infinity()),
                           _mm512_setzero_ps());
  return _mm512_mask_blend_ps(large, result, limit);
}

// Softmax<kAvx512>'s steps 16 keys at a time in one register: exp, the
// chunk's ReduceAdd16 in registers, the sum in double, then 1 / sum.
__attribute__((target("avx512f"))) void Softmax16(int64_t first, int64_t last, float max_score,
                                                  float* scratch) {
  double sum = 0.0;
  const __m512 max = _mm512_set1_ps(max_score);
  for (int64_t c = first / 16 * 16; c <= last; c += 16) {
    float* chunk = scratch + c;
    float lanes[16];
    if (c >= first && c + 15 <= last) {  // a whole chunk visible
      const __m512 e = ExpAvx512x16(_mm512_sub_ps(_mm512_loadu_ps(chunk), max));
      _mm512_storeu_ps(chunk, e);
      const __m256 quarter = _mm256_add_ps(  // lanes i + (i + 8)
          _mm512_castps512_ps256(e), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1)));
      const __m128 eighth =
          _mm_add_ps(_mm256_castps256_ps128(quarter), _mm256_extractf128_ps(quarter, 1));
      const __m128 pairs = _mm_add_ps(eighth, _mm_movehl_ps(eighth, eighth));
      sum += static_cast<double>(_mm_cvtss_f32(_mm_add_ss(pairs, _mm_movehdup_ps(pairs))));
      continue;
    }
    for (int l = 0; l < 16; ++l) {
      const int64_t j = c + l;
      lanes[l] = 0.0f;
      if (j < first || j > last) continue;
      chunk[l] = ExpAvx512(chunk[l] - max_score);
      lanes[l] = chunk[l];
    }
    sum += static_cast<double>(ReduceAdd16(lanes));
  }
  const __m512 inv_sum = _mm512_set1_ps(static_cast<float>(1.0 / sum));
  int64_t j = first;
  for (; j + 15 <= last; j += 16) {
    _mm512_storeu_ps(scratch + j, _mm512_mul_ps(_mm512_loadu_ps(scratch + j), inv_sum));
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (; j <= last; ++j) scratch[j] *= inv;
}
#endif

template <GgmlVariant V>
void Softmax(int64_t first, int64_t last, float max_score, float* scratch) {
  constexpr int kLanes = Order<V>::kLanes;
#ifdef LLORCH_GGML_OPS_F16C
  if (kLanes == 16 && CpuHasAvx512F() && register_paths.load(std::memory_order_relaxed)) {
    Softmax16(first, last, max_score, scratch);
    return;
  }
#endif
  double sum = 0.0;
  for (int64_t c = first / kLanes * kLanes; c <= last; c += kLanes) {
#if defined(__AVX2__) && defined(__FMA__)
    if (c >= first && c + kLanes - 1 <= last) {  // a whole chunk visible
      const __m256 max = _mm256_set1_ps(max_score);
      for (int h = 0; h < kLanes; h += 8) {
        _mm256_storeu_ps(scratch + c + h,
                         Order<V>::Exp8(_mm256_sub_ps(_mm256_loadu_ps(scratch + c + h), max)));
      }
      sum += static_cast<double>(Order<V>::SumReduce(scratch + c));
      continue;
    }
#endif
    float lanes[kLanes] = {};
    for (int l = 0; l < kLanes; ++l) {
      const int64_t j = c + l;
      if (j < first || j > last) continue;
      scratch[j] = Order<V>::Exp(scratch[j] - max_score);
      lanes[l] = scratch[j];
    }
    sum += static_cast<double>(Order<V>::SumReduce(lanes));
  }
  const float inv_sum = static_cast<float>(1.0 / sum);
  for (int64_t j = first; j <= last; ++j) scratch[j] *= inv_sum;
}

#ifdef LLORCH_GGML_OPS_F16C
// 16 elements of a cache row as floats (exactly: F16 by vcvtph2ps, BF16
// shifted into the high half).
template <KvElement E>
__attribute__((target("avx512f"), always_inline)) inline __m512 Load16(
    const typename KvRows<E>::T* v) {
  if constexpr (E == KvElement::kF32) {
    return _mm512_loadu_ps(v);
  } else if constexpr (E == KvElement::kF16) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v)));
  } else {
    const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
  }
}

// acc + p * (16 values from v), one fma.
template <KvElement E>
__attribute__((target("avx512f"), always_inline)) inline __m512 AddValue16(
    const typename KvRows<E>::T* v, float p, __m512 acc) {
  return _mm512_fmadd_ps(Load16<E>(v), _mm512_set1_ps(p), acc);
}

// The lanes i + (i + 8) of a 16-lane register: ReduceAdd16's first step.
__attribute__((target("avx512f"), always_inline)) inline __m256 FoldHalves(__m512 x) {
  return _mm256_add_ps(_mm512_castps512_ps256(x),
                       _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
}

// SumValues16 for rows r < count of one head (keys first[r]..last[r],
// probabilities at probs + r * probs_stride, lane sums into acc + r * 16 *
// head_dim). Keys in spans of about 32 KiB of values, every row and every
// 16 dimensions of a span before the next span: its rows stay in L1 (a
// whole head's values do not). Between spans a lane's sums wait in `acc`,
// stored and reloaded exactly: each row's sums are the steps it takes alone.
template <KvElement E, class RowFn>
__attribute__((target("avx512f"))) void SumValues16Rows(
    const typename KvRows<E>::T* values, const RowFn& row, int64_t head_dim, int count,
    const int64_t* first, const int64_t* last, const float* probs, int64_t probs_stride,
    float* acc) {
  const int64_t span = std::max<int64_t>(16, 32768 / (head_dim * int64_t{sizeof(float)}) / 16 * 16);
  int64_t lo = first[0], hi = last[0];
  for (int r = 0; r < count; ++r) lo = std::min(lo, first[r]), hi = std::max(hi, last[r]);
  for (int64_t s0 = lo / 16 * 16; s0 <= hi; s0 += span) {
    for (int r = 0; r < count; ++r) {
      const int64_t c_first = first[r] / 16 * 16;
      // Row r's chunks within this span; its first span zeroes its sums.
      const int64_t c0 = std::max(s0, c_first), c1 = std::min(last[r] + 1, s0 + span);
      if (c0 >= c1) continue;
      const float* p = probs + r * probs_stride;
      float* row_acc = acc + r * 16 * head_dim;
      for (int64_t d0 = 0; d0 < head_dim; d0 += 16) {
        __m512 lane_acc[16];
#pragma GCC unroll 16
        for (int l = 0; l < 16; ++l) {
          lane_acc[l] = c0 == c_first ? _mm512_setzero_ps()
                                      : _mm512_loadu_ps(row_acc + l * head_dim + d0);
        }
        for (int64_t c = c0; c < c1; c += 16) {
          if (c >= first[r] && c + 15 <= last[r]) {
#pragma GCC unroll 16
            for (int l = 0; l < 16; ++l) {
              lane_acc[l] = AddValue16<E>(values + row(c + l) + d0, p[c + l], lane_acc[l]);
            }
            continue;
          }
          for (int l = 0; l < 16; ++l) {
            if (c + l >= first[r] && c + l <= last[r]) {
              lane_acc[l] = AddValue16<E>(values + row(c + l) + d0, p[c + l], lane_acc[l]);
            }
          }
        }
#pragma GCC unroll 16
        for (int l = 0; l < 16; ++l) _mm512_storeu_ps(row_acc + l * head_dim + d0, lane_acc[l]);
      }
    }
  }
}

// The prompt order's value sums with 16 lanes (AVX-512 variants): lane l of
// dimension d takes the keys j = l (mod 16) in increasing j, one fma each,
// as the scalar loop in AttendRow; 16 dimensions of all 16 lanes stay in
// registers while the keys stream past (SumValues16Rows for one row). Call
// only where the CPU has AVX-512F.
template <KvElement E, class RowFn>
__attribute__((target("avx512f"))) void SumValues16(const typename KvRows<E>::T* values,
                                                    const RowFn& row, int64_t head_dim,
                                                    int64_t first, int64_t last,
                                                    const float* probs, float* acc) {
  SumValues16Rows<E>(values, row, head_dim, 1, &first, &last, probs, 0, acc);
}

// The same with 8 lanes (the AVX2 order's value sums, WeightedValues' 8-lane
// register loop): lane l of each row takes the keys j = l (mod 8) in
// increasing j, one fma each, 8 dimensions of all 8 lanes in registers.
template <KvElement E, class RowFn>
void SumValues8Rows(const typename KvRows<E>::T* values, const RowFn& row, int64_t head_dim,
                    int count, const int64_t* first, const int64_t* last, const float* probs,
                    int64_t probs_stride, float* acc) {
  const int64_t span = std::max<int64_t>(8, 32768 / (head_dim * int64_t{sizeof(float)}) / 8 * 8);  // L1
  int64_t lo = first[0], hi = last[0];
  for (int r = 0; r < count; ++r) lo = std::min(lo, first[r]), hi = std::max(hi, last[r]);
  for (int64_t s0 = lo / 8 * 8; s0 <= hi; s0 += span) {
    for (int r = 0; r < count; ++r) {
      const int64_t c_first = first[r] / 8 * 8;
      const int64_t c0 = std::max(s0, c_first), c1 = std::min(last[r] + 1, s0 + span);
      if (c0 >= c1) continue;
      const float* p = probs + r * probs_stride;
      float* row_acc = acc + r * 8 * head_dim;
      for (int64_t d0 = 0; d0 < head_dim; d0 += 8) {
        __m256 lane_acc[8];
#pragma GCC unroll 8
        for (int l = 0; l < 8; ++l) {
          lane_acc[l] = c0 == c_first ? _mm256_setzero_ps()
                                      : _mm256_loadu_ps(row_acc + l * head_dim + d0);
        }
        for (int64_t c = c0; c < c1; c += 8) {
#pragma GCC unroll 8
          for (int l = 0; l < 8; ++l) {
            const int64_t j = c + l;
            if (j < first[r] || j > last[r]) continue;
            lane_acc[l] = _mm256_fmadd_ps(KvRows<E>::Load8(values + row(j) + d0),
                                          _mm256_set1_ps(p[j]), lane_acc[l]);
          }
        }
#pragma GCC unroll 8
        for (int l = 0; l < 8; ++l) _mm256_storeu_ps(row_acc + l * head_dim + d0, lane_acc[l]);
      }
    }
  }
}

// The one-token order's value sums (ggml_vec_dot_f32 of each output
// dimension's values with the probabilities): accumulator a = (chain c, lane
// l) = c * kLanes + l takes the positions j = a (mod 4 * kLanes) in
// increasing j, one fma each; the chains are folded (0 + 2) + (1 + 3), the
// lanes reduced as DotReduce does. Each accumulator's 64 dimensions at a
// time stay in registers while its positions pass (8 independent chains),
// then the fold and the reduction run 8 dimensions at a time: the same
// additions. `acc`: 4 * kLanes * head_dim floats, every one written.
template <GgmlVariant V, KvElement E, class RowFn>
void OneTokenValues(const typename KvRows<E>::T* values, const RowFn& row, int64_t head_dim,
                    int64_t first, int64_t last, const float* probs, float* acc, float* out) {
  constexpr int kLanes = Order<V>::kLanes;
  constexpr int64_t kPeriod = 4 * kLanes;
  for (int64_t d0 = 0; d0 < head_dim; d0 += 64) {
    for (int64_t a = 0; a < kPeriod; ++a) {
      __m256 sums[8];
#pragma GCC unroll 8
      for (int q = 0; q < 8; ++q) sums[q] = _mm256_setzero_ps();
      int64_t j = first / kPeriod * kPeriod + a;
      if (j < first) j += kPeriod;
      for (; j <= last; j += kPeriod) {
        const __m256 p = _mm256_set1_ps(probs[j]);
        const typename KvRows<E>::T* v = values + row(j) + d0;
#pragma GCC unroll 8
        for (int q = 0; q < 8; ++q) {
          sums[q] = _mm256_fmadd_ps(KvRows<E>::Load8(v + 8 * q), p, sums[q]);
        }
      }
#pragma GCC unroll 8
      for (int q = 0; q < 8; ++q) _mm256_storeu_ps(acc + a * head_dim + d0 + 8 * q, sums[q]);
    }
  }
  const int64_t chain_size = kLanes * head_dim;
  for (int64_t d = 0; d < head_dim; d += 8) {
    // Lane l's chains, folded.
    const auto lane = [&](int l) {
      const float* at = acc + l * head_dim + d;
      return _mm256_add_ps(
          _mm256_add_ps(_mm256_loadu_ps(at), _mm256_loadu_ps(at + 2 * chain_size)),
          _mm256_add_ps(_mm256_loadu_ps(at + chain_size), _mm256_loadu_ps(at + 3 * chain_size)));
    };
    __m256 sum;
    if constexpr (kLanes == 16) {
      // ReduceAdd16: lanes i + (i + 8), then + (i + 4), then (e0 + e2) + (e1 + e3).
      __m256 e[4];
      for (int i = 0; i < 4; ++i) {
        e[i] = _mm256_add_ps(_mm256_add_ps(lane(i), lane(i + 8)),
                             _mm256_add_ps(lane(i + 4), lane(i + 12)));
      }
      sum = _mm256_add_ps(_mm256_add_ps(e[0], e[2]), _mm256_add_ps(e[1], e[3]));
    } else {
      // HaddReduce8: lanes i + (i + 4), then (t0 + t1) + (t2 + t3).
      __m256 t[4];
      for (int i = 0; i < 4; ++i) t[i] = _mm256_add_ps(lane(i), lane(i + 4));
      sum = _mm256_add_ps(_mm256_add_ps(t[0], t[1]), _mm256_add_ps(t[2], t[3]));
    }
    _mm256_storeu_ps(out + d, sum);
  }
}

// KeyDot's accumulators of one key, folded (0 + 2) + (1 + 3): 16 lanes,
// head_dim (a multiple of 64) summed in steps of 64.
template <KvElement E>
__attribute__((target("avx512f"), always_inline)) inline __m512 FoldedKeyDot16(
    const typename KvRows<E>::T* key, const float* query, int64_t n) {
  __m512 acc[4];
#pragma GCC unroll 4
  for (int a = 0; a < 4; ++a) acc[a] = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 64) {
#pragma GCC unroll 4
    for (int a = 0; a < 4; ++a) {
      acc[a] = _mm512_fmadd_ps(Load16<E>(key + i + 16 * a), _mm512_loadu_ps(query + i + 16 * a),
                               acc[a]);
    }
  }
  return _mm512_add_ps(_mm512_add_ps(acc[0], acc[2]), _mm512_add_ps(acc[1], acc[3]));
}

// ReduceAdd16 of 16 folded keys at once: lane k of the result is key k's
// lanes i + (i + 8), then + (i + 4), then (e0 + e2) + (e1 + e3), the same
// additions as one key's reduction, with the keys moved across registers
// instead of the lanes within one.
__attribute__((target("avx512f"), always_inline)) inline __m512 ReduceKeys16(const __m512* f) {
  // Keys e, e + 4, e + 8, e + 12 end in one register: lane 4 L + e of the
  // result is then key 4 L + e.
  __m512 quads[4];  // quads[e]: 128-bit lane L holds key e + 4 L's i + (i + 4), i < 4
#pragma GCC unroll 4
  for (int e = 0; e < 4; ++e) {
    __m512 halves[2];  // keys (e, e + 4), (e + 8, e + 12): lanes i + (i + 8), 8 each
#pragma GCC unroll 2
    for (int p = 0; p < 2; ++p) {
      const __m512 a = f[e + 8 * p], b = f[e + 4 + 8 * p];
      halves[p] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                                _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
    }
    quads[e] =
        _mm512_add_ps(_mm512_shuffle_f32x4(halves[0], halves[1], _MM_SHUFFLE(2, 0, 2, 0)),
                      _mm512_shuffle_f32x4(halves[0], halves[1], _MM_SHUFFLE(3, 1, 3, 1)));
  }
  // Transpose within 128-bit lanes: element i of every key in one register.
  const __m512 t0 = _mm512_unpacklo_ps(quads[0], quads[1]);
  const __m512 t1 = _mm512_unpackhi_ps(quads[0], quads[1]);
  const __m512 t2 = _mm512_unpacklo_ps(quads[2], quads[3]);
  const __m512 t3 = _mm512_unpackhi_ps(quads[2], quads[3]);
  const __m512 e0 = _mm512_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m512 e1 = _mm512_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m512 e2 = _mm512_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m512 e3 = _mm512_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  return _mm512_add_ps(_mm512_add_ps(e0, e2), _mm512_add_ps(e1, e3));
}

// Lanes l of chunk c (16 positions from c) within first..last.
__attribute__((target("avx512f"), always_inline)) inline __mmask16 ChunkMask(int64_t c,
                                                                             int64_t first,
                                                                             int64_t last) {
  const int64_t lo = std::max<int64_t>(first - c, 0), hi = std::min<int64_t>(last - c, 15);
  if (lo > hi) return 0;
  return static_cast<__mmask16>(((1u << (hi + 1)) - 1) & ~((1u << lo) - 1));
}

// SumValues16Rows' steps over transposed values (values_t: [blocks][head_dim]
// [16], GgmlPreparedKv): register lane l of dimension d is lane l's sum of
// dimension d there (keys j = l mod 16 in increasing j, one fma each), so a
// chunk of 16 keys costs one load of 16 probabilities per row and one fma
// per dimension, each value register shared by kRows rows (SumValues16Rows
// loads a value row and broadcasts a probability per fma). 8 dimensions of
// kRows <= 2 rows in registers over the chunks [c0, c1); row r's sums in
// acc[r] ([head_dim][16]), zeroed first where fresh[r].
// One chunk of SumValuesTransposedRows whose keys are not all visible to
// every row: the others' lanes masked (their sums unchanged).
template <int kRows, int kDims>
__attribute__((target("avx512f"), always_inline)) inline void MaskedValueChunk(
    const float* block, const float* const* probs, int64_t c, const int64_t* first,
    const int64_t* last, __m512 (*sums)[kDims]) {
  __mmask16 masks[kRows];
  __m512 p[kRows];
  for (int r = 0; r < kRows; ++r) {
    masks[r] = ChunkMask(c, first[r], last[r]);
    p[r] = _mm512_maskz_loadu_ps(masks[r], probs[r] + c);
  }
#pragma GCC unroll 16
  for (int i = 0; i < kDims; ++i) {
    const __m512 v = _mm512_loadu_ps(block + i * 16);
    for (int r = 0; r < kRows; ++r) {
      sums[r][i] = _mm512_mask3_fmadd_ps(v, p[r], sums[r][i], masks[r]);
    }
  }
}

// SumValues16Rows' steps over transposed values (values_t: [blocks][head_dim]
// [16], GgmlPreparedKv): register lane l of dimension d is lane l's sum of
// dimension d there (keys j = l mod 16 in increasing j, one fma each), so a
// chunk of 16 keys costs one load of 16 probabilities per row and one fma
// per dimension, each value register shared by kRows rows (SumValues16Rows
// loads a value row and broadcasts a probability per fma). kDims dimensions
// of kRows rows in registers over the chunks [c0, c1); row r's sums in
// acc[r] ([head_dim][16]), zeroed first where fresh[r].
template <int kRows, int kDims>
__attribute__((target("avx512f"))) void SumValuesTransposedRows(
    const float* values_t, int64_t head_dim, const int64_t* first, const int64_t* last,
    const float* const* probs, int64_t c0, int64_t c1, const bool* fresh, float* const* acc) {
  // Chunks [whole0, whole1) lie within every row's keys: no masks there.
  int64_t whole0 = c0, whole1 = c1;
  for (int r = 0; r < kRows; ++r) {
    whole0 = std::max(whole0, (first[r] + 15) / 16 * 16);
    whole1 = std::min(whole1, (last[r] + 1) / 16 * 16);
  }
  if (whole0 > whole1) whole0 = whole1 = c1;
  for (int64_t d0 = 0; d0 < head_dim; d0 += kDims) {
    __m512 sums[kRows][kDims];
    for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 16
      for (int i = 0; i < kDims; ++i) {
        sums[r][i] = fresh[r] ? _mm512_setzero_ps() : _mm512_loadu_ps(acc[r] + (d0 + i) * 16);
      }
    }
    // In increasing c (each lane's keys in order): masked, whole, masked.
    for (int64_t c = c0; c < whole0; c += 16) {
      MaskedValueChunk<kRows, kDims>(values_t + c * head_dim + d0 * 16, probs, c, first, last,
                                     sums);
    }
    for (int64_t c = whole0; c < whole1; c += 16) {
      const float* block = values_t + c * head_dim + d0 * 16;  // block c / 16, dimension d0
      __m512 p[kRows];
      for (int r = 0; r < kRows; ++r) p[r] = _mm512_loadu_ps(probs[r] + c);
#pragma GCC unroll 16
      for (int i = 0; i < kDims; ++i) {
        const __m512 v = _mm512_loadu_ps(block + i * 16);
        for (int r = 0; r < kRows; ++r) sums[r][i] = _mm512_fmadd_ps(v, p[r], sums[r][i]);
      }
    }
    for (int64_t c = whole1; c < c1; c += 16) {
      MaskedValueChunk<kRows, kDims>(values_t + c * head_dim + d0 * 16, probs, c, first, last,
                                     sums);
    }
    for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 16
      for (int i = 0; i < kDims; ++i) _mm512_storeu_ps(acc[r] + (d0 + i) * 16, sums[r][i]);
    }
  }
}

// The prompt's value sums over values transposed in blocks of kWidth
// positions, row group by row group: for each span of about span_bytes of
// values and each group of up to kGroup rows with keys in it,
// sum_rows(rows, first, last, probs, c0, c1, fresh, acc) over those rows
// (their chunks [c0, c1); a row's first span zeroes its sums, `fresh`;
// chunks of only some rows are masked out for the others). Row r's lane
// sums at acc + r * head_dim * kWidth. Four rows share each value register
// (two or eight were slower).
template <int kWidth, class SumRows>
void ForEachValueSpan(int64_t head_dim, int64_t span_bytes, int count, const int64_t* first,
                      const int64_t* last, const float* probs, int64_t probs_stride, float* acc,
                      const SumRows& sum_rows) {
  constexpr int kGroup = 4;
  const int64_t span = std::max<int64_t>(
      kWidth, span_bytes / (head_dim * int64_t{sizeof(float)}) / kWidth * kWidth);
  int64_t lo = first[0], hi = last[0];
  for (int r = 0; r < count; ++r) lo = std::min(lo, first[r]), hi = std::max(hi, last[r]);
  for (int64_t s0 = lo / kWidth * kWidth; s0 <= hi; s0 += span) {
    const int64_t s1 = s0 + span;
    for (int r0 = 0; r0 < count; r0 += kGroup) {
      int64_t first_of[kGroup], last_of[kGroup];
      bool fresh[kGroup];
      const float* row_probs[kGroup];
      float* row_acc[kGroup];
      int rows = 0;
      int64_t c0 = s1, c1 = s0;
      for (int r = r0; r < std::min(count, r0 + kGroup); ++r) {
        const int64_t c_first = first[r] / kWidth * kWidth;
        const int64_t r_c0 = std::max(s0, c_first), r_c1 = std::min(last[r] + 1, s1);
        if (r_c0 >= r_c1) continue;
        c0 = std::min(c0, r_c0), c1 = std::max(c1, r_c1);
        first_of[rows] = first[r], last_of[rows] = last[r];
        fresh[rows] = c_first >= s0;
        row_probs[rows] = probs + r * probs_stride;
        row_acc[rows] = acc + r * head_dim * kWidth;
        ++rows;
      }
      if (rows > 0) sum_rows(rows, first_of, last_of, row_probs, c0, c1, fresh, row_acc);
    }
  }
}

// GgmlAttendPromptRows' value sums and outputs for the 16-lane orders over
// transposed values: each row's lane sums as SumValues16Rows takes them
// (ForEachValueSpan, spans of 128 KiB: L2, fewer stores and reloads of the
// sums than 32 KiB), each dimension's 16 lanes then reduced by ReduceAdd16
// (ReduceKeys16, 16 dimensions at once). acc: count * head_dim * 16 floats.
__attribute__((target("avx512f"))) void PromptValuesTransposed(
    const float* values_t, int64_t head_dim, int count, const int64_t* first,
    const int64_t* last, const float* probs, int64_t probs_stride, float* acc, float* out,
    int64_t out_stride) {
  ForEachValueSpan<16>(
      head_dim, 131072, count, first, last, probs, probs_stride, acc,
      [&](int rows, const int64_t* first_of, const int64_t* last_of,
          const float* const* row_probs, int64_t c0, int64_t c1, const bool* fresh,
          float* const* row_acc) {
        switch (rows) {
          case 1:
            return SumValuesTransposedRows<1, 16>(values_t, head_dim, first_of, last_of,
                                                  row_probs, c0, c1, fresh, row_acc);
          case 2:
            return SumValuesTransposedRows<2, 8>(values_t, head_dim, first_of, last_of,
                                                 row_probs, c0, c1, fresh, row_acc);
          case 3:
            return SumValuesTransposedRows<3, 4>(values_t, head_dim, first_of, last_of,
                                                 row_probs, c0, c1, fresh, row_acc);
          default:
            return SumValuesTransposedRows<4, 4>(values_t, head_dim, first_of, last_of,
                                                 row_probs, c0, c1, fresh, row_acc);
        }
      });
  for (int r = 0; r < count; ++r) {
    const float* sums = acc + r * head_dim * 16;
    for (int64_t d = 0; d < head_dim; d += 16) {
      __m512 lanes[16];
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) lanes[i] = _mm512_loadu_ps(sums + (d + i) * 16);
      _mm512_storeu_ps(out + r * out_stride + d, ReduceKeys16(lanes));
    }
  }
}

// KeyDot's AVX-512 order with one 16-lane register per accumulator (the
// same fmas and additions as its two 8-lane halves), for kCount query heads
// that read the same keys (grouped-query attention). Head c's query is at
// query + c * n; for the keys first..last, scratch[c * scratch_stride + j] =
// dot * scale and max_scores[c] their largest. Keys 16 at a time where n is
// a multiple of 64 (reduced together by ReduceKeys16), else one by one.
template <KvElement E, int kCount, class RowFn>
__attribute__((target("avx512f"))) void KeyScores16(const typename KvRows<E>::T* keys,
                                                    const RowFn& row, const float* query,
                                                    int64_t n, int64_t first, int64_t last,
                                                    float scale, float* scratch,
                                                    int64_t scratch_stride, float* max_scores) {
  const int64_t full = n & ~int64_t{63};
  int64_t j = first;
  if (full == n) {
    // Several heads over a 16-bit cache: each run of 16 keys widened once
    // for all of them (exactly, as Load16 widens it).
    constexpr int64_t kMaxWidenedDim = 256;
    constexpr bool kWidenKeys = E != KvElement::kF32 && kCount > 1;
    alignas(64) float widened[kWidenKeys ? 16 * kMaxWidenedDim : 1];
    const bool widen = kWidenKeys && n <= kMaxWidenedDim;
    for (; j + 15 <= last; j += 16) {
      if (widen) {
        for (int k = 0; k < 16; ++k) {
          const typename KvRows<E>::T* key = keys + row(j + k);
          for (int64_t i = 0; i < n; i += 16) {
            _mm512_store_ps(widened + k * n + i, Load16<E>(key + i));
          }
        }
      }
      for (int c = 0; c < kCount; ++c) {
        __m512 folded[16];
#pragma GCC unroll 16
        for (int k = 0; k < 16; ++k) {
          folded[k] = widen ? FoldedKeyDot16<KvElement::kF32>(widened + k * n, query + c * n, n)
                            : FoldedKeyDot16<E>(keys + row(j + k), query + c * n, n);
        }
        _mm512_storeu_ps(scratch + c * scratch_stride + j,
                         _mm512_mul_ps(ReduceKeys16(folded), _mm512_set1_ps(scale)));
      }
    }
  }
  for (; j <= last; ++j) {
    const typename KvRows<E>::T* key = keys + row(j);
    for (int c = 0; c < kCount; ++c) {
      const __m256 quarter = FoldHalves(FoldedKeyDot16<E>(key, query + c * n, full));
      const __m128 eighth =
          _mm_add_ps(_mm256_castps256_ps128(quarter), _mm256_extractf128_ps(quarter, 1));
      const __m128 pairs = _mm_add_ps(eighth, _mm_movehl_ps(eighth, eighth));
      float sum = _mm_cvtss_f32(_mm_add_ss(pairs, _mm_movehdup_ps(pairs)));
      for (int64_t i = full; i < n; ++i) sum += KvRows<E>::At(key, i) * query[c * n + i];
      scratch[c * scratch_stride + j] = sum * scale;
    }
  }
  for (int c = 0; c < kCount; ++c) {
    max_scores[c] = MaxOf(scratch + c * scratch_stride + first, last - first + 1);
  }
}

// sums[c] += value * probs[c * probs_stride] (one fma) for kCount heads.
template <KvElement E, int kCount>
__attribute__((target("avx512f"), always_inline)) inline void AddValueRow16(
    const typename KvRows<E>::T* value_row, const float* probs, int64_t probs_stride,
    __m512* sums) {
  const __m512 value = Load16<E>(value_row);
  for (int c = 0; c < kCount; ++c) {
    sums[c] = _mm512_fmadd_ps(value, _mm512_set1_ps(probs[c * probs_stride]), sums[c]);
  }
}

// One lane of OneTokenValues' AVX-512 order for 16 dimensions of kCount
// heads: its four chains (positions j = lane + 16 g (mod 64), g < 4, each
// summed by fmas from zero in increasing j over first..last), folded (0 + 2)
// + (1 + 3). Head c's probabilities at probs + c * probs_stride.
template <KvElement E, int kCount, class RowFn>
__attribute__((target("avx512f"), always_inline)) inline void LaneOfChains16(
    const typename KvRows<E>::T* values, const RowFn& row, int64_t d, int64_t lane,
    int64_t first, int64_t last, const float* probs, int64_t probs_stride, __m512* folded) {
  __m512 chains[4][kCount];
#pragma GCC unroll 4
  for (int g = 0; g < 4; ++g) {
    for (int c = 0; c < kCount; ++c) chains[g][c] = _mm512_setzero_ps();
  }
  // At most kRegisterChainsMaxKeys keys: one or two periods, mostly partial.
  for (int64_t period = first / 64 * 64; period <= last; period += 64) {
#pragma GCC unroll 4
    for (int g = 0; g < 4; ++g) {
      const int64_t j = period + lane + 16 * g;
      if (j < first || j > last) continue;
      AddValueRow16<E, kCount>(values + row(j) + d, probs + j, probs_stride, chains[g]);
    }
  }
  for (int c = 0; c < kCount; ++c) {
    folded[c] = _mm512_add_ps(_mm512_add_ps(chains[0][c], chains[2][c]),
                              _mm512_add_ps(chains[1][c], chains[3][c]));
  }
}

// OneTokenValues' AVX-512 order (kLanes 16) with 16 dimensions per register
// (the same fmas, folds and reductions), for kCount heads that read the same
// values: head c's probabilities at probs + c * probs_stride, its output at
// out + c * head_dim. Each lane's chains are summed and folded in registers,
// lane after lane, into ReduceAdd16's tree: no 64 x head_dim accumulator to
// store and reload (most of a short context's cost).
template <KvElement E, int kCount, class RowFn>
__attribute__((target("avx512f"))) void OneTokenValues16InRegisters(
    const typename KvRows<E>::T* values, const RowFn& row, int64_t head_dim, int64_t first,
    int64_t last, const float* probs, int64_t probs_stride, float* out) {
  for (int64_t d = 0; d < head_dim; d += 16) {
    // ReduceAdd16: e[i] = (lane i + lane i + 8) + (lane i + 4 + lane i + 12),
    // out = (e0 + e2) + (e1 + e3).
    __m512 e[4][kCount];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      __m512 lanes[4][kCount];  // lanes i, i + 8, i + 4, i + 12
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
        LaneOfChains16<E, kCount>(values, row, d, i + 8 * (k % 2) + 4 * (k / 2), first, last,
                                  probs, probs_stride, lanes[k]);
      }
      for (int c = 0; c < kCount; ++c) {
        e[i][c] = _mm512_add_ps(_mm512_add_ps(lanes[0][c], lanes[1][c]),
                                _mm512_add_ps(lanes[2][c], lanes[3][c]));
      }
    }
    for (int c = 0; c < kCount; ++c) {
      _mm512_storeu_ps(out + c * head_dim + d,
                       _mm512_add_ps(_mm512_add_ps(e[0][c], e[2][c]),
                                     _mm512_add_ps(e[1][c], e[3][c])));
    }
  }
}

// OneTokenValues' AVX-512 order (kLanes 16) with 16 dimensions per register
// (the same fmas, folds and reductions, half the instructions), for kCount
// heads that read the same values, each value row loaded once for all of
// them: head c's probabilities at probs + c * probs_stride, its sums at acc
// + c * 64 * head_dim, its output at out + c * head_dim.
template <KvElement E, int kCount, class RowFn>
__attribute__((target("avx512f"))) void OneTokenValues16InMemory(
    const typename KvRows<E>::T* values, const RowFn& row, int64_t head_dim, int64_t first,
    int64_t last, const float* probs, int64_t probs_stride, float* acc, float* out) {
  constexpr int64_t kPeriod = 64;  // 4 chains of 16 lanes
  const int64_t head_acc = kPeriod * head_dim;
  for (int64_t d0 = 0; d0 < head_dim; d0 += 64) {
    for (int64_t a = 0; a < kPeriod; ++a) {
      __m512 sums[kCount][4];
      for (int c = 0; c < kCount; ++c) {
#pragma GCC unroll 4
        for (int q = 0; q < 4; ++q) sums[c][q] = _mm512_setzero_ps();
      }
      int64_t j = first / kPeriod * kPeriod + a;
      if (j < first) j += kPeriod;
      for (; j <= last; j += kPeriod) {
        const typename KvRows<E>::T* v = values + row(j) + d0;
#pragma GCC unroll 4
        for (int q = 0; q < 4; ++q) {
          const __m512 value = Load16<E>(v + 16 * q);
          for (int c = 0; c < kCount; ++c) {
            sums[c][q] =
                _mm512_fmadd_ps(value, _mm512_set1_ps(probs[c * probs_stride + j]), sums[c][q]);
          }
        }
      }
      for (int c = 0; c < kCount; ++c) {
#pragma GCC unroll 4
        for (int q = 0; q < 4; ++q) {
          _mm512_storeu_ps(acc + c * head_acc + a * head_dim + d0 + 16 * q, sums[c][q]);
        }
      }
    }
  }
  const int64_t chain_size = 16 * head_dim;
  for (int c = 0; c < kCount; ++c) {
    const float* head_sums = acc + c * head_acc;
    for (int64_t d = 0; d < head_dim; d += 16) {
      __m512 lane[16];  // lane l's chains, folded (0 + 2) + (1 + 3)
#pragma GCC unroll 16
      for (int l = 0; l < 16; ++l) {
        const float* at = head_sums + l * head_dim + d;
        lane[l] = _mm512_add_ps(
            _mm512_add_ps(_mm512_loadu_ps(at), _mm512_loadu_ps(at + 2 * chain_size)),
            _mm512_add_ps(_mm512_loadu_ps(at + chain_size),
                          _mm512_loadu_ps(at + 3 * chain_size)));
      }
      __m512 e[4];
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        e[i] = _mm512_add_ps(_mm512_add_ps(lane[i], lane[i + 8]),
                             _mm512_add_ps(lane[i + 4], lane[i + 12]));
      }
      _mm512_storeu_ps(out + c * head_dim + d,
                       _mm512_add_ps(_mm512_add_ps(e[0], e[2]), _mm512_add_ps(e[1], e[3])));
    }
  }
}

// OneTokenValues' AVX-512 order for kCount heads (the same bits either
// way): up to kRegisterChainsMaxKeys keys (each chain one key at most) with
// each lane's chains in registers; longer contexts, whose values come from
// beyond the L1, with the 64 accumulators in memory and each value row read
// once whole (the lanes' passes, 16 dimensions at a time, read every row four
// times: 8 jobs at 520 positions were 20% slower, at 110 positions 7%).
constexpr int64_t kRegisterChainsMaxKeys = 64;

template <KvElement E, int kCount, class RowFn>
void OneTokenValues16(const typename KvRows<E>::T* values, const RowFn& row, int64_t head_dim,
                      int64_t first, int64_t last, const float* probs, int64_t probs_stride,
                      float* out) {
  if (last - first + 1 <= kRegisterChainsMaxKeys) {
    OneTokenValues16InRegisters<E, kCount>(values, row, head_dim, first, last, probs,
                                           probs_stride, out);
    return;
  }
  thread_local std::vector<float> acc;  // [kCount, 64, head_dim], every element written
  acc.resize(static_cast<size_t>(kCount * 64 * head_dim));
  OneTokenValues16InMemory<E, kCount>(values, row, head_dim, first, last, probs, probs_stride,
                                      acc.data(), out);
}

// KeyDot's AVX2 order for one key (n a multiple of 32): its 4 accumulators
// of 8 lanes, folded (0 + 2) + (1 + 3).
template <KvElement E>
inline __m256 FoldedKeyDot8(const typename KvRows<E>::T* key, const float* query, int64_t n) {
  __m256 acc[4];
#pragma GCC unroll 4
  for (int a = 0; a < 4; ++a) acc[a] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n; i += 32) {
#pragma GCC unroll 4
    for (int a = 0; a < 4; ++a) {
      acc[a] = _mm256_fmadd_ps(KvRows<E>::Load8(key + i + 8 * a),
                               _mm256_loadu_ps(query + i + 8 * a), acc[a]);
    }
  }
  return _mm256_add_ps(_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3]));
}

// HaddReduce8 of 8 folded keys at once: lane k of the result is key k's
// lanes i + (i + 4), then (t0 + t1) + (t2 + t3), with the keys moved across
// registers instead of the lanes within one.
inline __m256 ReduceKeys8(const __m256* f) {
  __m256 halves[4];  // halves[e]: 128-bit lane L holds key e + 4 L's t0..t3
#pragma GCC unroll 4
  for (int e = 0; e < 4; ++e) {
    halves[e] = _mm256_add_ps(_mm256_permute2f128_ps(f[e], f[e + 4], 0x20),
                              _mm256_permute2f128_ps(f[e], f[e + 4], 0x31));
  }
  const __m256 u0 = _mm256_unpacklo_ps(halves[0], halves[1]);
  const __m256 u1 = _mm256_unpackhi_ps(halves[0], halves[1]);
  const __m256 u2 = _mm256_unpacklo_ps(halves[2], halves[3]);
  const __m256 u3 = _mm256_unpackhi_ps(halves[2], halves[3]);
  const __m256 t0 = _mm256_shuffle_ps(u0, u2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 t1 = _mm256_shuffle_ps(u0, u2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 t2 = _mm256_shuffle_ps(u1, u3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 t3 = _mm256_shuffle_ps(u1, u3, _MM_SHUFFLE(3, 2, 3, 2));
  return _mm256_add_ps(_mm256_add_ps(t0, t1), _mm256_add_ps(t2, t3));
}

// KeyDot's AVX2 order for the keys first..last (n a multiple of 32), 8 keys
// reduced together by ReduceKeys8, the rest one by one: scratch[j] = dot *
// scale; returns the largest.
template <KvElement E, class RowFn>
float KeyScores8(const typename KvRows<E>::T* keys, const RowFn& row, const float* query,
                 int64_t n, int64_t first, int64_t last, float scale, float* scratch) {
  int64_t j = first;
  for (; j + 7 <= last; j += 8) {
    __m256 folded[8];
#pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) folded[k] = FoldedKeyDot8<E>(keys + row(j + k), query, n);
    _mm256_storeu_ps(scratch + j, _mm256_mul_ps(ReduceKeys8(folded), _mm256_set1_ps(scale)));
  }
  for (; j <= last; ++j) {
    scratch[j] = KeyDot<GgmlVariant::kAvx2, E>(keys + row(j), query, n) * scale;
  }
  return MaxOf(scratch + first, last - first + 1);
}

bool CpuHasAvx512F() {
  static const bool has = CpuIsaAllowed(CpuIsa::kAvx512) && __builtin_cpu_supports("avx512f");
  return has;
}
#endif


// Softmax of the scores in scratch[first..last], then out = the
// probability-weighted sum of the value rows (row(j): position j's row).
template <GgmlVariant V, KvElement E, class RowFn>
void WeightedValues(const typename KvRows<E>::T* values, const RowFn& row, int64_t head_dim,
                    int64_t first, int64_t last, float max_score, bool one_token_order,
                    float* scratch, float* out) {
  constexpr int kLanes = Order<V>::kLanes;
  Softmax<V>(first, last, max_score, scratch);
  // Output: per dimension, lane l accumulates the positions p = l (mod
  // kLanes): one chain (tinyBLAS), or four chains by (p / kLanes) mod 4
  // folded as ggml_vec_dot_f32 folds them (one-token step).
  const int chains = one_token_order ? 4 : 1;
  const int64_t chain_size = kLanes * head_dim;
  thread_local std::vector<float> acc;  // [chains, kLanes, head_dim]
#ifdef LLORCH_GGML_OPS_F16C
  const bool blocked = register_paths.load(std::memory_order_relaxed);
  if (blocked && one_token_order && head_dim % 64 == 0) {
    if (kLanes == 16 && CpuHasAvx512F()) {
      OneTokenValues16<E, 1>(values, row, head_dim, first, last, scratch, 0, out);
    } else {
      acc.resize(chains * chain_size);  // every element written
      OneTokenValues<V, E>(values, row, head_dim, first, last, scratch, acc.data(), out);
    }
    return;
  }
#endif
  acc.assign(chains * chain_size, 0.0f);
  thread_local std::vector<float> widened;  // a 16-bit value row as floats
#ifdef LLORCH_GGML_OPS_F16C
  if (blocked && kLanes == 8 && chains == 1 && head_dim % 8 == 0) {
    // The loop below with 8 dimensions of all 8 lanes held in registers
    // while the keys stream past: each (lane, dimension) still takes its keys
    // in increasing j, one fma each, so the same bits without a load and a
    // store of the accumulator per key.
    SumValues8Rows<E>(values, row, head_dim, 1, &first, &last, scratch, 0, acc.data());
  } else if (blocked && kLanes == 16 && chains == 1 && head_dim % 16 == 0 &&
             CpuHasAvx512F()) {
    SumValues16<E>(values, row, head_dim, first, last, scratch, acc.data());
  } else
#endif
  for (int64_t j = first; j <= last; ++j) {
    const float p = scratch[j];
    const float* v = WidenedRow<E>(values + row(j), head_dim, &widened);  // [head_dim]
    float* lane = acc.data() + ((j / kLanes) % chains) * chain_size + (j % kLanes) * head_dim;
    for (int64_t d = 0; d < head_dim; ++d) lane[d] = std::fma(v[d], p, lane[d]);
  }
  if (chains == 4) {
    for (int64_t i = 0; i < chain_size; ++i) {
      acc[i] += acc[2 * chain_size + i];
      acc[chain_size + i] += acc[3 * chain_size + i];
    }
    for (int64_t i = 0; i < chain_size; ++i) acc[i] += acc[chain_size + i];
  }
  float lanes[kLanes];
  for (int64_t d = 0; d < head_dim; ++d) {
    for (int l = 0; l < kLanes; ++l) lanes[l] = acc[l * head_dim + d];
    out[d] = one_token_order ? Order<V>::DotReduce(lanes) : Order<V>::SumReduce(lanes);
  }
}

template <GgmlVariant V, KvElement E>
void AttendRow(const float* query, const typename KvRows<E>::T* keys,
               const typename KvRows<E>::T* values, int64_t head_dim, int64_t first,
               int64_t last, float scale, bool one_token_order, float* scratch, float* out,
               const int32_t* block_table, int64_t block_size) {
  const CacheRows row{block_table, block_size, head_dim};
  // Scores of the visible keys; the rest count as -inf (probability 0).
  float max_score = -std::numeric_limits<float>::infinity();
#ifdef LLORCH_GGML_OPS_F16C
  if (Order<V>::kLanes == 16 && CpuHasAvx512F() &&
      register_paths.load(std::memory_order_relaxed)) {
    KeyScores16<E, 1>(keys, row, query, head_dim, first, last, scale, scratch, 0, &max_score);
  } else if (Order<V>::kLanes == 8 && head_dim % 32 == 0 &&
             register_paths.load(std::memory_order_relaxed)) {
    max_score = KeyScores8<E>(keys, row, query, head_dim, first, last, scale, scratch);
  } else
#endif
  for (int64_t j = first; j <= last; ++j) {
    scratch[j] = KeyDot<V, E>(keys + row(j), query, head_dim) * scale;
    max_score = std::max(max_score, scratch[j]);
  }
  WeightedValues<V, E>(values, row, head_dim, first, last, max_score, one_token_order, scratch,
                       out);
}

#ifdef LLORCH_GGML_OPS_F16C
// A one-token step of kCount heads that read the same keys and values:
// KeyScores16 and OneTokenValues16 over them together, each head's softmax
// between (WeightedValues' steps, so each head's bits are AttendRow's).
template <KvElement E, int kCount, class RowFn>
void OneTokenHeads16(const float* query, const typename KvRows<E>::T* keys,
                     const typename KvRows<E>::T* values, const RowFn& row, int64_t head_dim,
                     int64_t first, int64_t last, float scale, float* scratch,
                     int64_t scratch_stride, float* out) {
  float max_scores[kCount];
  KeyScores16<E, kCount>(keys, row, query, head_dim, first, last, scale, scratch, scratch_stride,
                         max_scores);
  for (int c = 0; c < kCount; ++c) {
    Softmax<GgmlVariant::kAvx512>(first, last, max_scores[c], scratch + c * scratch_stride);
  }
  OneTokenValues16<E, kCount>(values, row, head_dim, first, last, scratch, scratch_stride, out);
}
#endif

// AttendRow for `count` query heads that read the same keys and values
// (grouped-query attention): query, scratch and out of head c at c *
// head_dim, c * scratch_stride, c * head_dim. Each head's bits are
// AttendRow's; on the AVX-512 one-token path the key and value rows are
// loaded once for up to 4 heads.
template <GgmlVariant V, KvElement E>
void AttendHeads(const float* query, int count, const typename KvRows<E>::T* keys,
                 const typename KvRows<E>::T* values, int64_t head_dim, int64_t first,
                 int64_t last, float scale, bool one_token_order, float* scratch,
                 int64_t scratch_stride, float* out, const int32_t* block_table,
                 int64_t block_size) {
#ifdef LLORCH_GGML_OPS_F16C
  if (Order<V>::kLanes == 16 && one_token_order && head_dim % 64 == 0 && CpuHasAvx512F() &&
      register_paths.load(std::memory_order_relaxed)) {
    const CacheRows row{block_table, block_size, head_dim};
    for (int c = 0; c < count; c += 4) {
      const float* q = query + c * head_dim;
      float* s = scratch + c * scratch_stride;
      float* o = out + c * head_dim;
      switch (std::min(4, count - c)) {
        case 4:
          OneTokenHeads16<E, 4>(q, keys, values, row, head_dim, first, last, scale, s,
                                scratch_stride, o);
          break;
        case 3:
          OneTokenHeads16<E, 3>(q, keys, values, row, head_dim, first, last, scale, s,
                                scratch_stride, o);
          break;
        case 2:
          OneTokenHeads16<E, 2>(q, keys, values, row, head_dim, first, last, scale, s,
                                scratch_stride, o);
          break;
        default:
          OneTokenHeads16<E, 1>(q, keys, values, row, head_dim, first, last, scale, s,
                                scratch_stride, o);
          break;
      }
    }
    return;
  }
#endif
  for (int c = 0; c < count; ++c) {
    AttendRow<V, E>(query + c * head_dim, keys, values, head_dim, first, last, scale,
                    one_token_order, scratch + c * scratch_stride, out + c * head_dim,
                    block_table, block_size);
  }
}

#ifdef LLORCH_GGML_OPS_F16C
// The prepared scores (prepared_scores.h) with 8 keys per AVX2 register.
struct Keys8 {
  using Vec = __m256;
  static constexpr int kWidth = 8;
  static Vec Zero() { return _mm256_setzero_ps(); }
  static Vec Load(const float* p) { return _mm256_loadu_ps(p); }
  static Vec Set1(float x) { return _mm256_set1_ps(x); }
  static Vec Add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
  static Vec Mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
  static Vec Fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
  static void Store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
};
// The AVX2 order's prompt attention over a width-8 prepared head (CPUs
// without AVX-512): KeyDot's 8-lane scores (HaddReduce8) one row of a block
// of 8 keys at a time, and the value sums (lane l: keys j = l mod 8, Hsum8)
// over transposed values, as the AVX-512 path above does with 16.

// Lanes l of the 8 positions from c within first..last, as an AVX2 mask.
inline __m256i LaneMask8(int64_t c, int64_t first, int64_t last) {
  const __m256i at = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(c)),
                                      _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  const __m256i from = _mm256_set1_epi32(static_cast<int32_t>(first - 1));
  const __m256i to = _mm256_set1_epi32(static_cast<int32_t>(last + 1));
  return _mm256_and_si256(_mm256_cmpgt_epi32(at, from), _mm256_cmpgt_epi32(to, at));
}

// KeyDot's AVX2 accumulator fold for lane l of 8 keys (their 4 chains over
// dimensions (4 i + j) * 8 + l, fmas from zero), (0 + 2) + (1 + 3). `after`:
// the sums computed before (compiled after them, not hoisted: see
// prepared_scores_avx512.cc's FoldedLanes).
template <int kSteps>
inline __m256 FoldedLane8(const float* block, const float* query, int l, __m256 after) {
  asm("" : "+r"(query) : "x"(after));
  __m256 acc[4];
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) acc[j] = _mm256_setzero_ps();
#pragma GCC unroll 8
  for (int i = 0; i < kSteps; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const int d = (4 * i + j) * 8 + l;
      acc[j] = _mm256_fmadd_ps(_mm256_loadu_ps(block + d * 8), _mm256_set1_ps(query[d]), acc[j]);
    }
  }
  return _mm256_add_ps(_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3]));
}

// HaddReduce8 of 8 keys' folded lanes, depth first: t_i = F_i + F_(i + 4),
// then (t0 + t1) + (t2 + t3).
template <int kSteps>
inline __m256 BlockSums8(const float* block, const float* query) {
  __m256 f = FoldedLane8<kSteps>(block, query, 0, _mm256_setzero_ps());
  __m256 t0 = _mm256_add_ps(f, FoldedLane8<kSteps>(block, query, 4, f));
  f = FoldedLane8<kSteps>(block, query, 1, t0);
  const __m256 x = _mm256_add_ps(t0, _mm256_add_ps(f, FoldedLane8<kSteps>(block, query, 5, f)));
  f = FoldedLane8<kSteps>(block, query, 2, x);
  const __m256 t2 = _mm256_add_ps(f, FoldedLane8<kSteps>(block, query, 6, f));
  f = FoldedLane8<kSteps>(block, query, 3, t2);
  const __m256 y = _mm256_add_ps(t2, _mm256_add_ps(f, FoldedLane8<kSteps>(block, query, 7, f)));
  return _mm256_add_ps(x, y);
}

// prepared_scores::Scores<Keys8, 8>'s results (scores and each row's
// maximum; lanes' maxima skip a NaN as the scalar chain does).
template <int kSteps>
void Scores8(const float* keys_t, const float* queries, int64_t query_stride, int count,
             const int64_t* first, const int64_t* last, int64_t head_dim, float scale,
             float* scratch, int64_t scratch_stride, float* max_scores) {
  int64_t lo = first[0], hi = last[0];
  for (int r = 0; r < count; ++r) lo = std::min(lo, first[r]), hi = std::max(hi, last[r]);
  // Row r's 8 lanes of maxima at maxima + 8 r (reused from call to call).
  thread_local std::vector<float> maxima;
  maxima.assign(static_cast<size_t>(count) * 8, -std::numeric_limits<float>::infinity());
  const __m256 scale_vec = _mm256_set1_ps(scale);
  for (int64_t b = lo / 8; 8 * b <= hi; ++b) {
    const float* block = keys_t + b * head_dim * 8;
    for (int r = 0; r < count; ++r) {
      if (8 * b > last[r] || 8 * b + 7 < first[r]) continue;
      const __m256 scores =
          _mm256_mul_ps(BlockSums8<kSteps>(block, queries + r * query_stride), scale_vec);
      float* at = scratch + r * scratch_stride + 8 * b;
      float* row_maxima = maxima.data() + 8 * r;
      const __m256 row_max = _mm256_loadu_ps(row_maxima);
      if (8 * b >= first[r] && 8 * b + 7 <= last[r]) {
        _mm256_storeu_ps(at, scores);
        _mm256_storeu_ps(row_maxima, _mm256_max_ps(scores, row_max));
        continue;
      }
      const __m256i mask = LaneMask8(8 * b, first[r], last[r]);
      _mm256_maskstore_ps(at, mask, scores);
      _mm256_storeu_ps(row_maxima, _mm256_blendv_ps(row_max, _mm256_max_ps(scores, row_max),
                                                    _mm256_castsi256_ps(mask)));
    }
  }
  for (int r = 0; r < count; ++r) {
    const float* lanes = maxima.data() + 8 * r;
    float max = lanes[0];
    for (int l = 1; l < 8; ++l) max = std::max(max, lanes[l]);
    max_scores[r] = max;
  }
}

// One chunk of SumValuesTransposedRows8 not wholly visible to every row: a
// lane outside a row's keys keeps its sum (blended back; its probability is
// not read).
template <int kRows, int kDims>
__attribute__((always_inline)) inline void MaskedValueChunk8(const float* block,
                                                             const float* const* probs, int64_t c,
                                                             const int64_t* first,
                                                             const int64_t* last,
                                                             __m256 (*sums)[kDims]) {
  for (int r = 0; r < kRows; ++r) {
    const __m256i mask = LaneMask8(c, first[r], last[r]);
    const __m256 p = _mm256_maskload_ps(probs[r] + c, mask);
    for (int i = 0; i < kDims; ++i) {
      sums[r][i] = _mm256_blendv_ps(
          sums[r][i], _mm256_fmadd_ps(_mm256_loadu_ps(block + i * 8), p, sums[r][i]),
          _mm256_castsi256_ps(mask));
    }
  }
}

// SumValues8Rows' steps over transposed values (values_t [blocks][head_dim]
// [8]): kDims dimensions of kRows rows in registers over the chunks [c0,
// c1), each value register shared by the rows; row r's lane sums in acc[r]
// ([head_dim][8]), zeroed first where fresh[r].
template <int kRows, int kDims>
void SumValuesTransposedRows8(const float* values_t, int64_t head_dim, const int64_t* first,
                              const int64_t* last, const float* const* probs, int64_t c0,
                              int64_t c1, const bool* fresh, float* const* acc) {
  int64_t whole0 = c0, whole1 = c1;
  for (int r = 0; r < kRows; ++r) {
    whole0 = std::max(whole0, (first[r] + 7) / 8 * 8);
    whole1 = std::min(whole1, (last[r] + 1) / 8 * 8);
  }
  if (whole0 > whole1) whole0 = whole1 = c1;
  for (int64_t d0 = 0; d0 < head_dim; d0 += kDims) {
    __m256 sums[kRows][kDims];
    for (int r = 0; r < kRows; ++r) {
      for (int i = 0; i < kDims; ++i) {
        sums[r][i] = fresh[r] ? _mm256_setzero_ps() : _mm256_loadu_ps(acc[r] + (d0 + i) * 8);
      }
    }
    // In increasing c: masked chunks, whole ones, masked ones.
    for (int64_t c = c0; c < whole0; c += 8) {
      MaskedValueChunk8<kRows, kDims>(values_t + c * head_dim + d0 * 8, probs, c, first, last,
                                      sums);
    }
    for (int64_t c = whole0; c < whole1; c += 8) {
      const float* block = values_t + c * head_dim + d0 * 8;  // block c / 8, dimension d0
      __m256 p[kRows];
      for (int r = 0; r < kRows; ++r) p[r] = _mm256_loadu_ps(probs[r] + c);
#pragma GCC unroll 8
      for (int i = 0; i < kDims; ++i) {
        const __m256 v = _mm256_loadu_ps(block + i * 8);
        for (int r = 0; r < kRows; ++r) sums[r][i] = _mm256_fmadd_ps(v, p[r], sums[r][i]);
      }
    }
    for (int64_t c = whole1; c < c1; c += 8) {
      MaskedValueChunk8<kRows, kDims>(values_t + c * head_dim + d0 * 8, probs, c, first, last,
                                      sums);
    }
    for (int r = 0; r < kRows; ++r) {
      for (int i = 0; i < kDims; ++i) _mm256_storeu_ps(acc[r] + (d0 + i) * 8, sums[r][i]);
    }
  }
}

// GgmlAttendPromptRows' value sums and outputs for the AVX2 order over
// transposed width-8 values (ForEachValueSpan with 32 KiB spans, each
// dimension's lanes reduced by Hsum8).
void PromptValuesTransposed8(const float* values_t, int64_t head_dim, int count,
                             const int64_t* first, const int64_t* last, const float* probs,
                             int64_t probs_stride, float* acc, float* out, int64_t out_stride) {
  ForEachValueSpan<8>(
      head_dim, 32768, count, first, last, probs, probs_stride, acc,
      [&](int rows, const int64_t* first_of, const int64_t* last_of,
          const float* const* row_probs, int64_t c0, int64_t c1, const bool* fresh,
          float* const* row_acc) {
        switch (rows) {
          case 1:
            return SumValuesTransposedRows8<1, 8>(values_t, head_dim, first_of, last_of,
                                                  row_probs, c0, c1, fresh, row_acc);
          case 2:
            return SumValuesTransposedRows8<2, 4>(values_t, head_dim, first_of, last_of,
                                                  row_probs, c0, c1, fresh, row_acc);
          case 3:
            return SumValuesTransposedRows8<3, 2>(values_t, head_dim, first_of, last_of,
                                                  row_probs, c0, c1, fresh, row_acc);
          default:
            return SumValuesTransposedRows8<4, 2>(values_t, head_dim, first_of, last_of,
                                                  row_probs, c0, c1, fresh, row_acc);
        }
      });
  for (int r = 0; r < count; ++r) {
    const float* sums = acc + r * head_dim * 8;
    for (int64_t d = 0; d < head_dim; ++d) out[r * out_stride + d] = Hsum8(sums + d * 8);
  }
}

#endif  // LLORCH_GGML_OPS_F16C

}  // namespace

const char* GgmlVariantName(GgmlVariant variant) {
  switch (variant) {
    case GgmlVariant::kAvx512: return "avx512";
    case GgmlVariant::kAmx: return "amx";
    default: return "avx2";
  }
}

absl::StatusOr<GgmlVariant> ParseGgmlVariant(absl::string_view name) {
  if (name == "avx2") return GgmlVariant::kAvx2;
  if (name == "avx512") return GgmlVariant::kAvx512;
  if (name == "amx") return GgmlVariant::kAmx;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown ggml CPU variant '", name, "' (avx2, avx512 or amx)"));
}

GgmlVariant DetectGgmlVariant() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (CpuIsaAllowed(CpuIsa::kAvx512) && __builtin_cpu_supports("avx2") &&
      __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512bw")) {
    return amx_kernels::TilesSupported() ? GgmlVariant::kAmx : GgmlVariant::kAvx512;
  }
#endif
  return GgmlVariant::kAvx2;
}

absl::StatusOr<GgmlVariant> GgmlVariantFromEnvironment(std::string* source) {
  const char* forced = std::getenv("LLORCH_GGML_VARIANT");
  if (forced != nullptr && *forced != '\0') {
    absl::StatusOr<GgmlVariant> variant = ParseGgmlVariant(forced);
    if (!variant.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("LLORCH_GGML_VARIANT: ", variant.status().message()));
    }
    if (source != nullptr) *source = "LLORCH_GGML_VARIANT";
    return variant;
  }
  if (source != nullptr) *source = "detected";
  return DetectGgmlVariant();
}

absl::StatusOr<CpuIsa> MaxCpuIsaFromEnvironment() {
  const char* value = std::getenv("LLORCH_MAX_CPU_ISA");
  CpuIsa isa = CpuIsa::kAmx;
  if (value != nullptr && *value != '\0' && !ParseCpuIsa(value, &isa)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LLORCH_MAX_CPU_ISA: unknown instruction set '", value, "' (avx2, avx512 or amx)"));
  }
  return isa;
}

CpuIsa CpuKernelIsa() {
  if (amx_kernels::TilesSupported()) return CpuIsa::kAmx;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (CpuIsaAllowed(CpuIsa::kAvx512) && __builtin_cpu_supports("avx512f")) {
    return CpuIsa::kAvx512;
  }
#endif
  return CpuIsa::kAvx2;
}

void GgmlRmsNorm(const float* x, int64_t rows, int64_t dim, float eps, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * dim;  // [dim]
    double sum = 0.0;
    for (int64_t i = 0; i < dim; ++i) sum += static_cast<double>(row[i] * row[i]);
    const float mean = static_cast<float>(sum / static_cast<double>(dim));
    const float scale = 1.0f / std::sqrt(mean + eps);
    for (int64_t i = 0; i < dim; ++i) out[r * dim + i] = row[i] * scale;
  }
}

void GgmlRopeHead(const float* x, const float* cos, const float* sin, int64_t num_pairs,
                  bool adjacent, int64_t head_dim, float* out) {
  for (int64_t i = 0; i < num_pairs; ++i) {
    const int64_t i0 = adjacent ? 2 * i : i, i1 = adjacent ? 2 * i + 1 : i + num_pairs;
    const float x0 = x[i0], x1 = x[i1], c = cos[i], s = sin[i];
    out[i0] = std::fma(x0, c, -(x1 * s));
    out[i1] = std::fma(x0, s, x1 * c);
  }
  for (int64_t i = 2 * num_pairs; i < head_dim; ++i) out[i] = x[i];
}

float GgmlExpf(float x, GgmlVariant variant) {
  return variant != GgmlVariant::kAvx2 ? ExpAvx512(x) : ExpAvx2(x);
}

void GgmlSwiglu(const float* gate, const float* up, int64_t n, GgmlVariant variant, float* out) {
  if (variant != GgmlVariant::kAvx2) {
    Swiglu<GgmlVariant::kAvx512>(gate, up, n, out);
  } else {
    Swiglu<GgmlVariant::kAvx2>(gate, up, n, out);
  }
}

namespace {

template <KvElement E>
void AttendRowOf(const float* query, const void* keys, const void* values, int64_t head_dim,
                 int64_t first, int64_t last, float scale, bool one_token_order,
                 GgmlVariant variant, float* scratch, float* out, const int32_t* block_table,
                 int64_t block_size) {
  using T = typename KvRows<E>::T;
  const auto* k = static_cast<const T*>(keys);
  const auto* v = static_cast<const T*>(values);
  if (variant != GgmlVariant::kAvx2) {
    AttendRow<GgmlVariant::kAvx512, E>(query, k, v, head_dim, first, last, scale,
                                       one_token_order, scratch, out, block_table, block_size);
  } else {
    AttendRow<GgmlVariant::kAvx2, E>(query, k, v, head_dim, first, last, scale, one_token_order,
                                     scratch, out, block_table, block_size);
  }
}

template <KvElement E>
void AttendHeadsOf(const float* query, int count, const void* keys, const void* values,
                   int64_t head_dim, int64_t first, int64_t last, float scale,
                   bool one_token_order, GgmlVariant variant, float* scratch,
                   int64_t scratch_stride, float* out, const int32_t* block_table,
                   int64_t block_size) {
  using T = typename KvRows<E>::T;
  const auto* k = static_cast<const T*>(keys);
  const auto* v = static_cast<const T*>(values);
  if (variant != GgmlVariant::kAvx2) {
    AttendHeads<GgmlVariant::kAvx512, E>(query, count, k, v, head_dim, first, last, scale,
                                         one_token_order, scratch, scratch_stride, out,
                                         block_table, block_size);
  } else {
    AttendHeads<GgmlVariant::kAvx2, E>(query, count, k, v, head_dim, first, last, scale,
                                       one_token_order, scratch, scratch_stride, out,
                                       block_table, block_size);
  }
}

}  // namespace

void GgmlAttendRow(const float* query, const void* keys, const void* values, KvElement element,
                   int64_t head_dim, int64_t first, int64_t last, float scale,
                   bool one_token_order, GgmlVariant variant, float* scratch, float* out,
                   const int32_t* block_table, int64_t block_size) {
  switch (element) {
    case KvElement::kF16:
      AttendRowOf<KvElement::kF16>(query, keys, values, head_dim, first, last, scale,
                                   one_token_order, variant, scratch, out, block_table, block_size);
      break;
    case KvElement::kBF16:
      AttendRowOf<KvElement::kBF16>(query, keys, values, head_dim, first, last, scale,
                                    one_token_order, variant, scratch, out, block_table,
                                    block_size);
      break;
    default:
      AttendRowOf<KvElement::kF32>(query, keys, values, head_dim, first, last, scale,
                                   one_token_order, variant, scratch, out, block_table, block_size);
      break;
  }
}

void GgmlAttendHeads(const float* query, int count, const void* keys, const void* values,
                     KvElement element, int64_t head_dim, int64_t first, int64_t last,
                     float scale, bool one_token_order, GgmlVariant variant, float* scratch,
                     int64_t scratch_stride, float* out, const int32_t* block_table,
                     int64_t block_size) {
  switch (element) {
    case KvElement::kF16:
      AttendHeadsOf<KvElement::kF16>(query, count, keys, values, head_dim, first, last, scale,
                                     one_token_order, variant, scratch, scratch_stride, out,
                                     block_table, block_size);
      break;
    case KvElement::kBF16:
      AttendHeadsOf<KvElement::kBF16>(query, count, keys, values, head_dim, first, last, scale,
                                      one_token_order, variant, scratch, scratch_stride, out,
                                      block_table, block_size);
      break;
    default:
      AttendHeadsOf<KvElement::kF32>(query, count, keys, values, head_dim, first, last, scale,
                                     one_token_order, variant, scratch, scratch_stride, out,
                                     block_table, block_size);
      break;
  }
}

void GgmlAttendRow(const float* query, const float* keys, const float* values, int64_t head_dim,
                   int64_t first, int64_t last, float scale, bool one_token_order,
                   GgmlVariant variant, float* scratch, float* out,
                   const int32_t* block_table, int64_t block_size) {
  GgmlAttendRow(query, keys, values, KvElement::kF32, head_dim, first, last, scale,
                one_token_order, variant, scratch, out, block_table, block_size);
}

bool GgmlPreparedAttentionSupports(int64_t head_dim) {
#ifdef LLORCH_GGML_OPS_F16C
  return head_dim > 0 && head_dim % 64 == 0;
#else
  (void)head_dim;
  return false;
#endif
}

void GgmlPrepareKv(const void* keys, const void* values, KvElement element, int64_t head_dim,
                   int64_t positions, const int32_t* block_table, int64_t block_size,
                   GgmlPreparedKv* out, int width, GgmlVariant variant) {
  if (width == 0) width = prepared_scores_avx512::Supported() ? 16 : 8;
  if (!GgmlPreparedAttentionSupports(head_dim) || (width != 8 && width != 16) ||
      (width == 16 && !prepared_scores_avx512::Supported())) {
    std::abort();
  }
  const size_t element_bytes = element == KvElement::kF32 ? 4 : 2;
  const CacheRows row{block_table, block_size, head_dim};
  const auto widen = [&](const void* base, int64_t j, float* to) {
    const auto* from = static_cast<const uint8_t*>(base) + row(j) * element_bytes;
    if (element == KvElement::kF32) {
      std::memcpy(to, from, head_dim * sizeof(float));
    } else {
      WidenRowToFloat(element == KvElement::kF16 ? GgmlType::kF16 : GgmlType::kBF16, from,
                      head_dim, to);
    }
  };
  // Transposed values for the 16-lane orders' register loops (where the
  // scalar loop is asked for, tests, the rows it reads).
  const bool values_transposed = (width == 16) == (variant != GgmlVariant::kAvx2) &&
                                 register_paths.load(std::memory_order_relaxed);
  out->width = width;
  out->positions = positions;
  const int64_t blocks = (positions + width - 1) / width;
  out->keys_t.assign(static_cast<size_t>(blocks * head_dim * width), 0.0f);
  if (values_transposed) {
    out->values.clear();
    out->values_t.assign(static_cast<size_t>(blocks * head_dim * width), 0.0f);
  } else {
    out->values.resize(static_cast<size_t>(positions * head_dim));
    out->values_t.clear();
  }
  // [blocks][head_dim][width]: element d of position j at block j / width,
  // row d, lane j % width.
  const auto transpose_into = [&](const float* from, int64_t j, float* to) {
    float* block = to + (j / width) * head_dim * width + j % width;
    for (int64_t d = 0; d < head_dim; ++d) block[d * width] = from[d];
  };
  std::vector<float> widened(static_cast<size_t>(head_dim));
  for (int64_t j = 0; j < positions; ++j) {
    widen(keys, j, widened.data());
    transpose_into(widened.data(), j, out->keys_t.data());
    if (values_transposed) {
      widen(values, j, widened.data());
      transpose_into(widened.data(), j, out->values_t.data());
    } else {
      widen(values, j, out->values.data() + j * head_dim);
    }
  }
}

void GgmlAttendPromptRows(const float* queries, int64_t query_stride, int count,
                          const int64_t* first, const int64_t* last, const GgmlPreparedKv& kv,
                          int64_t head_dim, float scale, GgmlVariant variant, float* scratch,
                          int64_t scratch_stride, float* out, int64_t out_stride) {
#ifdef LLORCH_GGML_OPS_F16C
  const bool lanes16 = variant != GgmlVariant::kAvx2;
  const float* keys_t = kv.keys_t.data();
  std::vector<float> max_scores(count);
  if (kv.width == 16) {
    prepared_scores_avx512::Scores(lanes16 ? 16 : 8, keys_t, queries, query_stride, count, first,
                                   last, head_dim, scale, scratch, scratch_stride,
                                   max_scores.data());
  } else if (lanes16) {
    prepared_scores::Scores<Keys8, 16>(keys_t, queries, query_stride, count, first, last,
                                       head_dim, scale, scratch, scratch_stride,
                                       max_scores.data());
  } else if (register_paths.load(std::memory_order_relaxed) && head_dim == 64) {
    Scores8<2>(keys_t, queries, query_stride, count, first, last, head_dim, scale, scratch,
               scratch_stride, max_scores.data());
  } else if (register_paths.load(std::memory_order_relaxed) && head_dim == 128) {
    Scores8<4>(keys_t, queries, query_stride, count, first, last, head_dim, scale, scratch,
               scratch_stride, max_scores.data());
  } else {
    prepared_scores::Scores<Keys8, 8>(keys_t, queries, query_stride, count, first, last,
                                      head_dim, scale, scratch, scratch_stride,
                                      max_scores.data());
  }
  if (!kv.values_t.empty() && kv.width == 8) {
    // Prepared for the AVX2 order's register loops (GgmlPrepareKv).
    if (lanes16) std::abort();
    for (int r = 0; r < count; ++r) {
      Softmax<GgmlVariant::kAvx2>(first[r], last[r], max_scores[r], scratch + r * scratch_stride);
    }
    thread_local std::vector<float> lane_sums;  // [count][head_dim][8]
    lane_sums.resize(static_cast<size_t>(count * head_dim * 8));
    PromptValuesTransposed8(kv.values_t.data(), head_dim, count, first, last, scratch,
                            scratch_stride, lane_sums.data(), out, out_stride);
    return;
  }
  if (!kv.values_t.empty()) {
    // Prepared for the 16-lane register loops (GgmlPrepareKv).
    if (!lanes16 || !CpuHasAvx512F()) std::abort();
    for (int r = 0; r < count; ++r) {
      Softmax<GgmlVariant::kAvx512>(first[r], last[r], max_scores[r], scratch + r * scratch_stride);
    }
    thread_local std::vector<float> lane_sums;  // [count][head_dim][16]
    lane_sums.resize(static_cast<size_t>(count * head_dim * 16));
    PromptValuesTransposed(kv.values_t.data(), head_dim, count, first, last, scratch,
                           scratch_stride, lane_sums.data(), out, out_stride);
    return;
  }
  // Value rows are contiguous: with head_dim a constant the row offsets of
  // the register-blocked sums are immediates (a runtime product spilled).
  const auto weighted = [&](const auto& row) {
    if (lanes16 && register_paths.load(std::memory_order_relaxed) && head_dim % 16 == 0 &&
        CpuHasAvx512F()) {
      // WeightedValues' steps with the rows' value sums taken together.
      thread_local std::vector<float> lane_sums;  // [count][16][head_dim]
      lane_sums.resize(static_cast<size_t>(count * 16 * head_dim));
      for (int r = 0; r < count; ++r) {
        Softmax<GgmlVariant::kAvx512>(first[r], last[r], max_scores[r],
                                      scratch + r * scratch_stride);
      }
      SumValues16Rows<KvElement::kF32>(kv.values.data(), row, head_dim, count, first, last,
                                       scratch, scratch_stride, lane_sums.data());
      float lanes[16];
      for (int r = 0; r < count; ++r) {
        const float* sums = lane_sums.data() + r * 16 * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) {
          for (int l = 0; l < 16; ++l) lanes[l] = sums[l * head_dim + d];
          out[r * out_stride + d] = Order<GgmlVariant::kAvx512>::SumReduce(lanes);
        }
      }
      return;
    }
    if (!lanes16 && register_paths.load(std::memory_order_relaxed) && head_dim % 8 == 0) {
      thread_local std::vector<float> lane_sums;  // [count][8][head_dim]
      lane_sums.resize(static_cast<size_t>(count * 8 * head_dim));
      for (int r = 0; r < count; ++r) {
        Softmax<GgmlVariant::kAvx2>(first[r], last[r], max_scores[r],
                                    scratch + r * scratch_stride);
      }
      SumValues8Rows<KvElement::kF32>(kv.values.data(), row, head_dim, count, first, last,
                                      scratch, scratch_stride, lane_sums.data());
      float lanes[8];
      for (int r = 0; r < count; ++r) {
        const float* sums = lane_sums.data() + r * 8 * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) {
          for (int l = 0; l < 8; ++l) lanes[l] = sums[l * head_dim + d];
          out[r * out_stride + d] = Order<GgmlVariant::kAvx2>::SumReduce(lanes);
        }
      }
      return;
    }
    for (int r = 0; r < count; ++r) {
      float* row_scratch = scratch + r * scratch_stride;
      float* row_out = out + r * out_stride;
      if (lanes16) {
        WeightedValues<GgmlVariant::kAvx512, KvElement::kF32>(
            kv.values.data(), row, head_dim, first[r], last[r], max_scores[r], false,
            row_scratch, row_out);
      } else {
        WeightedValues<GgmlVariant::kAvx2, KvElement::kF32>(kv.values.data(), row, head_dim,
                                                            first[r], last[r], max_scores[r],
                                                            false, row_scratch, row_out);
      }
    }
  };
  if (head_dim == 64) {
    weighted([](int64_t j) { return j * 64; });
  } else if (head_dim == 128) {
    weighted([](int64_t j) { return j * 128; });
  } else {
    weighted([head_dim](int64_t j) { return j * head_dim; });
  }
#else
  (void)queries, (void)query_stride, (void)count, (void)first, (void)last, (void)kv,
      (void)head_dim, (void)scale, (void)variant, (void)scratch, (void)scratch_stride, (void)out,
      (void)out_stride;
  std::abort();
#endif
}

namespace ggml_ops_internal {
void UseRegisterPaths(bool use) { register_paths.store(use); }
}  // namespace ggml_ops_internal

}  // namespace llorch
