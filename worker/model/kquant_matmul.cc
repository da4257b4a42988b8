#include "worker/model/kquant_matmul.h"

#include <c10/util/Half.h>

#include <cmath>
#include <cstring>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "absl/strings/str_cat.h"

namespace llorch {
namespace {

float HalfAt(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return static_cast<float>(c10::Half(bits, c10::Half::from_bits()));
}

// The 6-bit scale and min of 32-element group j of a Q4_K/Q5_K block.
void GroupScaleMin(const uint8_t* packed, int j, int16_t* scale, int16_t* min) {
  if (j < 4) {
    *scale = packed[j] & 63;
    *min = packed[j + 4] & 63;
  } else {
    *scale = static_cast<int16_t>((packed[j + 4] & 0x0f) | ((packed[j - 4] >> 6) << 4));
    *min = static_cast<int16_t>((packed[j + 4] >> 4) | ((packed[j] >> 6) << 4));
  }
}

// Q4_K: f16 d, f16 dmin, 12 bytes of scales/mins, 128 bytes of nibbles; each
// 64 elements take the low then the high nibbles of 32 bytes.
void UnpackQ4K(const uint8_t* src, KQuantBlock* b) {
  b->d = HalfAt(src);
  b->dmin = HalfAt(src + 2);
  const uint8_t* q = src + 16;
  for (int g = 0; g < 8; ++g) {
    int16_t scale, min;
    GroupScaleMin(src + 4, g, &scale, &min);
    b->scale[2 * g] = b->scale[2 * g + 1] = scale;
    b->min[2 * g] = b->min[2 * g + 1] = min;
    const uint8_t* bytes = q + (g / 2) * 32;
    for (int l = 0; l < 32; ++l) {
      b->q[g * 32 + l] = static_cast<uint8_t>(g % 2 == 0 ? bytes[l] & 0x0f : bytes[l] >> 4);
    }
  }
}

// Q5_K: as Q4_K plus 32 bytes of fifth bits (bit g of byte l for element l
// of group g), before the nibbles.
void UnpackQ5K(const uint8_t* src, KQuantBlock* b) {
  b->d = HalfAt(src);
  b->dmin = HalfAt(src + 2);
  const uint8_t* qh = src + 16;
  const uint8_t* ql = src + 48;
  for (int g = 0; g < 8; ++g) {
    int16_t scale, min;
    GroupScaleMin(src + 4, g, &scale, &min);
    b->scale[2 * g] = b->scale[2 * g + 1] = scale;
    b->min[2 * g] = b->min[2 * g + 1] = min;
    const uint8_t* bytes = ql + (g / 2) * 32;
    for (int l = 0; l < 32; ++l) {
      const int low = g % 2 == 0 ? bytes[l] & 0x0f : bytes[l] >> 4;
      b->q[g * 32 + l] = static_cast<uint8_t>(low + (((qh[l] >> g) & 1) << 4));
    }
  }
}

// Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 int8 scales,
// f16 d. Each 128 elements: 4 runs of 32 from the low/high nibbles of 64
// bytes and successive bit pairs of 32 bytes.
void UnpackQ6K(const uint8_t* src, KQuantBlock* b) {
  const uint8_t* ql = src;
  const uint8_t* qh = src + 128;
  const int8_t* scales = reinterpret_cast<const int8_t*>(src + 192);
  b->d = HalfAt(src + 208);
  b->dmin = 0;
  b->offset = 32;
  for (int g = 0; g < 16; ++g) b->scale[g] = scales[g], b->min[g] = 0;
  for (int half = 0; half < 2; ++half) {
    const uint8_t* low = ql + half * 64;
    const uint8_t* high = qh + half * 32;
    uint8_t* q = b->q + half * 128;
    for (int l = 0; l < 32; ++l) {
      q[l] = static_cast<uint8_t>((low[l] & 0x0f) | (((high[l] >> 0) & 3) << 4));
      q[l + 32] = static_cast<uint8_t>((low[l + 32] & 0x0f) | (((high[l] >> 2) & 3) << 4));
      q[l + 64] = static_cast<uint8_t>((low[l] >> 4) | (((high[l] >> 4) & 3) << 4));
      q[l + 96] = static_cast<uint8_t>((low[l + 32] >> 4) | (((high[l] >> 6) & 3) << 4));
    }
  }
}

// One activation block rounded as ggml's quantize_row_q8_K: the signed value
// of largest magnitude (the first on ties) sets iscale = -127 / max.
struct Q8KBlock {
  float d = 0;
  int8_t q[kKBlock];
  int16_t sum16[16];  // sums of q per 16 elements (|sum| <= 16 * 128)
};

void QuantizeRowQ8K(const float* x, int64_t num_blocks, Q8KBlock* out) {
  for (int64_t b = 0; b < num_blocks; ++b, x += kKBlock) {
    Q8KBlock& block = out[b];
    float amax = 0, max = 0;
    for (int64_t j = 0; j < kKBlock; ++j) {
      const float a = std::fabs(x[j]);
      if (a > amax) amax = a, max = x[j];
    }
    if (amax == 0) {
      block.d = 0;
      std::memset(block.q, 0, sizeof(block.q));
      std::memset(block.sum16, 0, sizeof(block.sum16));
      continue;
    }
    const float iscale = -127.0f / max;
    for (int64_t j = 0; j < kKBlock; ++j) {
      const int v = static_cast<int>(std::nearbyint(iscale * x[j]));
      block.q[j] = static_cast<int8_t>(v > 127 ? 127 : v);
    }
    for (int g = 0; g < 16; ++g) {
      int32_t sum = 0;
      for (int l = 0; l < 16; ++l) sum += block.q[g * 16 + l];
      block.sum16[g] = static_cast<int16_t>(sum);
    }
    block.d = 1.0f / iscale;
  }
}

// Σ_g scale[g] * Σ_{l in g} q[l] * a[l] over one block, with q unsigned
// (the offset is applied by the caller): an exact integer.
int32_t ScaledProducts(const KQuantBlock& w, const Q8KBlock& a) {
#if defined(__AVX2__)
  __m256i acc = _mm256_setzero_si256();
  for (int j = 0; j < 8; ++j) {  // 32 elements: groups 2j and 2j+1
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.q + 32 * j));
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q + 32 * j));
    // u8 x s8 pairs -> 16 x int16 (no saturation: 2 * 63 * 128 < 32768).
    const __m256i pairs = _mm256_maddubs_epi16(q, x);
    const __m256i scales = _mm256_set_m128i(_mm_set1_epi16(w.scale[2 * j + 1]),
                                            _mm_set1_epi16(w.scale[2 * j]));
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, scales));
  }
  __m128i sum = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
  sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, _MM_SHUFFLE(1, 0, 3, 2)));
  sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(sum);
#else
  int32_t products = 0;
  for (int g = 0; g < 16; ++g) {
    int32_t group = 0;
    for (int l = 0; l < 16; ++l) group += w.q[g * 16 + l] * a.q[g * 16 + l];
    products += w.scale[g] * group;
  }
  return products;
#endif
}

// Σ_g x[g] * y[g] over 16 int16 pairs: an exact integer.
int32_t GroupDot(const int16_t* x, const int16_t* y) {
#if defined(__AVX2__)
  const __m256i products =
      _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)),
                        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y)));
  __m128i sum = _mm_add_epi32(_mm256_castsi256_si128(products),
                              _mm256_extracti128_si256(products, 1));
  sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, _MM_SHUFFLE(1, 0, 3, 2)));
  sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(sum);
#else
  int32_t sum = 0;
  for (int g = 0; g < 16; ++g) sum += x[g] * y[g];
  return sum;
#endif
}

float DotRow(const KQuantBlock* w, const Q8KBlock* a, int64_t num_blocks) {
  float sum = 0;
  for (int64_t b = 0; b < num_blocks; ++b) {
    int32_t products = ScaledProducts(w[b], a[b]);
    const int32_t mins = GroupDot(w[b].min, a[b].sum16);
    const int32_t offsets = w[b].offset != 0 ? GroupDot(w[b].scale, a[b].sum16) : 0;
    products -= w[b].offset * offsets;  // (q - offset) * a = q * a - offset * a
    sum += w[b].d * a[b].d * static_cast<float>(products) -
           w[b].dmin * a[b].d * static_cast<float>(mins);
  }
  return sum;
}

}  // namespace

bool KQuantSupports(GgmlType type) {
  return type == GgmlType::kQ4_K || type == GgmlType::kQ5_K || type == GgmlType::kQ6_K;
}

absl::Status AppendKQuantRows(GgmlType type, const uint8_t* data, int64_t rows, int64_t in,
                              KQuantMatrix* matrix) {
  if (!KQuantSupports(type)) {
    return absl::InvalidArgumentError(absl::StrCat("not a supported K-quant: ", GgmlTypeName(type)));
  }
  if (in % kKBlock != 0 || (matrix->rows > 0 && matrix->in != in)) {
    return absl::InvalidArgumentError(absl::StrCat("K-quant rows of ", in, " elements"));
  }
  const int64_t blocks_per_row = in / kKBlock;
  const size_t block_bytes = GgmlBlockBytes(type);
  void (*unpack)(const uint8_t*, KQuantBlock*) =
      type == GgmlType::kQ4_K ? UnpackQ4K : type == GgmlType::kQ5_K ? UnpackQ5K : UnpackQ6K;
  const size_t first = matrix->blocks.size();
  matrix->blocks.resize(first + rows * blocks_per_row);
  for (int64_t i = 0; i < rows * blocks_per_row; ++i) {
    unpack(data + i * block_bytes, &matrix->blocks[first + i]);
  }
  matrix->in = in;
  matrix->rows += rows;
  return absl::OkStatus();
}

void KQuantMatmul(const KQuantMatrix& weight, const float* x, int64_t n, float* out,
                  const ParallelFor& parallel_for) {
  const int64_t num_blocks = weight.in / kKBlock;
  std::vector<Q8KBlock> activations(n * num_blocks);
  for (int64_t t = 0; t < n; ++t) {
    QuantizeRowQ8K(x + t * weight.in, num_blocks, activations.data() + t * num_blocks);
  }
  parallel_for(0, weight.rows, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const KQuantBlock* row = weight.blocks.data() + r * num_blocks;
      for (int64_t t = 0; t < n; ++t) {
        out[t * weight.rows + r] = DotRow(row, activations.data() + t * num_blocks, num_blocks);
      }
    }
  });
}

}  // namespace llorch
