#include "worker/model/ggml_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace llorch {
namespace {

constexpr int kLanes = 16;  // floats in one AVX-512 register

// 2^e as a float, for -126 <= e <= 127.
float PowerOfTwo(int e) {
  const uint32_t bits = static_cast<uint32_t>(e + 127) << 23;
  float power;
  std::memcpy(&power, &bits, sizeof(power));
  return power;
}

#if defined(__AVX2__) && defined(__FMA__)
// GgmlExpf on 8 floats: the same IEEE operations lane by lane, so the same bits.
__m256 GgmlExpf8(__m256 x) {
  const __m256 shifter = _mm256_set1_ps(0x1.8p23f);
  const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), shifter);
  const __m256 n = _mm256_sub_ps(z, shifter);
  const __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f),
                                    _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
  const __m256 u = _mm256_mul_ps(b, b);
  const __m256 j = _mm256_fmadd_ps(
      _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b,
                                      _mm256_set1_ps(0x1.573e2ep-5f)),
                      u,
                      _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b,
                                      _mm256_set1_ps(0x1.fffdb6p-2f))),
      u, _mm256_fmadd_ps(_mm256_set1_ps(0x1.ffffecp-1f), b, _mm256_set1_ps(1.0f)));
  // scalef(j, n) as (j * 2^(n - k)) * 2^k, k = n / 2 (see GgmlExpf).
  const __m256i exponent = _mm256_cvtps_epi32(n);
  const __m256i half = _mm256_srai_epi32(exponent, 1);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 first = _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(exponent, half), bias), 23));
  const __m256 second = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, bias), 23));
  const __m256 result = _mm256_mul_ps(_mm256_mul_ps(j, first), second);
  const __m256 out_of_range = _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), n),
                                            _mm256_set1_ps(192.0f), _CMP_GT_OQ);
  const __m256 limit = _mm256_blendv_ps(_mm256_set1_ps(std::numeric_limits<float>::infinity()),
                                        _mm256_setzero_ps(),
                                        _mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ));
  return _mm256_blendv_ps(result, limit, out_of_range);
}
#endif

// _mm512_reduce_add_ps as GCC expands it: halves added pairwise.
float ReduceAdd16(const float* lanes) {
  float quarter[8], eighth[4];
  for (int i = 0; i < 8; ++i) quarter[i] = lanes[i] + lanes[i + 8];
  for (int i = 0; i < 4; ++i) eighth[i] = quarter[i] + quarter[i + 4];
  return (eighth[0] + eighth[2]) + (eighth[1] + eighth[3]);
}

// ggml_vec_dot_f32 (AVX-512): four 16-lane accumulators over steps of 64,
// folded (0+2, 1+3, then 0+1) and reduced; the tail added one by one.
float DotF32(const float* x, const float* y, int64_t n) {
  constexpr int kStep = 4 * kLanes;
  const int64_t full = n & ~static_cast<int64_t>(kStep - 1);
  float acc[4][kLanes] = {};
  for (int64_t i = 0; i < full; i += kStep) {
    for (int j = 0; j < 4; ++j) {
      for (int l = 0; l < kLanes; ++l) {
        acc[j][l] = std::fma(x[i + j * kLanes + l], y[i + j * kLanes + l], acc[j][l]);
      }
    }
  }
  for (int l = 0; l < kLanes; ++l) {
    acc[0][l] += acc[2][l];
    acc[1][l] += acc[3][l];
  }
  for (int l = 0; l < kLanes; ++l) acc[0][l] += acc[1][l];
  float sum = ReduceAdd16(acc[0]);
  for (int64_t i = full; i < n; ++i) sum += x[i] * y[i];
  return sum;
}

}  // namespace

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

float GgmlExpf(float x) {
  // 2^n * p(b), x = n ln2 + b, with ggml's constants and operation order.
  const float shifter = 0x1.8p23f;
  const float z = std::fma(x, 0x1.715476p+0f, shifter);
  const float n = z - shifter;
  const float b = std::fma(-n, 0x1.7f7d1cp-20f, std::fma(-n, 0x1.62e4p-1f, x));
  if (std::fabs(n) > 192.0f) return n <= 0.0f ? 0.0f : std::numeric_limits<float>::infinity();
  const float u = b * b;
  const float j = std::fma(std::fma(std::fma(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u,
                                    std::fma(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
                           u, std::fma(0x1.ffffecp-1f, b, 1.0f));
  // _mm512_scalef_ps: j * 2^n rounded once. As (j * 2^(n - k)) * 2^k with
  // k = n / 2: both powers are normal floats for |n| <= 192, the first
  // product is exact (j is in [0.7, 1.5]) and the second rounds once.
  const int exponent = static_cast<int>(n);
  const int half = exponent >> 1;
  return (j * PowerOfTwo(exponent - half)) * PowerOfTwo(half);
}

void GgmlSwiglu(const float* gate, const float* up, int64_t n, float* out) {
  const int64_t full = n & ~static_cast<int64_t>(kLanes - 1);
  int64_t i = 0;
#if defined(__AVX2__) && defined(__FMA__)
  for (; i < full; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 silu = _mm256_div_ps(
        g, _mm256_add_ps(_mm256_set1_ps(1.0f), GgmlExpf8(_mm256_sub_ps(_mm256_setzero_ps(), g))));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
  }
#endif
  for (; i < full; ++i) {
    const float g = gate[i];
    out[i] = (g / (1.0f + GgmlExpf(0.0f - g))) * up[i];
  }
  for (int64_t i = full; i < n; ++i) {  // ggml's scalar tail uses expf
    const float g = gate[i];
    out[i] = (g / (1.0f + std::exp(-g))) * up[i];
  }
}

void GgmlAttendRow(const float* query, const float* keys, const float* values, int64_t head_dim,
                   int64_t first, int64_t last, float scale, bool one_token_order,
                   float* scratch, float* out) {
  // Scores of the visible keys; the rest count as -inf (probability 0).
  float max_score = -std::numeric_limits<float>::infinity();
  for (int64_t j = first; j <= last; ++j) {
    scratch[j] = DotF32(keys + j * head_dim, query, head_dim) * scale;
    max_score = std::max(max_score, scratch[j]);
  }
  // Softmax: exp per key, each 16-key chunk summed as one register, in double.
  double sum = 0.0;
  const int64_t chunk_begin = first / kLanes * kLanes;
  for (int64_t c = chunk_begin; c <= last; c += kLanes) {
#if defined(__AVX2__) && defined(__FMA__)
    if (c >= first && c + kLanes - 1 <= last) {  // a whole chunk visible
      const __m256 max = _mm256_set1_ps(max_score);
      for (int h = 0; h < kLanes; h += 8) {
        _mm256_storeu_ps(scratch + c + h,
                         GgmlExpf8(_mm256_sub_ps(_mm256_loadu_ps(scratch + c + h), max)));
      }
      sum += static_cast<double>(ReduceAdd16(scratch + c));
      continue;
    }
#endif
    float lanes[kLanes] = {};
    for (int l = 0; l < kLanes; ++l) {
      const int64_t j = c + l;
      if (j < first || j > last) continue;
      scratch[j] = GgmlExpf(scratch[j] - max_score);
      lanes[l] = scratch[j];
    }
    sum += static_cast<double>(ReduceAdd16(lanes));
  }
  const float inv_sum = static_cast<float>(1.0 / sum);
  for (int64_t j = first; j <= last; ++j) scratch[j] *= inv_sum;
  // Output: per dimension, lane l accumulates the positions p = l (mod 16):
  // one chain (tinyBLAS), or four chains by (p / 16) mod 4 folded as
  // ggml_vec_dot_f32 folds them (one-token step).
  const int chains = one_token_order ? 4 : 1;
  const int64_t chain_size = kLanes * head_dim;
  std::vector<float> acc(chains * chain_size, 0.0f);  // [chains, 16, head_dim]
  for (int64_t j = first; j <= last; ++j) {
    const float p = scratch[j];
    const float* v = values + j * head_dim;  // [head_dim]
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
    out[d] = ReduceAdd16(lanes);
  }
}

}  // namespace llorch
