#include "worker/model/prepared_scores.h"

#include <algorithm>

#include "worker/model/cpu_isa.h"

#if defined(__x86_64__) && defined(__AVX512F__)
#include <immintrin.h>
#define LLORCH_PREPARED_SCORES_AVX512 1
#endif

// Compiled with -mavx512f and -ffp-contract=off.

namespace llorch {
namespace prepared_scores_avx512 {

#ifdef LLORCH_PREPARED_SCORES_AVX512
namespace {

struct Keys16 {
  using Vec = __m512;
  static constexpr int kWidth = 16;
  static Vec Zero() { return _mm512_setzero_ps(); }
  static Vec Load(const float* p) { return _mm512_loadu_ps(p); }
  static Vec Set1(float x) { return _mm512_set1_ps(x); }
  static Vec Add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
  static Vec Mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
  static Vec Fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  static void Store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
};

// KeyDot's 16-lane order (kLanes 16) for one query row over kBlocks blocks
// of 16 keys, each broadcast of the query loaded once for all of them: lane
// l of each block's keys: four chains (dimensions (4 i + j) * 16 + l, fmas
// from zero over the kSteps steps i), folded (0 + 2) + (1 + 3), into f[k].
template <int kSteps, int kBlocks>
inline void FoldedLanes(const float* const* blocks, const float* query, int l, __m512* f) {
  // Not before the previous lanes' sums (f holds them): compiled in the
  // order written, the tree keeps a few registers a block; GCC otherwise
  // computes all 64 products first and spills most of them. (The order is
  // the compiler's only: at run time nothing waits.)
  asm("" : "+r"(query) : "v"(f[0]));
  __m512 acc[kBlocks][4];
  for (int k = 0; k < kBlocks; ++k) {
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) acc[k][j] = _mm512_setzero_ps();
  }
#pragma GCC unroll 4
  for (int i = 0; i < kSteps; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const int d = (4 * i + j) * 16 + l;
      const __m512 q = _mm512_set1_ps(query[d]);
      for (int k = 0; k < kBlocks; ++k) {
        acc[k][j] = _mm512_fmadd_ps(_mm512_loadu_ps(blocks[k] + d * 16), q, acc[k][j]);
      }
    }
  }
  for (int k = 0; k < kBlocks; ++k) {
    f[k] = _mm512_add_ps(_mm512_add_ps(acc[k][0], acc[k][2]), _mm512_add_ps(acc[k][1], acc[k][3]));
  }
}

// ReduceAdd16's e_i = (F_i + F_(i + 8)) + (F_(i + 4) + F_(i + 12)) for
// kBlocks blocks (e[0] on entry: the sums computed before, for
// FoldedLanes' order).
template <int kSteps, int kBlocks>
inline void Eighth(const float* const* blocks, const float* query, int i, __m512* e) {
  __m512 a[kBlocks], b[kBlocks], f[kBlocks];
  a[0] = e[0];
  FoldedLanes<kSteps, kBlocks>(blocks, query, i, a);
  f[0] = a[0];
  FoldedLanes<kSteps, kBlocks>(blocks, query, i + 8, f);
  for (int k = 0; k < kBlocks; ++k) a[k] = _mm512_add_ps(a[k], f[k]);
  b[0] = a[0];
  FoldedLanes<kSteps, kBlocks>(blocks, query, i + 4, b);
  f[0] = b[0];
  FoldedLanes<kSteps, kBlocks>(blocks, query, i + 12, f);
  for (int k = 0; k < kBlocks; ++k) e[k] = _mm512_add_ps(a[k], _mm512_add_ps(b[k], f[k]));
}

// KeyDot's sums (the 16-lane order) of one query row with kBlocks blocks of
// 16 keys: the same additions as KeySums<Keys16, 16>, evaluated depth
// first so that each block's partial sums stay in registers. sums[k]: block
// k's 16 sums.
template <int kSteps, int kBlocks>
inline void BlockSums(const float* const* blocks, const float* query, __m512* sums) {
  __m512 x[kBlocks], y[kBlocks], e[kBlocks];
  x[0] = _mm512_setzero_ps();
  Eighth<kSteps, kBlocks>(blocks, query, 0, x);
  e[0] = x[0];
  Eighth<kSteps, kBlocks>(blocks, query, 2, e);
  for (int k = 0; k < kBlocks; ++k) x[k] = _mm512_add_ps(x[k], e[k]);  // e0 + e2
  y[0] = x[0];
  Eighth<kSteps, kBlocks>(blocks, query, 1, y);
  e[0] = y[0];
  Eighth<kSteps, kBlocks>(blocks, query, 3, e);
  for (int k = 0; k < kBlocks; ++k) {
    sums[k] = _mm512_add_ps(x[k], _mm512_add_ps(y[k], e[k]));  // (e0 + e2) + (e1 + e3)
  }
}

// Keys lo..hi's lanes of block b (16 keys from 16 b).
inline __mmask16 BlockMask(int64_t b, int64_t lo, int64_t hi) {
  const int64_t from = std::max<int64_t>(lo - 16 * b, 0), to = std::min<int64_t>(hi - 16 * b, 15);
  if (from > to) return 0;
  return static_cast<__mmask16>(((1u << (to + 1)) - 1) & ~((1u << from) - 1));
}

// prepared_scores::Scores with kLanes 16 over blocks of 16 keys (each block
// stays in L1 while every row takes it; BlockSums over two blocks per
// broadcast, or over two rows per key load, measured slower), each row's
// scores stored and its maximum kept 16 lanes at a time (a maximum is the
// same in any order; the lanes' maxima skip a NaN score as the scalar
// std::max chain does). count <= kMaxRows.
constexpr int kMaxRows = 16;
template <int kSteps>
void Scores16(const float* keys_t, const float* queries, int64_t query_stride, int count,
              const int64_t* first, const int64_t* last, int64_t head_dim, float scale,
              float* scratch, int64_t scratch_stride, float* max_scores) {
  int64_t lo = first[0], hi = last[0];
  for (int r = 0; r < count; ++r) lo = std::min(lo, first[r]), hi = std::max(hi, last[r]);
  __m512 maxima[kMaxRows];
  for (int r = 0; r < count; ++r) maxima[r] = _mm512_set1_ps(-__builtin_inff());
  const __m512 scale_vec = _mm512_set1_ps(scale);
  for (int64_t b = lo / 16; 16 * b <= hi; ++b) {
    const float* block = keys_t + b * head_dim * 16;
    for (int r = 0; r < count; ++r) {
      const __mmask16 mask = BlockMask(b, first[r], last[r]);
      if (mask == 0) continue;
      __m512 sum;
      BlockSums<kSteps, 1>(&block, queries + r * query_stride, &sum);
      const __m512 scores = _mm512_mul_ps(sum, scale_vec);
      _mm512_mask_storeu_ps(scratch + r * scratch_stride + 16 * b, mask, scores);
      maxima[r] = _mm512_mask_max_ps(maxima[r], mask, scores, maxima[r]);
    }
  }
  for (int r = 0; r < count; ++r) max_scores[r] = _mm512_reduce_max_ps(maxima[r]);
}

}  // namespace

bool Supported() {
  static const bool supported =
      CpuIsaAllowed(CpuIsa::kAvx512) && __builtin_cpu_supports("avx512f");
  return supported;
}

void Scores(int lanes, const float* keys_t, const float* queries, int64_t query_stride, int count,
            const int64_t* first, const int64_t* last, int64_t head_dim, float scale,
            float* scratch, int64_t scratch_stride, float* max_scores) {
  // Rows beyond kMaxRows (Scores16's maxima) or head sizes past 256 take
  // the general loop.
  if (lanes == 16 && count <= kMaxRows) {
    switch (head_dim) {
      case 64:
        return Scores16<1>(keys_t, queries, query_stride, count, first, last, head_dim, scale,
                           scratch, scratch_stride, max_scores);
      case 128:
        return Scores16<2>(keys_t, queries, query_stride, count, first, last, head_dim, scale,
                           scratch, scratch_stride, max_scores);
      case 256:
        return Scores16<4>(keys_t, queries, query_stride, count, first, last, head_dim, scale,
                           scratch, scratch_stride, max_scores);
      default:
        break;
    }
  }
  if (lanes == 16) {
    prepared_scores::Scores<Keys16, 16>(keys_t, queries, query_stride, count, first, last,
                                        head_dim, scale, scratch, scratch_stride, max_scores);
  } else {
    prepared_scores::Scores<Keys16, 8>(keys_t, queries, query_stride, count, first, last,
                                       head_dim, scale, scratch, scratch_stride, max_scores);
  }
}

#else  // !LLORCH_PREPARED_SCORES_AVX512

bool Supported() { return false; }
void Scores(int, const float*, const float*, int64_t, int, const int64_t*, const int64_t*,
            int64_t, float, float*, int64_t, float*) {}

#endif

}  // namespace prepared_scores_avx512
}  // namespace llorch
